"""Where forgetting lives: per-layer evidence side by side, its rank correlations, and a verdict.

The columns come from the weight deltas, the reversion sweep or the weight attribution and, when
given, the representation diagnostics (computed elsewhere and passed in per layer). The verdict is one
line that quotes the numbers it rests on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np

from unlearn_lens.localize.deltas import DeltaReport
from unlearn_lens.localize.reversion import DepthEvidence, ReversionSweep
from unlearn_lens.numbers import percent
from unlearn_lens.schema import Real

SHALLOW_FRACTION = 0.2
"""Forgetting is shallow when reverting the output head and at most this fraction of the top
blocks restores it (6 of 30): the study's suppressed models change only the few blocks nearest
the output."""

CKA_KEPT = 0.98
"""Debiased CKA at or above which a layer's representation counts as kept: SmolLM2 and its
GA-unlearned copy measure 0.996 on 32 prompts, a scrambled copy 0.41."""

COLUMNS = (
    "relative_delta",
    "delta_share",
    "reversion_accuracy",
    "reversion_nll",
    "attribution_nll",
    "cka_change_forget",
    "cka_change_retain",
    "pc1_similarity",
    "fisher_change",
)
"""Per-layer columns of a summary, in display order (those without data are left out)."""


def average_ranks(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """1-based ranks, ties given the average of the ranks they span."""
    x = np.asarray(values, dtype=np.float64)
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    sorted_x = x[order]
    start = 0
    while start < len(x):
        stop = start
        while stop + 1 < len(x) and sorted_x[stop + 1] == sorted_x[start]:
            stop += 1
        ranks[order[start : stop + 1]] = (start + stop) / 2 + 1
        start = stop + 1
    return ranks


def spearman(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """Spearman rank correlation (Pearson correlation of average ranks).

    Pairs with a NaN on either side are left out; NaN when fewer than 3 pairs remain or
    either side is constant.
    """
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"spearman needs two sequences of one length, got {len(a)} and {len(b)}")
    keep = ~(np.isnan(a) | np.isnan(b))
    if keep.sum() < 3:
        return math.nan
    ra, rb = average_ranks(a[keep]), average_ranks(b[keep])
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = math.sqrt(float((ra**2).sum() * (rb**2).sum()))
    return float((ra * rb).sum() / denominator) if denominator > 0 else math.nan


@dataclass(frozen=True)
class Correlation:
    """Spearman correlation of two per-layer columns over the layers where both are defined."""

    a: str
    b: str
    rho: Real
    n_layers: int


@dataclass(frozen=True)
class LocalizationSummary:
    """Per-layer localisation evidence and the shallowness verdict.

    **Fields:** `columns[name][ℓ]` for the names of `COLUMNS` that had data;
    `correlations` between every pair of them; `forgetting_depth` (see
    [`ReversionSweep`][unlearn_lens.localize.ReversionSweep]); `shallow_limit`, the largest
    depth still called shallow; `shallow` (None when unlearning changed nothing to restore);
    `verdict`, one line with its numbers; `evidence`, those numbers by name.
    """

    n_layers: int
    columns: dict[str, list[Real]]
    correlations: list[Correlation]
    forgetting_depth: int | None
    shallow_limit: int
    shallow: bool | None
    verdict: str
    evidence: dict[str, Any]

    def correlation_matrix(self) -> tuple[list[str], np.ndarray]:
        """Column names and their symmetric Spearman matrix (1 on the diagonal)."""
        names = list(self.columns)
        matrix = np.eye(len(names))
        for corr in self.correlations:
            i, j = names.index(corr.a), names.index(corr.b)
            matrix[i, j] = matrix[j, i] = corr.rho
        return names, matrix


def shallow_limit(n_layers: int, fraction: float = SHALLOW_FRACTION) -> int:
    """The largest forgetting depth (blocks reverted with the head) called shallow:
    `max(1, round(fraction · n_layers))`."""
    return max(1, round(fraction * n_layers))


def _per_layer(name: str, values: Sequence[float] | None, n_layers: int) -> list[float] | None:
    """Per-block values; a per-stream sequence (n_layers + 1) is aligned so block ℓ gets stream ℓ + 1."""
    if values is None:
        return None
    values = [float(v) for v in values]
    if len(values) == n_layers + 1:
        return values[1:]
    if len(values) != n_layers:
        raise ValueError(
            f"{name} has {len(values)} values; give one per layer ({n_layers}) or per residual stream ({n_layers + 1})"
        )
    return values


def _cka_clause(cka_forget: list[float]) -> tuple[str, int | None]:
    """What the forget-set CKA says about kept representations, and the first layer below `CKA_KEPT`."""
    below = [layer for layer, value in enumerate(cka_forget) if value < CKA_KEPT]
    if not below:
        return f"forget-set representations keep debiased CKA ≥ {CKA_KEPT} at every layer", None
    first = below[0]
    if first == 0:
        return f"forget-set representations fall below debiased CKA {CKA_KEPT} from layer 0", 0
    return f"forget-set representations below layer {first} keep debiased CKA ≥ {CKA_KEPT}", first


def _top(k: int, n_layers: int) -> str:
    """How a head + last-k reversion is named in a verdict."""
    return (
        "the output head alone"
        if k == 0
        else f"the output head and the last {k} of {n_layers} blocks"
    )


def _verdict(depth_evidence: DepthEvidence, limit: int) -> tuple[str, bool | None, dict[str, Any]]:
    n_layers = depth_evidence.n_layers
    effects = depth_evidence.last_k
    depth = depth_evidence.forgetting_depth
    metric = depth_evidence.depth_metric
    fraction = depth_evidence.restore_fraction
    evidence: dict[str, Any] = {
        "depth_metric": metric,
        "restore_fraction": fraction,
        "forgetting_depth": depth,
    }
    if 0 in effects:
        evidence["restored_by_head"] = effects[0]
    if depth_evidence.input_embedding is not None:
        evidence["restored_by_input_embedding"] = depth_evidence.input_embedding
    if all(math.isnan(e) for e in effects.values()):
        return (
            f"undetermined: unlearning left the forget-set {metric} unchanged, so there is nothing to restore",
            None,
            evidence,
        )
    if depth is None:
        evidence["restored_by_all_layers"] = effects[n_layers]
        line = (
            f"deep (no depth restores {percent(fraction)}): reverting {_top(n_layers, n_layers)} "
            f"restores only {percent(effects[n_layers])} of the forget effect ({metric}); the rest "
            "is in the input embedding "
            f"(reverted alone it restores {percent(evidence['restored_by_input_embedding'])})"
        )
        return line, False, evidence
    evidence["restored_at_depth"] = effects[depth]
    if depth <= limit:
        line = (
            f"shallow (depth {depth} ≤ {limit} of {n_layers} blocks): {percent(effects[depth])} of the forget "
            f"effect ({metric}) is restored by reverting {_top(depth, n_layers)}"
        )
        return line, True, evidence
    evidence["restored_at_limit"] = effects[limit]
    line = (
        f"deep (depth {depth} > {limit} of {n_layers} blocks): reverting {_top(limit, n_layers)} restores only "
        f"{percent(effects[limit])} of the forget effect ({metric}); {percent(effects[depth])} "
        f"needs {_top(depth, n_layers)}"
    )
    return line, False, evidence


def summarise_localization(
    deltas: DeltaReport,
    depth: ReversionSweep | DepthEvidence,
    *,
    attribution: Sequence[float] | None = None,
    cka_forget: Sequence[float] | None = None,
    cka_retain: Sequence[float] | None = None,
    pc1_similarity: Sequence[float] | None = None,
    fisher_change: Sequence[float] | None = None,
    fraction: float = SHALLOW_FRACTION,
) -> LocalizationSummary:
    """Side-by-side per-layer evidence, its Spearman correlations, and the shallowness verdict.

    **Arguments:**

    - `deltas`: original → unlearned weight deltas.
    - `depth`: the reversion sweep (its per-layer effects become the reversion columns), or,
      without a sweep, the exact depth search
      ([`measure_depth`][unlearn_lens.localize.measure_depth]).
    - `attribution`: attributed share of the forget effect per block (the `attribution_nll`
      column, see [`LossAttribution.blocks`][unlearn_lens.localize.LossAttribution.blocks]).
    - `cka_forget`, `cka_retain`: debiased CKA original vs unlearned per layer on forget and
      retain data (shown as `1 − CKA`); `pc1_similarity`: PC1 similarity per layer;
      `fisher_change`: log10 of the mean Fisher ratio per layer. Each is one value per block,
      or one per residual stream (L + 1, stream 0 = embedding), in which case block ℓ gets
      stream ℓ + 1, its output.
    - `fraction`: see `SHALLOW_FRACTION`.
    """
    n_layers = deltas.n_layers
    sweep: ReversionSweep | None
    if isinstance(depth, ReversionSweep):
        sweep, depth_evidence = depth, depth.depth_evidence()
    else:
        sweep, depth_evidence = None, depth
    if depth_evidence.n_layers != n_layers:
        raise ValueError(
            f"deltas cover {n_layers} layers but the depth evidence {depth_evidence.n_layers}"
        )
    optional = {
        name: _per_layer(name, values, n_layers)
        for name, values in (
            ("cka_forget", cka_forget),
            ("cka_retain", cka_retain),
            ("pc1_similarity", pc1_similarity),
            ("fisher_change", fisher_change),
            ("attribution_nll", attribution),
        )
    }
    available: dict[str, list[float] | None] = {
        "relative_delta": deltas.relative_by_layer(),
        "delta_share": deltas.share_by_layer(),
        "reversion_accuracy": sweep.layer_effects("accuracy") if sweep is not None else None,
        "reversion_nll": sweep.layer_effects("nll") if sweep is not None else None,
        "attribution_nll": optional["attribution_nll"],
        "cka_change_forget": None
        if optional["cka_forget"] is None
        else [1 - v for v in optional["cka_forget"]],
        "cka_change_retain": None
        if optional["cka_retain"] is None
        else [1 - v for v in optional["cka_retain"]],
        "pc1_similarity": optional["pc1_similarity"],
        "fisher_change": optional["fisher_change"],
    }
    columns = {name: column for name in COLUMNS if (column := available[name]) is not None}
    correlations = []
    for a, b in combinations(columns, 2):
        x, y = np.asarray(columns[a]), np.asarray(columns[b])
        correlations.append(
            Correlation(a, b, spearman(x, y), int((~(np.isnan(x) | np.isnan(y))).sum()))
        )
    limit = shallow_limit(n_layers, fraction)
    line, shallow, evidence = _verdict(depth_evidence, limit)
    if optional["cka_forget"] is not None and shallow is not None:
        clause, first_below = _cka_clause(optional["cka_forget"])
        line = f"{line}; {clause}"
        evidence["first_layer_below_cka_kept"] = first_below
    evidence["shallow_limit"] = limit
    return LocalizationSummary(
        n_layers=n_layers,
        columns=columns,
        correlations=correlations,
        forgetting_depth=depth_evidence.forgetting_depth,
        shallow_limit=limit,
        shallow=shallow,
        verdict=line,
        evidence=evidence,
    )
