"""PNG figures of one audited method, drawn from its `MethodResults` only."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.ticker import MaxNLocator

from unlearn_lens.localize.reversion import Metric
from unlearn_lens.report.figures import (
    LAYER_AXIS,
    fisher_histogram_blocks,
    new_figure,
    plot_fisher_histograms,
    plot_pca_shift,
    save_figure,
)
from unlearn_lens.study.intervals import accuracy_band
from unlearn_lens.study.results import MethodResults

CURVE_STYLES = {
    "unlearned/forget": ("tab:red", "-"),
    "unlearned/retain": ("tab:red", "--"),
    "relearned/forget": ("tab:blue", "-"),
    "relearned/retain": ("tab:blue", "--"),
}
"""Colour by model (red unlearned, blue relearned), line style by data (solid forget, dashed retain)."""


def _plot_layer_curves(
    result: MethodResults,
    attribute: str,
    ylabel: str,
    title: str,
    path: Path,
    reference_line: float | None = None,
    ylim: tuple[float, float] | None = None,
) -> Path:
    """One per-layer diagnostic against the original, for both updated models on both data sets."""
    figure, (ax,) = new_figure(7.0, 4.2)
    for name, comparison in result.comparisons.items():
        colour, style = CURVE_STYLES[name]
        ax.plot(
            [layer.stream for layer in comparison.layers],
            [getattr(layer, attribute) for layer in comparison.layers],
            style,
            color=colour,
            marker="o",
            markersize=2.5,
            label=name,
        )
    if reference_line is not None:
        ax.axhline(reference_line, color="black", linewidth=0.5)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_xlabel(LAYER_AXIS)
    ax.set_ylabel(ylabel)
    ax.set_title(f"{result.method}: {title}")
    ax.legend(fontsize="small")
    return save_figure(figure, path)


def plot_cka_curves(result: MethodResults, path: Path) -> Path:
    """Debiased CKA against the original by layer, for both updated models on both data sets."""
    return _plot_layer_curves(
        result,
        "cka_debiased",
        "debiased linear CKA vs original",
        "representation similarity to the original model",
        path,
        reference_line=1.0,
    )


def plot_pc1_curves(result: MethodResults, path: Path) -> Path:
    """PC1 similarity to the original by layer, for both updated models on both data sets."""
    return _plot_layer_curves(
        result,
        "pc1_similarity",
        "|cos| of first principal components",
        "PC1 similarity to the original model",
        path,
        ylim=(-0.02, 1.05),
    )


def plot_delta_share(result: MethodResults, path: Path) -> Path:
    """Each block's share of the whole weight update, with its relative size on a second axis."""
    assert result.deltas is not None, "plotted for a localised method"
    layers = result.deltas.layers
    figure, (ax,) = new_figure(7.0, 4.0)
    ax.bar(
        [d.layer for d in layers],
        [d.share for d in layers],
        color="tab:purple",
        label="share of Σ‖ΔW‖²",
    )
    ax.set_xlabel("block")
    ax.set_ylabel("share of the whole update")
    twin = ax.twinx()
    twin.plot(
        [d.layer for d in layers],
        [d.relative for d in layers],
        "k.-",
        markersize=3,
        label="‖ΔW‖ / ‖W‖",
    )
    twin.set_ylabel("relative weight change ‖ΔW‖/‖W‖")
    ax.set_title(f"{result.method}: where the unlearning update went")
    return save_figure(figure, path)


def plot_reversion(result: MethodResults, path: Path) -> Path:
    """Restoration effect of reverting one block, and of reverting the output head with the
    last k blocks (k = 0: the head alone)."""
    sweep = result.reversion
    assert sweep is not None, "plotted for the exact sweep"
    figure, (ax_layer, ax_last) = new_figure(10.0, 4.0, columns=2)
    blocks = list(range(sweep.n_layers))
    curves: tuple[tuple[Metric, str], ...] = (("nll", "-"), ("accuracy", "--"))
    for metric, style in curves:
        ax_layer.plot(
            blocks,
            sweep.layer_effects(metric),
            style,
            marker="o",
            markersize=2.5,
            label=f"effect on forget {metric}",
        )
        ax_last.plot(
            range(sweep.n_layers + 1),
            sweep.last_k_effects(metric),
            style,
            marker="o",
            markersize=2.5,
            label=f"effect on forget {metric}",
        )
    for ax in (ax_layer, ax_last):
        ax.axhline(1.0, color="black", linewidth=0.5)
        ax.axhline(0.0, color="black", linewidth=0.5)
        ax.set_ylabel("fraction of forget performance restored")
        ax.legend(fontsize="small")
    ax_last.axhline(
        sweep.restore_fraction, color="tab:green", linestyle=":", label="restore threshold"
    )
    if sweep.forgetting_depth is not None:
        ax_last.axvline(sweep.forgetting_depth, color="tab:green", linewidth=0.8)
    ax_layer.set_xlabel("reverted block")
    ax_layer.set_title("Reverting one block to its original weights")
    ax_last.set_xlabel("k (output head + last k blocks reverted; 0 = head alone)")
    ax_last.set_title(
        f"Reverting the head and the last k blocks (depth = {sweep.forgetting_depth})"
    )
    return save_figure(figure, path)


