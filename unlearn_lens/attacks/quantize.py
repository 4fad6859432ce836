"""Quantisation as a recovery attack: does rounding the weights bring "forgotten" facts back?

Unlearning moves most weights by far less than one step of a quantisation grid, so rounding the
unlearned model to the grid can put it back where the original rounds to (Zhang et al., ICLR
2025, "Catastrophic failure of LLM unlearning via quantization"). This module rounds every
matrix of a snapshot to nearest, in plain torch (any device, any checkpoint), in two schemes:

- `int8`: symmetric per output channel, `s = max|w| / 127`, `w' = s · clamp(round(w / s), ±127)`.
- `q4_1`: GGUF's Q4_1 (llama.cpp `quantize_row_q4_1_ref`), asymmetric in blocks of 32 along the
  input dimension: `d = (max − min) / 15`, `q = clamp(trunc((w − min) / d + 0.5), 0, 15)` (`q = 0`
  where `d = 0`), and `w' = d₁₆ · q + min₁₆`, with `d` and `min` stored in float16 as the file
  stores them. A last block shorter than 32 (an input width that is no multiple of 32, which
  GGUF refuses) is rounded on its own elements.

One-dimensional tensors (norm weights, biases) stay in full precision, as GGUF files keep them
in float32. A tied embedding is one snapshot entry, so it is rounded (and counted) once.
Rounding runs in float32 (float64 for a float64 tensor) and the result is cast back to the
tensor's dtype.

Beside the accuracies, each layer reports the share of the unlearning update `|ΔW|` smaller
than half the original's rounding step of that weight's channel or block. Where the original
sits on the grid (a model dequantised from a file of that format), such a weight rounds back
exactly onto its original value; elsewhere the share is the mechanism's upper bound, and
`same_level` says how many weights did round to the original's level and `rounds_to_original`
how many to the rounded original's value itself (a moved block minimum, maximum or channel
maximum shifts its whole grid a little).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor
from torch.nn import functional
from transformers.pytorch_utils import Conv1D

from unlearn_lens.data.loaders import ItemsLike, as_items
from unlearn_lens.evaluation import evaluate, evaluate_outcomes
from unlearn_lens.metrics.token import ItemOutcomes, TokenMetrics
from unlearn_lens.models.architecture import WeightSpec, hf_module
from unlearn_lens.models.subject import Snapshot, Subject
from unlearn_lens.schema import Real
from unlearn_lens.unlearn.relearn import RECOVERY_METRICS, recovery_ratio

SCHEMES = ("int8", "q4_1")
"""Rounding schemes: int8 symmetric per output channel, and GGUF Q4_1 (4-bit, blocks of 32)."""

Q4_1_BLOCK = 32
"""Weights per Q4_1 block, along the input dimension."""

INT8_LEVELS = 127
"""Largest int8 level used: symmetric, so −127..127 (−128 is left out)."""

Q4_1_LEVELS = 15
"""Largest 4-bit level: 16 levels, 0..15."""

_FLOAT16_MAX = torch.finfo(torch.float16).max


def _compute_dtype(weight: Tensor) -> torch.dtype:
    return torch.float64 if weight.dtype == torch.float64 else torch.float32


def _grid(weight: Tensor, scheme: str, input_axis: int) -> tuple[Tensor, Tensor, Tensor]:
    """The rounded weight and, per element, the step of its channel (int8) or block (Q4_1) and
    its integer level on that grid, all in the compute dtype and shaped like `weight`."""
    if weight.dim() != 2:
        raise ValueError(f"only matrices are rounded, got a tensor of shape {tuple(weight.shape)}")
    if scheme not in SCHEMES:
        raise ValueError(f"unknown rounding scheme {scheme!r}; known: {', '.join(SCHEMES)}")
    rows = weight.to(_compute_dtype(weight)).movedim(input_axis, -1)
    if scheme == "int8":
        scale = rows.abs().amax(dim=-1, keepdim=True) / INT8_LEVELS
        q = torch.where(scale == 0, 0.0, torch.round(rows / scale)).clamp(-INT8_LEVELS, INT8_LEVELS)
        rounded, step, level = q * scale, scale.expand_as(rows), q
    else:
        rounded, step, level = _q4_1(rows)
    return (
        rounded.movedim(-1, input_axis),
        step.movedim(-1, input_axis),
        level.movedim(-1, input_axis),
    )


def _q4_1(rows: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Q4_1 along the last axis of `rows` (llama.cpp's reference quantiser, then dequantised)."""
    n_rows, width = rows.shape
    pad = -width % Q4_1_BLOCK

    def blocks(fill: float) -> Tensor:
        """`rows` in blocks, a short last block filled with `fill` (ignored by min or max)."""
        return functional.pad(rows, (0, pad), value=fill).view(n_rows, -1, Q4_1_BLOCK)

    low = blocks(torch.inf).amin(dim=-1, keepdim=True)
    high = blocks(-torch.inf).amax(dim=-1, keepdim=True)
    d = (high - low) / Q4_1_LEVELS
    inverse = torch.where(d == 0, 0.0, 1.0 / d)
    q = torch.trunc((blocks(0.0) - low) * inverse + 0.5).clamp(0, Q4_1_LEVELS)
    if bool((d.abs() > _FLOAT16_MAX).any() or (low.abs() > _FLOAT16_MAX).any()):
        raise ValueError(
            "a block's range is beyond float16, where Q4_1 stores its scale and offset"
        )
    d16 = d.to(torch.float16).to(rows.dtype)
    low16 = low.to(torch.float16).to(rows.dtype)
    rounded = d16 * q + low16

    def unblocked(tensor: Tensor) -> Tensor:
        return tensor.reshape(n_rows, -1)[:, :width]

    return unblocked(rounded), unblocked(d16.expand_as(q)), unblocked(q)


