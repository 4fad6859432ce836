"""Rich rendering of a [`Comparison`][unlearn_lens.diagnostics.compare.Comparison]: one row per
layer, and the token metrics of both models."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from unlearn_lens.diagnostics.compare import Comparison
from unlearn_lens.metrics.token import TokenMetrics
from unlearn_lens.numbers import number

CKA_CHANGED = 0.99
"""Debiased CKA below this is highlighted: identical geometry gives 1 up to rounding, and
shallow unlearning stays above it (0.996 measured on SmolLM2 after GA)."""


def layer_table(comparison: Comparison) -> Table:
    """One row per residual-stream position: CKA (debiased, biased in brackets), PC1 similarity,
    ΔPC1, PCA distance and the log10 Fisher mean ratio of the block that wrote the stream."""
    table = Table(
        title=f"{comparison.reference} → {comparison.updated}: {comparison.n_items} items, "
        f"{comparison.pooling} pooling over {comparison.tokens} tokens ({comparison.n_samples} samples)",
        title_justify="left",
    )
    table.add_column("layer", justify="right")
    table.add_column("CKA debiased (biased)", justify="right")
    table.add_column("PC1 sim.", justify="right")
    table.add_column("ΔPC1", justify="right")
    table.add_column("PCA dist.", justify="right")
    table.add_column("Fisher log10 ratio", justify="right")
    fisher = comparison.fisher_by_layer()
    for layer in comparison.layers:
        name = "0 embed" if layer.stream == 0 else str(layer.stream)
        cka = f"{number(layer.cka_debiased)} ({number(layer.cka_biased)})"
        if layer.cka_debiased < CKA_CHANGED:
            cka = f"[bold yellow]{cka}[/]"
        block = fisher.get(layer.stream - 1)
        table.add_row(
            name,
            cka,
            number(layer.pc1_similarity),
            f"{layer.delta_pc1:.3g}",
            number(layer.pca_distance),
            "–" if block is None else f"{block.log10_mean_ratio:+.3f}",
        )
    table.caption = (
        "layer j = residual stream after block j−1; its Fisher ratio is that block's "
        f"(< 0: lost sensitivity). Mean PCA distance {number(comparison.mean_pca_distance)} "
        "(reference PC1 standard deviations)."
    )
    return table


def metrics_table(comparison: Comparison) -> Table:
    """Token accuracy, NLL, perplexity and exact match of both models on the items."""
    table = Table(title="Token metrics on the items", title_justify="left")
    table.add_column("model")
    for name in ("accuracy", "NLL (nats/token)", "perplexity", "exact match"):
        table.add_column(name, justify="right")

    def row(label: str, metrics: TokenMetrics) -> None:
        table.add_row(
            label,
            number(metrics.accuracy),
            number(metrics.nll),
            f"{metrics.perplexity:.4g}",
            number(metrics.exact_match),
        )

    row(comparison.reference, comparison.reference_metrics)
    row(comparison.updated, comparison.updated_metrics)
    return table


def print_comparison(console: Console, comparison: Comparison) -> None:
    """Print the per-layer table and the token-metrics table."""
    console.print(layer_table(comparison))
    console.print(metrics_table(comparison))
