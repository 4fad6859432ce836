"""PNG figures of a comparison, drawn from plain data."""

from __future__ import annotations

import pytest
import torch

from unlearn_lens.diagnostics import Comparison, FisherGroup, LayerComparison
from unlearn_lens.metrics import TokenMetrics, compare_fisher
from unlearn_lens.report.figures import (
    fisher_histogram_blocks,
    plot_cka,
    plot_fisher_histograms,
    plot_overview,
    plot_pc1_similarity,
    plot_pca_shift,
    write_comparison_figures,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
N_STREAMS = 7


def _is_png(path) -> bool:
    content = path.read_bytes()
    return content.startswith(PNG_MAGIC) and len(content) > 5_000


def _comparison(fisher: bool) -> Comparison:
    """A hand-made comparison whose last two layers drift, with Fisher groups for 6 blocks."""
    layers = [
        LayerComparison(
            stream=j,
            cka_debiased=1.0 - 0.1 * max(0, j - 4),
            cka_biased=1.0 - 0.05 * max(0, j - 4),
            pc1_similarity=1.0 - 0.2 * max(0, j - 4),
            subspace_similarity=0.9,
            delta_pc1=0.3 * max(0, j - 4),
            pc2=0.1 * j,
            reference_pc2=0.0,
            reference_pc1_std=1.0,
            pca_distance=0.3 * max(0, j - 4),
        )
        for j in range(N_STREAMS)
    ]
    generator = torch.Generator().manual_seed(0)
    groups = []
    if fisher:
        for block in range(N_STREAMS - 1):
            reference = torch.rand(500, generator=generator, dtype=torch.float64) ** 8
            updated = reference * (0.1 if block >= 4 else 1.0)
            groups.append(
                FisherGroup(
                    layer=block,
                    component=None,
                    comparison=compare_fisher(reference, updated, bins=20),
                )
            )
    metrics = TokenMetrics(
        accuracy=0.9, nll=0.3, perplexity=1.35, exact_match=0.8, n_tokens=40, n_sequences=10
    )
    forgotten = TokenMetrics(
        accuracy=0.1, nll=4.0, perplexity=54.6, exact_match=0.0, n_tokens=40, n_sequences=10
    )
    return Comparison(
        reference="original",
        updated="unlearned",
        pooling="mean",
        tokens="all",
        n_items=10,
        n_samples=10,
        subspace_k=5,
        layers=layers,
        mean_pca_distance=0.13,
        reference_metrics=metrics,
        updated_metrics=forgotten,
        fisher=groups,
    )


def test_each_plot_writes_a_png(tmp_path):
    streams = list(range(N_STREAMS))
    assert _is_png(plot_cka(streams, [1.0] * 7, [1.0] * 7, tmp_path / "cka.png"))
    assert _is_png(
        plot_pc1_similarity(streams, [1.0] * 7, tmp_path / "pc1.png", subspace=[0.9] * 7)
    )
    assert _is_png(
        plot_pca_shift(
            streams, [0.0] * 7, [0.1 * j for j in streams], tmp_path / "nested" / "shift.png"
        )
    )
    groups = _comparison(fisher=True).fisher
    path = plot_fisher_histograms(
        [0, 5],
        [groups[0].comparison.original, groups[5].comparison.original],
        [groups[0].comparison.updated, groups[5].comparison.updated],
        tmp_path / "fisher.png",
    )
    assert _is_png(path)
    with pytest.raises(ValueError, match="one reference and one updated summary per block"):
        plot_fisher_histograms(
            [0, 1],
            [groups[0].comparison.original],
            [groups[0].comparison.updated],
            tmp_path / "x.png",
        )


@pytest.mark.parametrize("fisher", [True, False])
def test_comparison_figures(tmp_path, fisher):
    comparison = _comparison(fisher)
    paths = write_comparison_figures(comparison, tmp_path)
    expected = {"cka.png", "pc1_similarity.png", "pca_shift.png", "overview.png"} | (
        {"fisher_histograms.png"} if fisher else set()
    )
    assert {path.name for path in paths} == expected
    assert all(_is_png(path) for path in paths)
    assert _is_png(plot_overview(comparison, tmp_path / "again.png"))


def test_fisher_histogram_blocks():
    assert fisher_histogram_blocks(range(30)) == [0, 15, 29]
    assert fisher_histogram_blocks([3]) == [3]
    assert fisher_histogram_blocks([]) == []
