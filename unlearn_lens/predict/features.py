"""Cheap features of an unlearned model that predict what a relearning attack would bring back.

Everything here needs only the original and the unlearned weights and the forget items: one
forward/backward pass per model, the weight deltas, and a bisection of last-k weight reversions.
No relearning, which is the expensive part on a large model.

| feature | what it is |
|---|---|
| `cka_lower` | mean debiased CKA (original vs unlearned, forget items) over the lower half of the blocks |
| `cka_upper` | the same over the upper half |
| `depth_fraction` | forgetting depth (blocks reverted with the output head) / number of blocks |
| | (1 + 1/L when no head + last-k reversion restores enough) |
| `delta_share_top` | share of the blocks' Σ‖ΔW‖² in the last quarter of the blocks |
| `delta_relative` | ‖ΔW‖ / ‖W‖ over every weight: the size of the update |
| `fisher_change` | mean over blocks of log10(mean Fisher unlearned / mean Fisher original) on the forget items |
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from unlearn_lens.data.items import Item
from unlearn_lens.diagnostics.compare import ModelPass, model_pass
from unlearn_lens.diagnostics.model_fisher import ModelFisher
from unlearn_lens.localize.deltas import DeltaReport, weight_deltas
from unlearn_lens.localize.reversion import Reverter, search_forgetting_depth
from unlearn_lens.metrics.cka import linear_cka
from unlearn_lens.metrics.fisher import log10_ratio
from unlearn_lens.models.subject import Snapshot, Subject
from unlearn_lens.numbers import finite_mean
from unlearn_lens.schema import Real

FEATURE_NAMES = (
    "cka_lower",
    "cka_upper",
    "depth_fraction",
    "delta_share_top",
    "delta_relative",
    "fisher_change",
)
"""The features as measured (and reported)."""

PREDICTOR_INPUTS = (
    "log_cka_gap_lower",
    "log_cka_gap_upper",
    "depth_fraction",
    "delta_share_top",
    "log_delta_relative",
    "fisher_change",
)
"""What the predictor reads: the features with CKA as log10(1 − CKA) and the update size as log10.
CKA after unlearning sits within 10⁻² of 1 and update sizes span decades; on their raw scale a
domain whose CKA gap is ten times another's lies many standard deviations out, and a linear fit
extrapolates wildly there (measured on the validation grid: held-out mean error 0.74)."""

LOG_FLOOR = 1e-9
"""Smallest value taken to log10 (a CKA of exactly 1, an update of exactly 0)."""

TOP_FRACTION = 0.25
"""The blocks "near the output": the last quarter (8 of SmolLM2's 30, rounded up)."""


@dataclass(frozen=True)
class ReversibilityFeatures:
    """The features (`values`, keyed by `FEATURE_NAMES`) and the per-block profiles behind them.

    `cka_forget[ℓ]`, `delta_share[ℓ]` and `fisher_change[ℓ]` are per block ℓ; `depth` is the
    forgetting depth (None: no last-k reversion restored enough) and `depth_probes` the last-k
    effects its bisection measured.
    """

    values: dict[str, Real]
    cka_forget: list[Real]
    delta_share: list[Real]
    fisher_change: list[Real]
    depth: int | None
    depth_probes: dict[int, Real]

    @property
    def n_layers(self) -> int:
        return len(self.cka_forget)

    @property
    def inputs(self) -> dict[str, float]:
        """The predictor's inputs (see `PREDICTOR_INPUTS`)."""
        return predictor_inputs(self.values)


def _log10(value: float) -> float:
    return math.log10(max(value, LOG_FLOOR)) if math.isfinite(value) else math.nan


def predictor_inputs(values: Mapping[str, float | None]) -> dict[str, float]:
    """The predictor's inputs from measured feature values (None or NaN stay NaN)."""
    v = {
        name: math.nan if (value := values[name]) is None else float(value)
        for name in FEATURE_NAMES
    }
    return {
        "log_cka_gap_lower": _log10(1.0 - v["cka_lower"]),
        "log_cka_gap_upper": _log10(1.0 - v["cka_upper"]),
        "depth_fraction": v["depth_fraction"],
        "delta_share_top": v["delta_share_top"],
        "log_delta_relative": _log10(v["delta_relative"]),
        "fisher_change": v["fisher_change"],
    }


def block_fisher_means(fisher: ModelFisher, n_layers: int) -> np.ndarray:
    """Mean Fisher value of all the linear weights of each block (float64)."""
    sums, counts = np.zeros(n_layers), np.zeros(n_layers)
    for key, values in fisher.values.items():
        layer = fisher.addresses[key][0]
        if layer is not None:
            sums[layer] += float(values.double().sum())
            counts[layer] += values.numel()
    return np.divide(sums, counts, out=np.full(n_layers, np.nan), where=counts > 0)


def _fits(taken: ModelPass | None) -> bool:
    """Whether a pass was taken with the features' settings: mean pooling, all tokens, Fisher."""
    return (
        taken is not None
        and taken.pooling == "mean"
        and taken.tokens == "all"
        and taken.fisher is not None
    )


def reversibility_features(
    original: ModelPass,
    unlearned: ModelPass,
    deltas: DeltaReport,
    depth: int | None,
    depth_probes: dict[int, float] | None = None,
) -> ReversibilityFeatures:
    """The features from the two models' passes over the forget items (with Fisher), the
    original → unlearned weight deltas and the forgetting depth."""
    if original.fisher is None or unlearned.fisher is None:
        raise ValueError(
            "reversibility features need both passes with their Fisher information (fisher=True)"
        )
    n_layers = deltas.n_layers
    # Stream ℓ + 1 is the output of block ℓ; stream 0 (the embedding) is not a block.
    cka = [
        linear_cka(original.activations[layer + 1], unlearned.activations[layer + 1], debiased=True)
        for layer in range(n_layers)
    ]
    fisher_change = [
        log10_ratio(u, r)
        for u, r in zip(
            block_fisher_means(unlearned.fisher, n_layers),
            block_fisher_means(original.fisher, n_layers),
            strict=True,
        )
    ]
    return profile_features(cka, fisher_change, deltas, depth, depth_probes)


def profile_features(
    cka_forget: Sequence[float],
    fisher_change: Sequence[float],
    deltas: DeltaReport,
    depth: int | None,
    depth_probes: Mapping[int, float] | None = None,
) -> ReversibilityFeatures:
    """The features from their per-block profiles (debiased CKA original vs unlearned and
    log10 Fisher ratio on the forget items), the weight deltas and the forgetting depth: shared
    by the measurement above and by features read off an audit's stored results."""
    n_layers = deltas.n_layers
    half = n_layers // 2
    top = math.ceil(TOP_FRACTION * n_layers)
    shares = deltas.share_by_layer()
    block_total = sum(shares)
    values = {
        "cka_lower": finite_mean(cka_forget[:half]),
        "cka_upper": finite_mean(cka_forget[half:]),
        "depth_fraction": (depth if depth is not None else n_layers + 1) / n_layers,
        "delta_share_top": sum(shares[-top:]) / block_total if block_total > 0 else math.nan,
        "delta_relative": deltas.total.relative,
        "fisher_change": finite_mean(fisher_change),
    }
    return ReversibilityFeatures(
        values=values,
        cka_forget=list(cka_forget),
        delta_share=shares,
        fisher_change=list(fisher_change),
        depth=depth,
        depth_probes=dict(depth_probes or {}),
    )


def measure_features(
    subject: Subject,
    original: Snapshot,
    forget: Sequence[Item],
    *,
    unlearned: Snapshot | None = None,
    original_pass: ModelPass | None = None,
    unlearned_pass: ModelPass | None = None,
    reverter: Reverter | None = None,
    progress: bool = False,
) -> ReversibilityFeatures:
    """Measure the features of the unlearned weights `subject` holds against the `original` snapshot.

    Whatever the caller already has saves work: `unlearned`, a snapshot of the weights `subject`
    holds; `original_pass` and `unlearned_pass`, the two models'
    [`model_pass`][unlearn_lens.diagnostics.compare.model_pass] over `forget`. A pass is used only
    if it was taken with the settings the predictor was fitted with (mean pooling over all tokens,
    with Fisher); otherwise it is taken again; `reverter`, a
    [`Reverter`][unlearn_lens.localize.reversion.Reverter] of `subject` from these unlearned weights
    to `original` over `forget`, whose measurements the caller can reuse afterwards. `subject`
    holds its unlearned weights again on return.
    """
    if unlearned is None:
        unlearned = subject.snapshot()
    original_pass, unlearned_pass = (
        p if _fits(p) else None for p in (original_pass, unlearned_pass)
    )
    if original_pass is None:
        subject.restore(original)
        try:
            original_pass = model_pass(subject, forget, progress=progress, label="original")
        finally:
            subject.restore(unlearned)
    if unlearned_pass is None:
        unlearned_pass = model_pass(subject, forget, progress=progress, label="unlearned")
    deltas = weight_deltas(subject.specs, original, unlearned)
    if reverter is None:
        reverter = Reverter(subject, original, forget, unlearned=unlearned)
    depth, probes = search_forgetting_depth(reverter)
    return reversibility_features(original_pass, unlearned_pass, deltas, depth, probes)
