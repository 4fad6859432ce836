"""Weight deltas between two snapshots: per weight, per layer and component, per attention head.

`ΔW = W_updated − W_reference`, measured by its Frobenius norm, its size relative to the
reference weight, and each layer's share of the whole update. Everything is computed in
float64 on CPU from snapshots (tied embeddings are stored, and so counted, once).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from pydantic import computed_field
from torch import Tensor

from unlearn_lens.models.architecture import WeightSpec
from unlearn_lens.models.subject import Snapshot
from unlearn_lens.schema import Real

HEAD_COMPONENTS = ("q", "k", "v", "o")
"""Components split per attention head (q and o by query head, k and v by key-value head)."""


@dataclass(frozen=True)
class WeightDelta:
    """`‖ΔW‖_F` of a weight (or a group of weights) and `‖W_reference‖_F`."""

    norm: Real
    reference_norm: Real

    @property
    def relative(self) -> float:
        """`‖ΔW‖ / ‖W_reference‖` (NaN when both are 0, inf when only the reference is)."""
        if self.reference_norm == 0.0:
            return math.nan if self.norm == 0.0 else math.inf
        return self.norm / self.reference_norm


@dataclass(frozen=True)
class LayerDelta:
    """The update of one transformer block.

    **Fields:** `norm` and `reference_norm` over all the block's weights; `share`, the
    block's part of the whole update's `Σ‖ΔW‖²` (layers and non-layer weights together sum
    to 1; all 0 when nothing changed); `components`, the same norms per component
    (`q`, `k`, `v`, `o`, `mlp_*`, `norm_*`; weight and bias together).
    """

    layer: int
    norm: Real
    reference_norm: Real
    share: Real
    components: dict[str, WeightDelta] = field(default_factory=dict)

    @property
    def relative(self) -> float:
        """`‖ΔW‖ / ‖W_reference‖` over the whole block."""
        return WeightDelta(self.norm, self.reference_norm).relative


@dataclass(frozen=True)
class HeadDelta:
    """The update of one head of one attention component (weight and bias slices together).

    `head` indexes query heads for `q` and `o`, key-value heads for `k` and `v`.
    """

    layer: int
    component: str
    head: int
    norm: Real
    reference_norm: Real

    @property
    def relative(self) -> float:
        """`‖ΔW_head‖ / ‖W_head‖`."""
        return WeightDelta(self.norm, self.reference_norm).relative


def kv_head_of(head: int, n_heads: int, n_kv_heads: int) -> int:
    """The key-value head a query head reads under grouped-query attention.

    Consecutive query heads share a KV head (transformers' `repeat_kv`): query head `h`
    uses KV head `h // (n_heads // n_kv_heads)`.
    """
    return head // (n_heads // n_kv_heads)


@dataclass(frozen=True)
class DeltaReport:
    """Weight deltas between two snapshots.

    **Fields:** `weights`, per canonical weight key; `layers`, one
    [`LayerDelta`][unlearn_lens.localize.LayerDelta] per block; `heads`, one
    [`HeadDelta`][unlearn_lens.localize.HeadDelta] per (layer, attention component, head);
    `non_layer`, the weights outside the blocks (`embed`, `pos_embed`, `final_norm`,
    `unembed`) by component; `total`, over every weight; `tied_embeddings`, whether the
    unembedding is the input embedding's matrix (then stored once, as `embed`).

    Every share divides by `Σ‖ΔW‖²` over the distinct weight tensors (`total`: a tied matrix
    counted once).
    """

    n_heads: int
    n_kv_heads: int
    weights: dict[str, WeightDelta]
    layers: list[LayerDelta]
    heads: list[HeadDelta]
    non_layer: dict[str, WeightDelta]
    total: WeightDelta
    tied_embeddings: bool = False

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    def relative_by_layer(self) -> list[float]:
        """`‖ΔW‖ / ‖W‖` of each block."""
        return [layer.relative for layer in self.layers]

    def share_by_layer(self) -> list[float]:
        """Each block's share of the whole update's `Σ‖ΔW‖²`."""
        return [layer.share for layer in self.layers]

    @property
    def non_layer_share(self) -> float:
        """The non-layer weights' share of the whole update (1 − Σ layer shares)."""
        total_sq = self.total.norm**2
        return sum(d.norm**2 for d in self.non_layer.values()) / total_sq if total_sq > 0 else 0.0

    def _share(self, components: Sequence[str]) -> float:
        total_sq = self.total.norm**2
        squares = sum(
            self.non_layer[name].norm ** 2 for name in components if name in self.non_layer
        )
        return squares / total_sq if total_sq > 0 else 0.0

    @computed_field  # type: ignore[prop-decorator]
    @property
    def head_share(self) -> Real:
        """The output head's share of the update: final norm and unembedding. With tied
        embeddings the unembedding *is* the embedding matrix, whose one delta is counted here
        and in `input_embedding_share` alike (so the shares then add up to more than 1)."""
        return self._share(["final_norm", "embed" if self.tied_embeddings else "unembed"])

    @computed_field  # type: ignore[prop-decorator]
    @property
    def input_embedding_share(self) -> Real:
        """The input embeddings' share of the update (token and position embeddings; a tied
        matrix's delta is also in `head_share`)."""
        return self._share(["embed", "pos_embed"])

    def query_head_norms(self) -> np.ndarray:
        """`[n_layers, n_heads]` attention update per query head, q, k, v and o together.

        A query head owns its q and o slices; a key-value head is shared by
        `n_heads / n_kv_heads` query heads, so its `‖Δk‖² + ‖Δv‖²` is split equally among
        them. Squared entries of a row therefore sum to the layer's `‖Δq‖² + ‖Δk‖² + ‖Δv‖² +
        ‖Δo‖²` over head-split weights (the o bias has no heads and is left out).
        """
        squares = np.zeros((self.n_layers, self.n_heads))
        group = self.n_heads // self.n_kv_heads
        for head in self.heads:
            if head.component in ("q", "o"):
                squares[head.layer, head.head] += head.norm**2
            else:
                for query in range(head.head * group, (head.head + 1) * group):
                    squares[head.layer, query] += head.norm**2 / group
        return np.sqrt(squares)


def _float64(snapshot: Snapshot, name: str, key: str) -> Tensor:
    """One weight of a snapshot in float64 on CPU, with a clear error when it is missing."""
    if key not in snapshot:
        raise KeyError(
            f"{name} snapshot has no weight {key!r}: take every snapshot from the same subject"
        )
    return snapshot[key].detach().to("cpu", torch.float64)


def _pair(reference: Snapshot, updated: Snapshot, key: str) -> tuple[Tensor, Tensor]:
    """Reference weight and its delta, float64 on CPU."""
    ref = _float64(reference, "reference", key)
    new = _float64(updated, "updated", key)
    if ref.shape != new.shape:
        raise ValueError(
            f"{key} is {tuple(ref.shape)} in the reference but {tuple(new.shape)} in the update"
        )
    return ref, new - ref


def n_layers_of(specs: Sequence[WeightSpec]) -> int:
    """How many blocks the weight specs address."""
    return 1 + max(spec.layer for spec in specs if spec.layer is not None)


def head_counts_of(specs: Sequence[WeightSpec]) -> tuple[int, int]:
    """`(n_heads, n_kv_heads)` read from the q and k specs."""
    by_component = {spec.component: spec.n_heads for spec in specs if spec.head_axis is not None}
    return by_component["q"], by_component["k"]


def weight_deltas(
    specs: Sequence[WeightSpec], reference: Snapshot, updated: Snapshot
) -> DeltaReport:
    """Deltas `updated − reference` per weight, per layer and component, and per head.

    **Arguments:**

    - `specs`: the subject's weight addresses (`subject.specs`).
    - `reference`, `updated`: snapshots of the same subject (`subject.snapshot()`), e.g.
      original and unlearned.
    """
    n_layers = n_layers_of(specs)
    n_heads, n_kv_heads = head_counts_of(specs)
    weights: dict[str, WeightDelta] = {}
    layer_sq = np.zeros((n_layers, 2))
    component_sq: list[dict[str, np.ndarray]] = [{} for _ in range(n_layers)]
    head_sq: dict[tuple[int, str, int], np.ndarray] = {}
    non_layer_sq: dict[str, np.ndarray] = {}
    for spec in specs:
        ref, delta = _pair(reference, updated, spec.key)
        squares = np.array([float(delta.square().sum()), float(ref.square().sum())])
        weights[spec.key] = WeightDelta(*np.sqrt(squares).tolist())
        if spec.layer is None:
            non_layer_sq[spec.component] = non_layer_sq.get(spec.component, np.zeros(2)) + squares
            continue
        layer_sq[spec.layer] += squares
        comps = component_sq[spec.layer]
        comps[spec.component] = comps.get(spec.component, np.zeros(2)) + squares
        if spec.component in HEAD_COMPONENTS and spec.head_axis is not None:
            for head in range(spec.n_heads):
                address = (spec.layer, spec.component, head)
                pair = np.array(
                    [
                        float(spec.head_view(delta, head).square().sum()),
                        float(spec.head_view(ref, head).square().sum()),
                    ]
                )
                head_sq[address] = head_sq.get(address, np.zeros(2)) + pair
    total_sq = layer_sq.sum(axis=0) + sum(non_layer_sq.values(), np.zeros(2))
    layers = [
        LayerDelta(
            layer=index,
            norm=math.sqrt(layer_sq[index, 0]),
            reference_norm=math.sqrt(layer_sq[index, 1]),
            share=layer_sq[index, 0] / total_sq[0] if total_sq[0] > 0 else 0.0,
            components={
                name: WeightDelta(*np.sqrt(sq).tolist()) for name, sq in component_sq[index].items()
            },
        )
        for index in range(n_layers)
    ]
    heads = [
        HeadDelta(layer, comp, head, *np.sqrt(sq).tolist())
        for (layer, comp, head), sq in head_sq.items()
    ]
    return DeltaReport(
        n_heads=n_heads,
        n_kv_heads=n_kv_heads,
        weights=weights,
        layers=layers,
        heads=heads,
        non_layer={name: WeightDelta(*np.sqrt(sq).tolist()) for name, sq in non_layer_sq.items()},
        total=WeightDelta(*np.sqrt(total_sq).tolist()),
        # Every supported family has an unembedding; it has no spec of its own exactly when tied.
        tied_embeddings=not any(spec.component == "unembed" for spec in specs),
    )


@dataclass(frozen=True)
class UpdateDirections:
    """How relearning moves relative to unlearning, per layer and overall.

    **Fields:** `cosine[ℓ]`, cosine between `Δ_unlearn = unlearned − original` and
    `Δ_relearn = relearned − unlearned` over block ℓ's weights (negative: relearning walks
    back); `undone[ℓ]`, the fraction of `Δ_unlearn` undone, `⟨Δ_relearn, −Δ_unlearn⟩ /
    ‖Δ_unlearn‖²` (1: relearning reverses unlearning exactly along its direction); the
    `overall_*` fields are the same over every weight. NaN where a delta is zero.
    """

    cosine: list[Real]
    undone: list[Real]
    overall_cosine: Real
    overall_undone: Real


def _directions(sums: np.ndarray) -> tuple[float, float]:
    """Cosine and fraction undone from `[⟨u, r⟩, ‖u‖², ‖r‖²]`."""
    dot, uu, rr = sums
    cosine = dot / math.sqrt(uu * rr) if uu > 0 and rr > 0 else math.nan
    undone = -dot / uu if uu > 0 else math.nan
    return float(cosine), float(undone)


def update_cosines(
    specs: Sequence[WeightSpec], original: Snapshot, unlearned: Snapshot, relearned: Snapshot
) -> UpdateDirections:
    """Per-layer direction of relearning against unlearning (see
    [`UpdateDirections`][unlearn_lens.localize.UpdateDirections]), in float64."""
    n_layers = n_layers_of(specs)
    sums = np.zeros((n_layers, 3))
    overall = np.zeros(3)
    for spec in specs:
        _, unlearn = _pair(original, unlearned, spec.key)
        _, relearn = _pair(unlearned, relearned, spec.key)
        row = np.array(
            [
                float((unlearn * relearn).sum()),
                float(unlearn.square().sum()),
                float(relearn.square().sum()),
            ]
        )
        overall += row
        if spec.layer is not None:
            sums[spec.layer] += row
    per_layer = [_directions(row) for row in sums]
    overall_cosine, overall_undone = _directions(overall)
    return UpdateDirections(
        cosine=[c for c, _ in per_layer],
        undone=[u for _, u in per_layer],
        overall_cosine=overall_cosine,
        overall_undone=overall_undone,
    )
