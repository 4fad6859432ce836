"""Spearman with average ranks, the per-layer summary, and a verdict consistent with its numbers."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

from unlearn_lens.localize import (
    CKA_KEPT,
    SHALLOW_FRACTION,
    DeltaReport,
    DepthEvidence,
    LayerDelta,
    LocalizationSummary,
    ReversionResult,
    ReversionSweep,
    WeightDelta,
    average_ranks,
    bisect_depth,
    shallow_limit,
    spearman,
    summarise_localization,
)
from unlearn_lens.metrics import TokenMetrics
from unlearn_lens.schema import dump, read


def _brute_ranks(values):
    """Rank = 1 + (number smaller) + (number of ties besides itself) / 2."""
    return [1 + sum(v < x for v in values) + (sum(v == x for v in values) - 1) / 2 for x in values]


def _brute_spearman(x, y):
    rx, ry = _brute_ranks(list(x)), _brute_ranks(list(y))
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    return cov / math.sqrt(sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry))


def test_average_ranks_and_spearman_against_brute_force():
    rng = np.random.default_rng(0)
    for trial in range(20):
        n = int(rng.integers(3, 25))
        x = (
            rng.integers(0, 5, n).astype(float) if trial % 2 else rng.normal(size=n)
        )  # ties on odd trials
        y = rng.integers(0, 5, n).astype(float) if trial % 3 else rng.normal(size=n)
        assert average_ranks(x).tolist() == _brute_ranks(list(x))
        if len(set(x)) > 1 and len(set(y)) > 1:
            assert spearman(x, y) == pytest.approx(_brute_spearman(x, y), abs=1e-12)
    # Without ties: the textbook 1 − 6 Σd² / (n (n² − 1)).
    x, y = [1.0, 5.0, 3.0, 2.0, 4.0], [10.0, 20.0, 50.0, 40.0, 30.0]
    d = np.array(_brute_ranks(x)) - np.array(_brute_ranks(y))
    assert spearman(x, y) == pytest.approx(1 - 6 * (d**2).sum() / (5 * (25 - 1)))
    assert spearman([1, 2, 3, 4], [10, 20, 30, 45]) == pytest.approx(1.0)


def test_spearman_against_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(1)
    x, y = rng.integers(0, 6, 30).astype(float), rng.normal(size=30)
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)


def test_spearman_skips_nan_pairs_and_degenerate_inputs():
    assert spearman([1, 2, math.nan, 3, 4], [1, 2, 100, 3, 4]) == pytest.approx(1.0)
    assert math.isnan(spearman([1, 2, math.nan], [1, 2, 3]))
    assert math.isnan(spearman([1, 1, 1, 1], [1, 2, 3, 4]))
    with pytest.raises(ValueError, match="one length"):
        spearman([1, 2, 3], [1, 2])


def _metrics(accuracy: float, nll: float) -> TokenMetrics:
    return TokenMetrics(
        accuracy=accuracy,
        nll=nll,
        perplexity=math.exp(nll),
        exact_match=accuracy,
        n_tokens=8,
        n_sequences=8,
    )


def _result(label: str, effect: float) -> ReversionResult:
    return ReversionResult(
        label, _metrics(effect, 5 - 4 * effect), _metrics(0.9, 2.0), effect, effect
    )


def _sweep(last_k: list[float], per_layer: list[float] | None = None) -> ReversionSweep:
    """A sweep whose head + last-k effects are `last_k` (k = 0 … L, so L = len(last_k) − 1)."""
    per_layer = per_layer or [0.0] * (len(last_k) - 1)
    return ReversionSweep(
        original=_result("original", 1.0),
        unlearned=_result("unlearned", 0.0),
        layers=[_result(f"layer {i}", e) for i, e in enumerate(per_layer)],
        last_k=[_result(f"head + last {k}", e) for k, e in enumerate(last_k)],
        input_embedding=_result("embed (input)", 0.0),
        components=[],
        top_heads=[],
        head_order=[],
        head_counts=[],
    )


def _deltas(shares: list[float]) -> DeltaReport:
    """Layers with the given squared-norm shares (non-layer weights unchanged)."""
    layers = [
        LayerDelta(i, math.sqrt(s), 10.0, s, {"q": WeightDelta(math.sqrt(s), 10.0)})
        for i, s in enumerate(shares)
    ]
    return DeltaReport(
        4, 2, {}, layers, [], {}, WeightDelta(math.sqrt(sum(shares)), 10.0 * math.sqrt(len(shares)))
    )


def _quoted(verdict: str) -> dict[str, list[int]]:
    return {
        "percents": [int(p) for p in re.findall(r"(\d+) %", verdict)],
        "ints": [int(i) for i in re.findall(r"\b(\d+)\b", verdict)],
    }


def test_shallow_verdict_quotes_its_numbers():
    n = 30
    last_k = [0.0, 0.1, 0.5, 0.83] + [0.9] * (n - 3)
    cka = [1.0] * 26 + [0.97, 0.9, 0.85, 0.8]
    summary = summarise_localization(
        _deltas([1 / n] * n), _sweep(last_k), cka_forget=cka, cka_retain=[0.99] * n
    )
    assert shallow_limit(n) == max(1, round(SHALLOW_FRACTION * n)) == 6
    assert summary.forgetting_depth == 3 and summary.shallow is True
    assert summary.verdict == (
        "shallow (depth 3 ≤ 6 of 30 blocks): 83 % of the forget effect (nll) is restored by reverting the output head "
        f"and the last 3 of 30 blocks; forget-set representations below layer 26 keep debiased CKA ≥ {CKA_KEPT}"
    )
    assert (
        summary.evidence["restored_at_depth"] == 0.83
        and summary.evidence["first_layer_below_cka_kept"] == 26
    )
    assert all(c >= CKA_KEPT for c in cka[:26]) and cka[26] < CKA_KEPT
    assert summary.columns["cka_change_forget"] == pytest.approx([1 - c for c in cka])


@pytest.mark.parametrize(
    "last_k,depth,shallow",
    [
        ([0.05 * k for k in range(11)], None, False),  # never reaches 0.8
        ([0.0, 0.1, 0.2, 0.3, 0.85, 0.9, 0.95, 1.0, 1.0, 1.0, 1.0], 4, False),  # limit is 2 of 10
        ([0.0, 0.2, 0.8] + [1.0] * 8, 2, True),  # exactly at the threshold and at the limit
        ([0.1, 0.9] + [0.9] * 9, 1, True),
        ([0.9] * 11, 0, True),  # the output head alone
    ],
)
def test_verdict_is_consistent_with_the_numbers_it_quotes(last_k, depth, shallow):
    n = len(last_k) - 1
    limit = shallow_limit(n)
    summary = summarise_localization(_deltas([1 / n] * n), _sweep(last_k))
    assert (
        summary.forgetting_depth == depth
        and summary.shallow is shallow
        and summary.shallow_limit == limit
    )
    quoted = _quoted(summary.verdict)
    assert summary.verdict.startswith("shallow" if shallow else "deep")
    if depth is None:
        assert quoted["percents"] == [
            80,
            round(100 * last_k[-1]),
            0,
        ]  # the last: the input embedding alone
        assert last_k[-1] < 0.8
    elif shallow:
        assert depth <= limit
        assert quoted["percents"] == [round(100 * last_k[depth])]
        assert (
            "the output head alone" if depth == 0 else f"last {depth} of {n} blocks"
        ) in summary.verdict
    else:
        assert depth > limit and f"the last {limit} of {n} blocks restores only" in summary.verdict
        assert quoted["percents"] == [round(100 * last_k[limit]), round(100 * last_k[depth])]
        assert last_k[limit] < 0.8 <= last_k[depth]
        assert f"depth {depth} > {limit} of {n}" in summary.verdict


def test_nothing_forgotten_is_undetermined():
    summary = summarise_localization(_deltas([0.5, 0.5]), _sweep([math.nan, math.nan, math.nan]))
    assert summary.shallow is None and summary.forgetting_depth is None
    assert summary.verdict.startswith("undetermined")


def test_columns_correlations_and_stream_alignment():
    n = 5
    shares = [0.05, 0.1, 0.15, 0.3, 0.4]
    per_layer = [0.0, 0.1, 0.2, 0.5, 0.9]
    streams = [1.0, 1.0, 0.99, 0.97, 0.9, 0.8]  # one per residual stream: stream 0 is the embedding
    summary = summarise_localization(
        _deltas(shares),
        _sweep([0.9] * (n + 1), per_layer),
        cka_forget=streams,
        pc1_similarity=[1, 1, 1, 0.9, 0.5],
        fisher_change=[0, 0, 0, -1, -2],
    )
    assert list(summary.columns) == [
        "relative_delta",
        "delta_share",
        "reversion_accuracy",
        "reversion_nll",
        "cka_change_forget",
        "pc1_similarity",
        "fisher_change",
    ]
    assert summary.columns["cka_change_forget"] == pytest.approx([0.0, 0.01, 0.03, 0.1, 0.2])
    names, matrix = summary.correlation_matrix()
    assert (
        matrix.shape == (7, 7) and np.allclose(matrix, matrix.T) and np.allclose(np.diag(matrix), 1)
    )
    assert matrix[names.index("delta_share"), names.index("reversion_nll")] == pytest.approx(1.0)
    assert matrix[names.index("reversion_nll"), names.index("fisher_change")] == pytest.approx(
        spearman(per_layer, [0, 0, 0, -1, -2])
    )
    assert len(summary.correlations) == 7 * 6 // 2
    assert summary.verdict.endswith(
        "forget-set representations below layer 2 keep debiased CKA ≥ 0.98"
    )  # layer 2 (stream 3) is 0.97
    assert read(LocalizationSummary, json.loads(json.dumps(dump(summary)))) == summary
    with pytest.raises(ValueError, match="pc1_similarity has 3 values; give one per layer"):
        summarise_localization(_deltas(shares), _sweep([0.9] * (n + 1)), pc1_similarity=[1, 1, 1])


@pytest.mark.parametrize(
    "last_k",
    [
        [0.0, 0.1, 0.5, 0.83] + [0.9] * 7,  # shallow
        [0.0, 0.1, 0.2, 0.3, 0.85, 0.9, 0.95, 1.0, 1.0, 1.0, 1.0],  # deep
        [0.05 * k for k in range(11)],  # never restored
    ],
)
def test_depth_search_alone_gives_the_sweeps_verdict(last_k):
    """Attribution mode: the verdict from a bisection's few exact reversions (plus the ones it
    quotes) equals the verdict from the full sweep; the per-layer column is the attribution."""
    n = len(last_k) - 1
    sweep = _sweep(last_k)
    measured: dict[int, float] = {}
    depth = bisect_depth(lambda k: measured.setdefault(k, last_k[k]), n)
    limit = shallow_limit(n)
    if depth is not None and depth > limit:
        measured[limit] = last_k[limit]
    evidence = DepthEvidence(n, depth, measured, 0.0 if depth is None else None)
    assert len(measured) < n + 1
    full, searched = (
        summarise_localization(_deltas([1 / n] * n), sweep),
        summarise_localization(_deltas([1 / n] * n), evidence, attribution=[0.1] * n),
    )
    assert (
        searched.verdict == full.verdict
        and searched.shallow == full.shallow
        and searched.forgetting_depth == depth
    )
    assert (
        "reversion_nll" not in searched.columns and searched.columns["attribution_nll"] == [0.1] * n
    )
    assert read(DepthEvidence, json.loads(json.dumps(dump(evidence)))) == evidence