def plot_head_heatmap(result: MethodResults, path: Path) -> Path:
    """Layer × query-head weight-delta norms, beside the single-head reversion effects."""
    heads = result.heads
    assert heads is not None, "plotted for the exact sweep"
    figure, (ax_delta, ax_revert) = new_figure(10.0, 5.0, columns=2)
    image = ax_delta.imshow(heads.matrix("delta"), aspect="auto", cmap="magma", origin="lower")
    figure.colorbar(image, ax=ax_delta, label="‖ΔW‖ of the head (q, k, v, o)")
    ax_delta.set_xlabel("query head")
    ax_delta.set_ylabel("block")
    ax_delta.set_title("Weight delta per head")
    reversion = np.ma.masked_invalid(heads.matrix("reversion_nll"))
    image = ax_revert.imshow(reversion, aspect="auto", cmap="viridis", origin="lower")
    figure.colorbar(image, ax=ax_revert, label="forget NLL restored by reverting the head")
    ax_revert.set_xlabel("query head")
    ax_revert.set_ylabel("block")
    ax_revert.set_title(
        f"Single-head reversion (blocks {', '.join(map(str, heads.reversion_layers))})"
    )
    return save_figure(figure, path)


def plot_attribution(result: MethodResults, path: Path) -> Path:
    """Attributed share of the forget effect per block (exact reversions of the verified blocks
    beside it), and the attributed head + last-k curve with the exact depth search's points."""
    localized = result.attribution
    assert localized is not None, "plotted for an attributed localisation"
    forget, check, depth = localized.attribution.forget, localized.check, localized.depth
    figure, (ax_block, ax_last) = new_figure(10.0, 4.0, columns=2)
    ax_block.bar(
        range(forget.n_layers), forget.blocks(fraction=True), color="tab:purple", label="attributed"
    )
    ax_block.plot(
        check.blocks,
        check.block_exact,
        "o",
        color="tab:red",
        markersize=4,
        label="exact reversion (verified)",
    )
    ax_block.set_xlabel("block")
    ax_block.set_ylabel("share of the forget NLL effect")
    ax_block.set_title(f"Per block: attribution vs exact (Spearman {check.block_agreement:.2f})")
    ax_last.plot(
        range(forget.n_layers + 1),
        forget.last_k(fraction=True),
        "-",
        color="tab:purple",
        label="attributed",
    )
    measured = sorted(depth.last_k.items())
    ax_last.plot(
        [k for k, _ in measured],
        [e for _, e in measured],
        "o",
        color="tab:red",
        markersize=4,
        label="exact reversion (depth search)",
    )
    ax_last.axhline(
        depth.restore_fraction, color="tab:green", linestyle=":", label="restore threshold"
    )
    if depth.forgetting_depth is not None:
        ax_last.axvline(depth.forgetting_depth, color="tab:green", linewidth=0.8)
    ax_last.set_xlabel("k (output head + last k blocks; 0 = head alone)")
    ax_last.set_ylabel("share of the forget NLL effect")
    ax_last.set_title(f"Head + last k blocks (exact depth = {depth.forgetting_depth})")
    for ax in (ax_block, ax_last):
        ax.axhline(0.0, color="black", linewidth=0.5)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize="small")
    return save_figure(figure, path)


