"""PNG figures of per-layer diagnostics (CKA, PC1 similarity, PCA shift, Fisher histograms).

Each function takes plain data (lists, or a [`Comparison`][unlearn_lens.diagnostics.compare.Comparison]
for the overview) and a path, draws with matplotlib's object-oriented API (no pyplot state, no
display: the Agg canvas), writes a PNG and returns its path. Residual-stream positions are
numbered as everywhere in unlearn_lens: 0 = after the embedding, `j` = after block `j - 1`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from unlearn_lens.diagnostics.compare import Comparison
from unlearn_lens.metrics.fisher import FisherSummary

DPI = 150
"""Sharp on a laptop screen and in an HTML report without making files large."""

LAYER_AXIS = "layer (0 = embeddings, j = after block j−1)"
REFERENCE_COLOUR, UPDATED_COLOUR = "#1f77b4", "#d62728"
"""Blue for the reference model, red for the updated one, in every figure."""


def new_figure(
    width: float = 6.4, height: float = 4.0, rows: int = 1, columns: int = 1
) -> tuple[Figure, list[Axes]]:
    """A figure (no pyplot state, so safe in any thread) and its axes, flattened row by row."""
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=False)
    return figure, [ax for row in axes for ax in row]


def save_figure(figure: Figure, path: str | Path) -> Path:
    """Write `figure` as a PNG, creating the directory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path


def _draw_cka(
    ax: Axes, streams: Sequence[int], debiased: Sequence[float], biased: Sequence[float]
) -> None:
    ax.plot(streams, debiased, "-o", color=UPDATED_COLOUR, markersize=3, label="debiased")
    ax.plot(streams, biased, "--", color="grey", label="biased (inflated at few samples)")
    ax.axhline(1.0, color="black", linewidth=0.5)
    ax.set_xlabel(LAYER_AXIS)
    ax.set_ylabel("linear CKA (1 = same geometry)")
    ax.set_title("Representation similarity, reference vs updated")
    ax.legend(loc="lower left", fontsize="small")


def _draw_pc1(
    ax: Axes, streams: Sequence[int], pc1: Sequence[float], subspace: Sequence[float] | None
) -> None:
    ax.plot(streams, pc1, "-o", color=UPDATED_COLOUR, markersize=3, label="PC1 |cos|")
    if subspace is not None:
        ax.plot(streams, subspace, "--", color="grey", label="top-k subspace (mean cos²)")
    ax.set_ylim(-0.02, 1.05)
    ax.set_xlabel(LAYER_AXIS)
    ax.set_ylabel("similarity (1 = same direction)")
    ax.set_title("First principal component, reference vs updated")
    ax.legend(loc="lower left", fontsize="small")


def _draw_pca_shift(
    ax: Axes, streams: Sequence[int], delta_pc1: Sequence[float], pc2: Sequence[float]
) -> None:
    points = ax.scatter(delta_pc1, pc2, c=streams, cmap="viridis", s=22, zorder=3)
    for stream, x, y in zip(streams, delta_pc1, pc2, strict=True):
        ax.annotate(str(stream), (x, y), textcoords="offset points", xytext=(3, 3), fontsize=6)
    ax.axhline(0.0, color="black", linewidth=0.5)
    ax.axvline(0.0, color="black", linewidth=0.5)
    ax.set_xlabel("ΔPC1: shift along reference PC1 (activation units)")
    ax.set_ylabel("PC2 of the updated mean (activation units)")
    ax.set_title("PCA shift per layer (reference at 0, 0)")
    ax.figure.colorbar(points, ax=ax, label="layer")


def _draw_fisher_histogram(
    ax: Axes, reference: FisherSummary, updated: FisherSummary, title: str, labels: tuple[str, str]
) -> None:
    for summary, colour, label in (
        (reference, REFERENCE_COLOUR, labels[0]),
        (updated, UPDATED_COLOUR, labels[1]),
    ):
        if summary.edges:
            fractions = [count / summary.n for count in summary.counts]
            ax.stairs(
                fractions,
                summary.edges,
                color=colour,
                linewidth=1.2,
                label=f"{label} (median {summary.median:.2g})",
            )
    ax.set_xscale("log")
    ax.set_xlabel("Fisher value (mean squared gradient of log p)")
    ax.set_ylabel("fraction of weights")
    ax.set_title(title)
    ax.legend(fontsize="x-small")


def _draw_fisher_ratio(ax: Axes, blocks: Sequence[int], log10_mean_ratio: Sequence[float]) -> None:
    streams = [block + 1 for block in blocks]  # block j writes residual stream j + 1
    colours = [UPDATED_COLOUR if value < 0 else REFERENCE_COLOUR for value in log10_mean_ratio]
    ax.bar(streams, log10_mean_ratio, color=colours)
    ax.set_xlim(
        -0.5, max(streams) + 0.5
    )  # the same layer axis as the other panels (stream 0 has no block)
    ax.axhline(0.0, color="black", linewidth=0.5)
    ax.set_xlabel(LAYER_AXIS)
    ax.set_ylabel("log10(mean Fisher updated / reference)")
    ax.set_title("Fisher information change per block (< 0: lost sensitivity)")


def plot_cka(
    streams: Sequence[int], debiased: Sequence[float], biased: Sequence[float], path: str | Path
) -> Path:
    """Linear CKA by layer: debiased (solid) with its biased twin (dashed)."""
    figure, (ax,) = new_figure()
    _draw_cka(ax, streams, debiased, biased)
    return save_figure(figure, path)