def round_weight(weight: Tensor, scheme: str, input_axis: int = -1) -> Tensor:
    """`weight` (a matrix) rounded to nearest in `scheme`, in its own dtype and device.

    `input_axis` is the matrix's input dimension: `-1` for `nn.Linear` (`[out, in]`) and
    embeddings (`[vocab, d_model]`), `0` for GPT-2's `Conv1D` (`[in, out]`).
    """
    return _grid(weight, scheme, input_axis)[0].to(weight.dtype)


def rounding_step(weight: Tensor, scheme: str, input_axis: int = -1) -> Tensor:
    """Per element of `weight`, the step of the grid `scheme` rounds it to (its output channel's
    scale for int8, its block's float16 `d` for Q4_1), in the compute dtype."""
    return _grid(weight, scheme, input_axis)[1]


def input_axes(subject: Subject) -> dict[str, int]:
    """For each matrix weight key of `subject`, its input axis (0 for a `Conv1D`, else 1); the keys
    are the weights rounding touches."""
    axes: dict[str, int] = {}
    for spec in subject.specs:
        if subject.weight(spec.key).dim() != 2:
            continue
        module = hf_module(subject.model, spec.param.rsplit(".", 1)[0])
        axes[spec.key] = 0 if isinstance(module, Conv1D) else 1
    return axes


def round_snapshot(snapshot: Snapshot, scheme: str, axes: dict[str, int]) -> Snapshot:
    """A copy of `snapshot` with every weight in `axes` (see [`input_axes`][unlearn_lens.attacks.input_axes])
    rounded in `scheme`; every other tensor (norms, biases) is kept in full precision."""
    rounded: dict[str, Tensor] = {}
    for key, tensor in snapshot.items():
        if key not in axes:
            rounded[key] = tensor.clone()
            continue
        try:
            rounded[key] = round_weight(tensor, scheme, axes[key]).contiguous()
        except ValueError as error:
            raise ValueError(f"{key}: {error}") from None
    return rounded


