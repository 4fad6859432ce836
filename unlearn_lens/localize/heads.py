"""Attention heads seen one by one: a layer × head table of weight deltas and reversion effects.

Delta norms cover every layer; single-head reversions, one evaluation each, are run only for
the few layers that matter most (largest share of the update, or largest reversion effect).
Heads are query heads: a key-value head shared by a group of query heads under grouped-query
attention is split among them for the norms and reverted with each of them (see
[`DeltaReport.query_head_norms`][unlearn_lens.localize.DeltaReport.query_head_norms] and
[`query_heads_patch`][unlearn_lens.localize.query_heads_patch]).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from unlearn_lens.localize.deltas import DeltaReport
from unlearn_lens.localize.reversion import ReversionSweep, Reverter, query_heads_patch
from unlearn_lens.schema import Real

TOP_LAYERS = 3
"""Layers whose heads are reverted one by one by default: each head costs one evaluation, so
three layers of SmolLM2 (27 heads, 64 items) take about 45 s on an idle 2-core CPU."""

HeadRanking = Literal["delta_share", "reversion"]


@dataclass(frozen=True)
class HeadAttribution:
    """Per query head: the weight delta of every layer, the reversion effects of a few.

    **Fields:** `delta_norms[ℓ][h]`; `reversion_layers`, the layers whose heads were
    reverted one at a time, chosen by `ranked_by`; `reversion_accuracy[i][h]` and
    `reversion_nll[i][h]`, the restoration effects of reverting head h of
    `reversion_layers[i]` alone.
    """

    delta_norms: list[list[Real]]
    reversion_layers: list[int]
    reversion_accuracy: list[list[Real]]
    reversion_nll: list[list[Real]]
    ranked_by: str

    def matrix(
        self, kind: Literal["delta", "reversion_nll", "reversion_accuracy"] = "delta"
    ) -> np.ndarray:
        """`[n_layers, n_heads]` array for a heatmap; reversion rows not measured are NaN."""
        deltas = np.asarray(self.delta_norms, dtype=np.float64)
        if kind == "delta":
            return deltas
        rows = {
            "reversion_nll": self.reversion_nll,
            "reversion_accuracy": self.reversion_accuracy,
        }.get(kind)
        if rows is None:
            raise ValueError(
                f"unknown matrix {kind!r}; use 'delta', 'reversion_nll' or 'reversion_accuracy'"
            )
        matrix = np.full(deltas.shape, np.nan)
        for layer, values in zip(self.reversion_layers, rows, strict=True):
            matrix[layer] = values
        return matrix


def top_layers(
    deltas: DeltaReport, sweep: ReversionSweep | None, n_layers: int, ranked_by: HeadRanking
) -> list[int]:
    """The `n_layers` layers with the largest delta share or reversion effect (NaN last)."""
    if ranked_by == "delta_share":
        scores = np.asarray(deltas.share_by_layer())
    elif ranked_by == "reversion":
        if sweep is None:
            raise ValueError("ranked_by='reversion' needs the reversion sweep (sweep=...)")
        scores = np.asarray(sweep.layer_effects())
    else:
        raise ValueError(f"ranked_by must be 'delta_share' or 'reversion', got {ranked_by!r}")
    order = np.argsort(-np.nan_to_num(scores, nan=-np.inf), kind="stable")
    return sorted(int(layer) for layer in order[:n_layers])


def head_attribution(
    deltas: DeltaReport,
    reverter: Reverter | None = None,
    *,
    sweep: ReversionSweep | None = None,
    n_layers: int = TOP_LAYERS,
    ranked_by: HeadRanking = "delta_share",
    progress: bool = True,
) -> HeadAttribution:
    """The layer × head table: delta norms everywhere, single-head reversions in the top layers.

    **Arguments:**

    - `deltas`: original → unlearned weight deltas.
    - `reverter`: measures reversions; without it only delta norms are filled in.
    - `sweep`: the reversion sweep, needed when `ranked_by="reversion"`.
    - `n_layers`: how many layers get single-head reversions.
    """
    layers = top_layers(deltas, sweep, n_layers, ranked_by) if reverter is not None else []
    accuracy: list[list[float]] = []
    nll: list[list[float]] = []
    if reverter is not None:
        subject = reverter.subject
        patches = [
            query_heads_patch(subject, [(layer, head)])
            for layer in layers
            for head in range(deltas.n_heads)
        ]
        results = reverter.measure_all(patches, progress=progress, description="head reversion")
        for start in range(0, len(results), deltas.n_heads):
            row = results[start : start + deltas.n_heads]
            accuracy.append([r.effect_accuracy for r in row])
            nll.append([r.effect_nll for r in row])
    return HeadAttribution(
        delta_norms=deltas.query_head_norms().tolist(),
        reversion_layers=layers,
        reversion_accuracy=accuracy,
        reversion_nll=nll,
        ranked_by=ranked_by,
    )