def plot_head_attribution(result: MethodResults, path: Path) -> Path:
    """Layer × query-head effect of reverting each head alone (first order at the unlearned weights
    when measured, integrated-gradient shares otherwise), the verified heads marked, beside the
    weight-delta norm of each head."""
    localized = result.attribution
    assert localized is not None and result.deltas is not None, "plotted when attributed"
    check = localized.check
    table = localized.attribution.single_patches.heads(fraction=True)
    figure, (ax_attr, ax_delta) = new_figure(10.0, 5.0, columns=2)
    finite = np.abs(table)[np.isfinite(table)]  # all NaN when the weights equal the original's
    limit = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    image = ax_attr.imshow(
        table, aspect="auto", cmap="RdBu_r", vmin=-limit, vmax=limit, origin="lower"
    )
    figure.colorbar(image, ax=ax_attr, label="share of the forget NLL effect")
    ax_attr.plot(
        [head for _, head in check.heads],
        [layer for layer, _ in check.heads],
        "s",
        markersize=9,
        markerfacecolor="none",
        markeredgecolor="black",
        label="verified by exact reversion",
    )
    ax_attr.legend(fontsize="small", loc="upper left")
    ax_attr.set_xlabel("query head")
    ax_attr.set_ylabel("block")
    ax_attr.set_title(
        f"Each head reverted alone, {check.head_estimate} ({table.size} heads; verified ρ = "
        f"{check.head_agreement:.2f})",
        fontsize="medium",
    )
    image = ax_delta.imshow(
        result.deltas.query_head_norms(), aspect="auto", cmap="magma", origin="lower"
    )
    figure.colorbar(image, ax=ax_delta, label="‖ΔW‖ of the head (q, k, v, o)")
    ax_delta.set_xlabel("query head")
    ax_delta.set_ylabel("block")
    ax_delta.set_title("Weight delta per head")
    for ax in (ax_attr, ax_delta):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    return save_figure(figure, path)


def plot_training_curves(result: MethodResults, path: Path) -> Path:
    """Unlearning loss and forget / retain accuracy by step, then relearning vs control losses."""
    figure, (ax_unlearn, ax_relearn) = new_figure(10.0, 4.0, columns=2)
    assert result.unlearn is not None, "plotted for a method unlearned here"
    history = result.unlearn.run.history
    evaluated = [(step.step, step.metrics) for step in history if step.metrics]
    for part, colour in (("forget", "tab:red"), ("retain", "tab:green")):
        ax_unlearn.plot(
            [step for step, _ in evaluated],
            [metrics[part].accuracy for _, metrics in evaluated if part in metrics],
            "-o",
            color=colour,
            markersize=3,
            label=f"{part} accuracy",
        )
    ax_unlearn.set_xlabel("unlearning step")
    ax_unlearn.set_ylabel("token accuracy on answers")
    ax_unlearn.set_ylim(-0.02, 1.02)
    loss_axis = ax_unlearn.twinx()
    loss_axis.plot(
        [s.step for s in history],
        [s.loss for s in history],
        color="grey",
        linewidth=0.8,
        label="loss",
    )
    loss_axis.set_ylabel("objective loss")
    ax_unlearn.legend(fontsize="small", loc="center right")
    ax_unlearn.set_title(f"{result.method}: unlearning")
    if result.relearn is not None:
        for run, colour, label in (
            (result.relearn.source_run, "tab:blue", "relearn on source"),
            (result.relearn.control_run, "tab:orange", "same budget on control"),
        ):
            ax_relearn.plot(
                [s.step for s in run.history],
                [s.loss for s in run.history],
                "-o",
                color=colour,
                markersize=3,
                label=label,
            )
        rec = result.relearn.recovery["accuracy"]
        ax_relearn.set_title(
            f"Relearning: forget acc {rec.unlearned:.2f}→{rec.relearned:.2f}, "
            f"control {rec.control_before:.2f}→{rec.control_after:.2f}"
        )
        ax_relearn.legend(fontsize="small")
    ax_relearn.set_xlabel("relearning step")
    ax_relearn.set_ylabel("fine-tuning loss (NLL)")
    return save_figure(figure, path)


SET_COLOURS = {"forget": "tab:red", "retain": "tab:green", "control": "tab:orange"}
"""One colour per item set in the curves: forget red, retain green, novel control orange."""


@dataclass(frozen=True)
class PlaceEffects:
    """The forget effect of each place, from the exact sweep or from the attribution: `blocks[ℓ]`,
    `input_embedding`, `head`, and the head + last-k curve `last_k[k]` (k = 0 … L)."""

    source: str
    blocks: list[float]
    input_embedding: float
    head: float
    last_k: list[float]