@dataclass
class LayerRounding:
    """How the unlearning update of one layer's matrices meets a rounding grid.

    **Fields:** `n_weights`, matrix entries; `moved`, the share with `ΔW ≠ 0`;
    `below_half_step`, the share with `|ΔW|` below half the original's rounding step of that
    weight's channel or block, or `ΔW = 0` (a channel or block of zeros has step 0); on a grid
    the original already sits on, these round back exactly unless their block's range moved;
    `same_level`, the share that rounds to the same integer level of its channel or block as
    the original; `rounds_to_original`, the share whose rounded value equals the rounded
    original's bit for bit (a level kept on a grid that moved, because the channel's largest
    magnitude or the block's minimum or maximum moved, is not).
    """

    n_weights: int
    moved: Real
    below_half_step: Real
    same_level: Real
    rounds_to_original: Real


@dataclass
class RoundedMetrics:
    """One item set's metrics: the original and the unlearned model, each in full precision and
    rounded."""

    original: TokenMetrics
    unlearned: TokenMetrics
    original_rounded: TokenMetrics
    unlearned_rounded: TokenMetrics


@dataclass
class RoundingRecovery:
    """What rounding brought back of what unlearning removed, in one metric.

    **Fields:** `recovery = (unlearned_rounded − unlearned) / (original − unlearned)`, the
    relearning attack's scale; `recovery_rounded_reference`, the same gain over
    `original_rounded − unlearned` (the reference rounded the same way: what a rounded model
    that never unlearned knows). `None` where the loss is below `RECOVERY_MIN_LOSS`.
    """

    metric: str
    recovery: float | None
    recovery_rounded_reference: float | None


@dataclass
class SchemeResult:
    """The attack under one rounding scheme.

    **Fields:** `forget` and `retain` metrics (`retain` None without retain items); `recovery`
    per metric (`accuracy`, `exact_match`) on the forget set; `layers`, one
    [`LayerRounding`][unlearn_lens.attacks.LayerRounding] per block, `non_layer` per matrix
    outside the blocks (`embed`, `pos_embed`, `unembed`), `total` over every matrix;
    `outcomes`, the forget set's per-item outcomes of the four models (as in `forget`), for
    intervals (empty in older results).
    """

    scheme: str
    forget: RoundedMetrics
    retain: RoundedMetrics | None
    recovery: dict[str, RoundingRecovery]
    layers: list[LayerRounding]
    non_layer: dict[str, LayerRounding]
    total: LayerRounding
    outcomes: dict[str, ItemOutcomes] = field(default_factory=dict)


@dataclass
class QuantizationResult:
    """The quantisation attack under each scheme, keyed by scheme name."""

    n_forget: int
    n_retain: int
    schemes: dict[str, SchemeResult]


def _counts(
    original: Tensor, unlearned: Tensor, scheme: str, axis: int
) -> tuple[int, int, int, int, int]:
    """`(n, moved, below half a step, same level, rounds to the original)` counts of one matrix."""
    rounded_original, step, level_original = _grid(original, scheme, axis)
    rounded_unlearned, _, level_unlearned = _grid(unlearned, scheme, axis)
    delta = unlearned.to(step.dtype) - original.to(step.dtype)
    return (
        delta.numel(),
        int((delta != 0).sum()),
        int(((delta == 0) | (delta.abs() < step / 2)).sum()),
        int((level_unlearned == level_original).sum()),
        int((rounded_unlearned == rounded_original).sum()),
    )


def _layer_rounding(counts: Sequence[int]) -> LayerRounding:
    n, *counted = counts
    return LayerRounding(n, *(count / n if n else 0.0 for count in counted))


def rounding_shares(
    specs: Sequence[WeightSpec],
    axes: dict[str, int],
    original: Snapshot,
    unlearned: Snapshot,
    scheme: str,
) -> tuple[list[LayerRounding], dict[str, LayerRounding], LayerRounding]:
    """Per block, per non-layer matrix and over every matrix: how the update `unlearned −
    original` meets the original's grid in `scheme` (see [`LayerRounding`][unlearn_lens.attacks.LayerRounding])."""
    n_layers = 1 + max(spec.layer for spec in specs if spec.layer is not None)
    layer_counts = [[0] * 5 for _ in range(n_layers)]
    non_layer_counts: dict[str, list[int]] = {}
    for spec in specs:
        if spec.key not in axes:
            continue
        counts = _counts(original[spec.key], unlearned[spec.key], scheme, axes[spec.key])
        target = (
            layer_counts[spec.layer]
            if spec.layer is not None
            else non_layer_counts.setdefault(spec.component, [0] * 5)
        )
        for index, value in enumerate(counts):
            target[index] += value
    total = [sum(column) for column in zip(*layer_counts, *non_layer_counts.values(), strict=True)]
    return (
        [_layer_rounding(counts) for counts in layer_counts],
        {name: _layer_rounding(counts) for name, counts in non_layer_counts.items()},
        _layer_rounding(total),
    )