def plot_pc1_similarity(
    streams: Sequence[int],
    pc1: Sequence[float],
    path: str | Path,
    subspace: Sequence[float] | None = None,
) -> Path:
    """PC1 similarity by layer, with the top-k subspace similarity (dashed) when given."""
    figure, (ax,) = new_figure()
    _draw_pc1(ax, streams, pc1, subspace)
    return save_figure(figure, path)


def plot_pca_shift(
    streams: Sequence[int], delta_pc1: Sequence[float], pc2: Sequence[float], path: str | Path
) -> Path:
    """ΔPC1 against PC2, one point per layer, coloured and annotated by layer."""
    figure, (ax,) = new_figure(height=4.8)
    _draw_pca_shift(ax, streams, delta_pc1, pc2)
    return save_figure(figure, path)


def plot_fisher_histograms(
    blocks: Sequence[int],
    reference: Sequence[FisherSummary],
    updated: Sequence[FisherSummary],
    path: str | Path,
    labels: tuple[str, str] = ("reference", "updated"),
) -> Path:
    """Fisher histograms (log x) of some blocks, both models overlaid on shared bins, one panel per block."""
    if not (len(blocks) == len(reference) == len(updated)) or not blocks:
        raise ValueError(
            "give one reference and one updated summary per block, for at least one block"
        )
    figure, axes = new_figure(width=4.0 * len(blocks), height=3.6, columns=len(blocks))
    for ax, block, ref, upd in zip(axes, blocks, reference, updated, strict=True):
        _draw_fisher_histogram(ax, ref, upd, f"block {block}", labels)
    return save_figure(figure, path)


def fisher_histogram_blocks(blocks: Sequence[int]) -> list[int]:
    """The blocks whose Fisher histograms are drawn by default: the first, middle and last of `blocks`."""
    ordered = sorted(blocks)
    return sorted({ordered[0], ordered[len(ordered) // 2], ordered[-1]}) if ordered else []


def plot_overview(comparison: Comparison, path: str | Path) -> Path:
    """2×2 overview: CKA, PC1 similarity, PCA shift, and the Fisher change per block (or, without
    Fisher, the token metrics of both models)."""
    streams = [layer.stream for layer in comparison.layers]
    figure, axes = new_figure(width=12.0, height=8.4, rows=2, columns=2)
    _draw_cka(
        axes[0],
        streams,
        [x.cka_debiased for x in comparison.layers],
        [x.cka_biased for x in comparison.layers],
    )
    _draw_pc1(
        axes[1],
        streams,
        [x.pc1_similarity for x in comparison.layers],
        [x.subspace_similarity for x in comparison.layers],
    )
    _draw_pca_shift(
        axes[2],
        streams,
        [x.delta_pc1 for x in comparison.layers],
        [x.pc2 for x in comparison.layers],
    )
    by_layer = comparison.fisher_by_layer()
    if by_layer:
        _draw_fisher_ratio(axes[3], list(by_layer), [c.log10_mean_ratio for c in by_layer.values()])
    else:
        _draw_token_metrics(axes[3], comparison)
    figure.suptitle(
        f"{comparison.reference} → {comparison.updated}  ({comparison.n_items} items, {comparison.pooling} pooling)"
    )
    return save_figure(figure, path)


def _draw_token_metrics(ax: Axes, comparison: Comparison) -> None:
    names = ("accuracy", "exact_match")
    positions = range(len(names))
    for offset, metrics, colour, label in (
        (-0.2, comparison.reference_metrics, REFERENCE_COLOUR, comparison.reference),
        (0.2, comparison.updated_metrics, UPDATED_COLOUR, comparison.updated),
    ):
        ax.bar(
            [p + offset for p in positions],
            [getattr(metrics, n) for n in names],
            width=0.4,
            color=colour,
            label=label,
        )
    ax.set_xticks(list(positions), ["token accuracy", "exact match"])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("fraction of targets / items")
    ax.set_title("Token metrics on the items")
    ax.legend(fontsize="x-small")


def write_comparison_figures(comparison: Comparison, directory: str | Path) -> list[Path]:
    """Every figure of a comparison into `directory`: CKA, PC1 similarity, PCA shift, Fisher
    histograms of the first, middle and last block (with Fisher), and the overview."""
    directory = Path(directory)
    streams = [layer.stream for layer in comparison.layers]
    paths = [
        plot_cka(
            streams,
            [x.cka_debiased for x in comparison.layers],
            [x.cka_biased for x in comparison.layers],
            directory / "cka.png",
        ),
        plot_pc1_similarity(
            streams,
            [x.pc1_similarity for x in comparison.layers],
            directory / "pc1_similarity.png",
            subspace=[x.subspace_similarity for x in comparison.layers],
        ),
        plot_pca_shift(
            streams,
            [x.delta_pc1 for x in comparison.layers],
            [x.pc2 for x in comparison.layers],
            directory / "pca_shift.png",
        ),
    ]
    by_layer = comparison.fisher_by_layer()
    blocks = fisher_histogram_blocks(list(by_layer))
    if blocks:
        paths.append(
            plot_fisher_histograms(
                blocks,
                [by_layer[b].original for b in blocks],
                [by_layer[b].updated for b in blocks],
                directory / "fisher_histograms.png",
            )
        )
    paths.append(plot_overview(comparison, directory / "overview.png"))
    return paths