def place_effects(result: MethodResults) -> PlaceEffects:
    """Exact reversion effects (on the depth metric) when the sweep ran, attributed shares otherwise."""
    if result.reversion is not None:
        sweep = result.reversion
        metric = sweep.depth_metric
        return PlaceEffects(
            f"reverted alone ({metric})",
            sweep.layer_effects(),
            sweep.place("input_embedding").effect(metric),
            sweep.place("head").effect(metric),
            sweep.last_k_effects(),
        )
    assert result.attribution is not None, "localised by reversion or by attribution"
    forget = result.attribution.attribution.forget
    return PlaceEffects(
        "attributed (nll)",
        forget.blocks(fraction=True),
        forget.place("input_embedding", fraction=True),
        forget.place("head", fraction=True),
        forget.last_k(fraction=True),
    )


def plot_where(result: MethodResults, path: Path) -> Path:
    """Where the forgetting lives, one column per place: the input embedding, each block, the
    output head. Rows: forget effect (depth shaded), share of the update, representational
    change, and the logit-lens answer rank (fixed decoder)."""
    effects, deltas, summary = place_effects(result), result.deltas, result.localization
    assert deltas is not None and summary is not None, "plotted for a localised method"
    n = len(effects.blocks)
    x_embed, x_head, blocks = -1.5, n + 0.5, np.arange(n)
    figure, axes = new_figure(11.0, 9.0, rows=4)
    ax_revert, ax_share, ax_cka, ax_rank = axes
    ax_revert.bar(blocks, effects.blocks, color="tab:blue", label=f"block, {effects.source}")
    ax_revert.bar(
        [x_embed], [effects.input_embedding], color="tab:gray", label="input embedding alone"
    )
    ax_revert.bar([x_head], [effects.head], color="tab:purple", label="output head alone")
    ax_revert.plot(
        [n - k - 0.5 for k in range(n + 1)],
        effects.last_k,
        "k.-",
        markersize=3,
        label="head + last k blocks (plotted at the first block reverted)",
    )
    restore = summary.evidence.get("restore_fraction")
    if restore is not None:
        ax_revert.axhline(restore, color="tab:green", linestyle=":", linewidth=0.8)
    depth = summary.forgetting_depth
    if depth is not None:
        ax_revert.axvspan(
            n - depth - 0.5,
            x_head + 0.5,
            color="tab:green",
            alpha=0.08,
            label=f"exact depth {depth}: head + last {depth} blocks restore enough",
        )
    ax_revert.set_ylabel("share of the forget effect")
    ax_revert.set_title(f"{result.method}: where the forgetting lives")
    ax_revert.legend(fontsize="x-small", loc="upper right")
    ax_share.bar(blocks, deltas.share_by_layer(), color="tab:purple")
    tied = " (tied matrix: counted in both)" if deltas.tied_embeddings else ""
    ax_share.bar(
        [x_embed, x_head], [deltas.input_embedding_share, deltas.head_share], color="tab:gray"
    )
    ax_share.set_ylabel("share of Σ‖ΔW‖²")
    ax_share.set_title(
        f"Share of the update (over every distinct weight tensor){tied}", fontsize="small"
    )
    if result.comparisons:
        for split, style in (("forget", "-"), ("retain", "--")):
            layers = result.comparisons[f"unlearned/{split}"].layers[1:]
            ax_cka.plot(
                blocks,
                [1 - layer.cka_debiased for layer in layers],
                style,
                color=SET_COLOURS[split],
                marker="o",
                markersize=2.5,
                label=f"1 − debiased CKA, {split}",
            )
        ax_cka.legend(fontsize="x-small")
    ax_cka.set_ylabel("representational change")
    if result.logit_lens is not None:
        for label, readout in result.logit_lens.readouts.items():
            ax_rank.semilogy(
                blocks, readout.median_rank()[1:], marker="o", markersize=2.5, label=label
            )
        ax_rank.legend(fontsize="x-small")
        ax_rank.set_title(
            f"Logit lens: median answer rank after each block ({result.logit_lens.decoder} decoder)",
            fontsize="small",
        )
    ax_rank.set_ylabel("answer rank")
    ax_rank.set_xticks(
        [x_embed, *range(0, n, max(1, n // 15)), x_head],
        ["embed", *map(str, range(0, n, max(1, n // 15))), "head"],
    )
    ax_rank.set_xlabel("input embedding · block · output head")
    for ax in axes:
        ax.set_xlim(x_embed - 0.8, x_head + 0.8)
    return save_figure(figure, path)


def plot_recovery_curves(result: MethodResults, path: Path) -> Path:
    """Forget, retain and control accuracy and NLL against epochs of relearning (equal work),
    each accuracy curve in its 95 % paired-bootstrap band over items (and seeds, with
    `--seeds`), where the per-item outcomes were stored."""
    relearn = result.relearn
    assert relearn is not None, "plotted after relearning"
    figure, (ax_acc, ax_nll) = new_figure(10.0, 4.0, columns=2)
    for name in ("forget", "retain", "control"):
        points = getattr(relearn.curve, name)
        if points:
            epochs = [p.epoch for p in points]
            runs = [points, *(getattr(c, name) for c in result.relearn_seeds)]
            band = accuracy_band([run for run in runs if run])
            if band is not None:
                ax_acc.fill_between(
                    epochs[: len(band[0])], *band, color=SET_COLOURS[name], alpha=0.15,
                    linewidth=0,
                )  # fmt: skip
            ax_acc.plot(
                epochs,
                [p.accuracy for p in points],
                "-o",
                color=SET_COLOURS[name],
                markersize=3,
                label=name,
            )
            ax_nll.plot(
                epochs,
                [p.nll for p in points],
                "-o",
                color=SET_COLOURS[name],
                markersize=3,
                label=name,
            )
    rec = relearn.recovery["accuracy"]
    if rec.original is not None:
        ax_acc.axhline(
            rec.original,
            color=SET_COLOURS["forget"],
            linestyle=":",
            linewidth=0.8,
            label="forget, original",
        )
    half = relearn.steps_to_recover()
    ax_acc.set_title(
        f"Relearning: 50 % recovery {'at step ' + str(half) if half is not None else 'not within budget'}"
    )
    ax_acc.set_ylabel("token accuracy on answers (band: 95 % bootstrap)")
    ax_acc.set_ylim(-0.02, 1.02)
    ax_nll.set_ylabel("NLL (nats per answer token)")
    ax_nll.set_title("Relearning: NLL")
    for ax in (ax_acc, ax_nll):
        ax.set_xlabel("epochs of the set's own items (equal work)")
        ax.legend(fontsize="small")
    return save_figure(figure, path)


def plot_correlations(result: MethodResults, path: Path) -> Path:
    """Spearman correlations between the per-layer columns, as a small heatmap."""
    assert result.localization is not None, "plotted for a localised method"
    names, matrix = result.localization.correlation_matrix()
    figure, (ax,) = new_figure(6.0, 5.0)
    image = ax.imshow(matrix, cmap="RdBu_r", vmin=-1, vmax=1)
    figure.colorbar(image, ax=ax, label="Spearman ρ over blocks")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize="small")
    ax.set_yticks(range(len(names)), names, fontsize="small")
    for i in range(len(names)):
        for j in range(len(names)):
            if np.isfinite(matrix[i, j]):
                ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize="x-small")
    ax.set_title(f"{result.method}: rank correlations of the per-layer evidence")
    return save_figure(figure, path)


def plot_update_history(result: MethodResults, path: Path) -> Path:
    """Per block: how relearning moved against unlearning (cosine, fraction undone), and the
    unlearning update's norm per block after every step."""
    figure, (ax_dir, ax_hist) = new_figure(11.0, 4.2, columns=2)
    if result.directions is not None:
        blocks = range(len(result.directions.cosine))
        ax_dir.plot(
            blocks,
            result.directions.cosine,
            "-o",
            markersize=3,
            color="tab:blue",
            label="cos(Δ unlearn, Δ relearn)",
        )
        ax_dir.plot(
            blocks,
            result.directions.undone,
            "--",
            color="tab:orange",
            label="fraction of Δ unlearn undone",
        )
        ax_dir.axhline(0.0, color="black", linewidth=0.5)
        ax_dir.set_xlabel("block")
        ax_dir.set_title(
            f"Relearning vs unlearning (overall cosine {result.directions.overall_cosine:.2f})",
            fontsize="small",
        )
        ax_dir.legend(fontsize="small")
    records = [record for record in result.tracking if record.phase == "unlearn"]
    if records:
        history = np.array([record.layers for record in records])
        image = ax_hist.imshow(
            history.T,
            aspect="auto",
            origin="lower",
            cmap="magma",
            extent=(0.5, len(records) + 0.5, -0.5, history.shape[1] - 0.5),
        )
        figure.colorbar(image, ax=ax_hist, label="‖W_step − W_original‖ of the block")
        ax_hist.set_xlabel("unlearning step")
        ax_hist.set_ylabel("block")
        ax_hist.set_title("Weight-delta history during unlearning", fontsize="small")
    return save_figure(figure, path)


def write_method_figures(result: MethodResults, directory: Path) -> list[tuple[Path, str]]:
    """Every figure of one method that its finished stages allow, with captions."""
    directory.mkdir(parents=True, exist_ok=True)
    name = result.method
    figures: list[tuple[Path, str]] = []
    if result.unlearn is not None:
        figures.append(
            (plot_training_curves(result, directory / f"{name}-training.png"), "Training curves")
        )
    if result.comparisons:
        figures.append(
            (plot_cka_curves(result, directory / f"{name}-cka.png"), "Debiased CKA by layer")
        )
        figures.append(
            (plot_pc1_curves(result, directory / f"{name}-pc1.png"), "PC1 similarity by layer")
        )
        forget = result.comparisons["unlearned/forget"]
        streams = [layer.stream for layer in forget.layers]
        figures.append(
            (
                plot_pca_shift(
                    streams,
                    [layer.delta_pc1 for layer in forget.layers],
                    [layer.pc2 for layer in forget.layers],
                    directory / f"{name}-pca-shift.png",
                ),
                "PCA shift of the unlearned model (forget data)",
            )
        )
        by_layer = forget.fisher_by_layer()
        blocks = fisher_histogram_blocks(list(by_layer))
        if blocks:
            path = plot_fisher_histograms(
                blocks,
                [by_layer[b].original for b in blocks],
                [by_layer[b].updated for b in blocks],
                directory / f"{name}-fisher.png",
                labels=("original", "unlearned"),
            )
            figures.append(
                (path, "Fisher information histograms, first / middle / last block (forget data)")
            )
    if result.deltas is not None:
        figures.append(
            (
                plot_delta_share(result, directory / f"{name}-delta-share.png"),
                "Weight-delta share by layer",
            )
        )
    if result.reversion is not None:
        figures.append(
            (
                plot_reversion(result, directory / f"{name}-reversion.png"),
                "Reversion effect by layer",
            )
        )
    if result.heads is not None:
        figures.append(
            (plot_head_heatmap(result, directory / f"{name}-heads.png"), "Layer × head attribution")
        )
    if result.attribution is not None:
        figures.append(
            (
                plot_attribution(result, directory / f"{name}-attribution.png"),
                "Weight attribution by block and head + last k, with the exact reversions that check it",
            )
        )
        figures.append(
            (
                plot_head_attribution(result, directory / f"{name}-head-attribution.png"),
                "Attribution of the forget effect to every query head (verified heads outlined)",
            )
        )
    if result.directions is not None or result.tracking:
        figures.append(
            (
                plot_update_history(result, directory / f"{name}-updates.png"),
                "Relearning against unlearning per block, and the weight-delta history",
            )
        )
    if result.localization is not None:
        figures.append(
            (
                plot_correlations(result, directory / f"{name}-correlations.png"),
                "Rank correlations of the per-layer evidence",
            )
        )
    return figures


def headline_figures(result: MethodResults, directory: Path) -> list[tuple[Path, str]]:
    """The first screen's figures of one method: where the forgetting lives, and the recovery curves."""
    directory.mkdir(parents=True, exist_ok=True)
    figures: list[tuple[Path, str]] = []
    if result.localization is not None and result.deltas is not None:
        figures.append(
            (
                plot_where(result, directory / f"{result.method}-where.png"),
                "Where the forgetting lives: reversion effect (depth shaded), update share, CKA "
                "change, logit-lens rank",
            )
        )
    if result.relearn is not None:
        figures.append(
            (
                plot_recovery_curves(result, directory / f"{result.method}-recovery.png"),
                "Recovery curves: forget, retain and control after every relearning step",
            )
        )
    return figures