def quantization_attack(
    subject: Subject,
    original: Snapshot,
    unlearned: Snapshot,
    forget: ItemsLike,
    retain: ItemsLike | None = None,
    schemes: Sequence[str] = SCHEMES,
    original_measured: dict[str, tuple[ItemOutcomes, TokenMetrics | None]] | None = None,
) -> QuantizationResult:
    """Round the unlearned model and the original in each scheme and measure both.

    **Arguments:**

    - `subject`: the model whose weights `original` and `unlearned` are snapshots of
      (`subject.snapshot()`); it holds `unlearned` when the call returns.
    - `forget`, `retain`: items measured on each model; recovery is read on `forget`.
    - `schemes`: any of [`SCHEMES`][unlearn_lens.attacks.SCHEMES].
    - `original_measured`: the original's (forget outcomes, retain metrics) already known, by model:
      `"original"`, `"original_rounded:SCHEME"`; the call adds those it measures, so one dict
      shared by the attacks on several unlearned models of one original (on the same items)
      rounds and measures the original once per scheme.

    Deterministic: rounding has no randomness and evaluation is teacher-forced.
    """
    unknown = [scheme for scheme in schemes if scheme not in SCHEMES]
    if unknown:
        raise ValueError(f"unknown rounding scheme {unknown[0]!r}; known: {', '.join(SCHEMES)}")
    forget_items = as_items(forget)
    retain_items = as_items(retain) if retain is not None else []
    axes = input_axes(subject)

    known = {} if original_measured is None else original_measured

    def measure(snapshot: Snapshot) -> tuple[ItemOutcomes, TokenMetrics | None]:
        subject.restore(snapshot)
        return evaluate_outcomes(subject, forget_items), (
            evaluate(subject, retain_items) if retain_items else None
        )

    try:
        if "original" not in known:
            known["original"] = measure(original)
        models = {"original": known["original"], "unlearned": measure(unlearned)}
        results: dict[str, SchemeResult] = {}
        for scheme in schemes:
            name = f"original_rounded:{scheme}"
            if name not in known:
                known[name] = measure(round_snapshot(original, scheme, axes))
            models["original_rounded"] = known[name]
            models["unlearned_rounded"] = measure(round_snapshot(unlearned, scheme, axes))
            forget_metrics = RoundedMetrics(
                **{name: pair[0].metrics() for name, pair in models.items()}
            )
            retain_metrics = (
                RoundedMetrics(**{name: m for name, (_, m) in models.items() if m is not None})
                if retain_items
                else None
            )
            layers, non_layer, total = rounding_shares(
                subject.specs, axes, original, unlearned, scheme
            )
            results[scheme] = SchemeResult(
                scheme=scheme,
                forget=forget_metrics,
                retain=retain_metrics,
                recovery={metric: _recovery(forget_metrics, metric) for metric in RECOVERY_METRICS},
                layers=layers,
                non_layer=non_layer,
                total=total,
                outcomes={name: pair[0] for name, pair in models.items()},
            )
    finally:
        subject.restore(unlearned)
    return QuantizationResult(len(forget_items), len(retain_items), results)


def _recovery(metrics: RoundedMetrics, metric: str) -> RoundingRecovery:
    after, unlearned = (
        getattr(metrics.unlearned_rounded, metric),
        getattr(metrics.unlearned, metric),
    )
    return RoundingRecovery(
        metric,
        recovery_ratio(after, unlearned, getattr(metrics.original, metric)),
        recovery_ratio(after, unlearned, getattr(metrics.original_rounded, metric)),
    )
