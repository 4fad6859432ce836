"""Diagonal empirical Fisher information from per-example gradients, and its per-layer summary.

`F_i = E_x[(∂ log p_θ(x) / ∂θ_i)²]` squares each example's own gradient; the square of a
batch-mean gradient is a different (and much smaller) quantity. For a linear layer the
per-example weight gradient is `Σ_t g_t ⊗ a_t` over the example's tokens, with `a_t` the
layer's input and `g_t` the gradient at its output, both available from one batched
backward pass (the trick Opacus and BackPACK use).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Annotated

import numpy as np
import torch
from jaxtyping import Bool, Float
from pydantic import BeforeValidator, PlainSerializer
from torch import Tensor

from unlearn_lens.schema import Real

QUANTILE_LEVELS = (0.05, 0.25, 0.75, 0.95)
"""Quantiles reported by [`summarise_fisher`][unlearn_lens.metrics.summarise_fisher]:
the body (quartiles) and the tails (5 % and 95 %) of a layer's distribution."""

QuantileTable = Annotated[
    dict[float, Real],
    PlainSerializer(lambda table: [[level, value] for level, value in table.items()]),
    BeforeValidator(lambda data: dict(data) if isinstance(data, list) else data),
]
"""Level → value; written as `[level, value]` pairs (JSON object keys cannot be numbers)."""


def per_example_linear_grad_sq(
    inputs: Float[Tensor, "batch seq d_in"],
    grad_outputs: Float[Tensor, "batch seq d_out"],
    token_mask: Bool[Tensor, "batch seq"] | None = None,
) -> Float[Tensor, "d_out d_in"]:
    """Sum over examples of the squared per-example weight gradient of a linear layer.

    Returns `Σ_b (Σ_t m[b, t] · g[b, t] ⊗ a[b, t])²` (square taken elementwise), laid out
    like `torch.nn.Linear.weight`, `[d_out, d_in]`, as float64. Divide the sum, accumulated
    over all batches, by the number of examples to get the diagonal empirical Fisher.

    The output gradients must come from one backward pass of the *sum* over examples of
    each example's log-likelihood (or NLL: the sign is squared away), not of a batch mean;
    a mean scales every per-example gradient by `1 / batch`.

    **Precision.** The work runs in the inputs' precision, at least float32: float64 when
    either tensor is float64, otherwise float32 (bfloat16 and float16 are upcast). Each
    example's gradient is one matrix product whose square is added in place to a running
    sum, so the scratch memory is two `[d_out, d_in]` buffers whatever the batch size. In
    float32, each per-example gradient entry carries a rounding error of at most about
    `seq · 2⁻²⁴ · Σ_t |g_t| |a_t|` (summation over tokens), and the sum over the batch's
    non-negative squares adds a relative error of at most `batch · 2⁻²⁴`; against a float64
    computation the relative difference is ~1e-6 except where a per-example gradient
    nearly cancels to 0, and then the absolute difference is tiny.

    **Arguments:**

    - `inputs`: the layer's input activations `a`, per token.
    - `grad_outputs`: the gradients `g` of the loss with respect to the layer's output.
    - `token_mask`: tokens that belong to their example (`False` for padding); `None`
      counts every token.
    """
    if inputs.ndim != 3 or grad_outputs.ndim != 3 or inputs.shape[:2] != grad_outputs.shape[:2]:
        raise ValueError(
            "inputs and grad_outputs must be [batch, seq, features] with the same batch and seq, "
            f"got {tuple(inputs.shape)} and {tuple(grad_outputs.shape)}"
        )
    if token_mask is not None and token_mask.shape != inputs.shape[:2]:
        raise ValueError(
            f"token_mask must be [batch, seq] = {tuple(inputs.shape[:2])}, got {tuple(token_mask.shape)}"
        )
    dtype = torch.promote_types(
        torch.promote_types(inputs.dtype, grad_outputs.dtype), torch.float32
    )
    a = inputs.detach().to(dtype)
    g = grad_outputs.detach().to(dtype)
    if token_mask is not None:
        g = g * token_mask.to(device=g.device, dtype=dtype).unsqueeze(-1)
    # One example at a time: an [d_out, d_in] gradient stays in cache between the product
    # and the square-and-add, which beats a batched product by 2-3x on CPU.
    total = torch.zeros(g.shape[-1], a.shape[-1], dtype=dtype, device=a.device)
    per_example = torch.empty_like(total)
    for g_example, a_example in zip(g, a, strict=True):
        torch.mm(g_example.T, a_example, out=per_example)
        total.addcmul_(per_example, per_example)
    return total.to(torch.float64)


@dataclass(frozen=True)
class FisherSummary:
    """One layer's Fisher values in a few numbers and a log-scale histogram.

    **Fields:**

    - `n`: number of values; `n_zero`: how many are exactly 0 (no sensitivity at all).
    - `mean`, `median`, `quantiles` (level → value, levels
      [`QUANTILE_LEVELS`][unlearn_lens.metrics.QUANTILE_LEVELS]): over all values, zeros
      included; quantiles interpolate linearly, as numpy's default.
    - `edges`: log10-spaced histogram edges (`bins + 1`; empty when no value is positive);
      `counts`: positive values per bin, each bin `[edges[i], edges[i + 1])`, the last closed.
    - `n_below`, `n_above`: positive values outside the edges (only with a `value_range`).
    """

    n: int
    n_zero: int
    mean: Real
    median: Real
    quantiles: QuantileTable
    edges: tuple[float, ...]
    counts: tuple[int, ...]
    n_below: int
    n_above: int


@dataclass(frozen=True)
class FisherComparison:
    """How a layer's Fisher distribution changed between two models (original → updated).

    **Fields:**

    - `log10_mean_ratio`: `log10(mean_updated / mean_original)`; negative means the layer
      lost sensitivity. `log10_median_ratio`: the same for medians. Both are 0 when the two
      values are equal (zeros included) and ±inf when only one is 0.
    - `histogram_tv_distance`: total-variation distance, in [0, 1], between the two
      histograms as proportions, with zeros and out-of-range values as extra bins.
    - `ks_statistic`: two-sample Kolmogorov–Smirnov statistic (largest gap between the
      empirical CDFs) of the raw values; `None` when only summaries were given.
    - `original`, `updated`: the two summaries, on the same bins.
    """

    log10_mean_ratio: Real
    log10_median_ratio: Real
    histogram_tv_distance: Real
    ks_statistic: float | None
    original: FisherSummary
    updated: FisherSummary


def shared_value_range(*values: Tensor | FisherProfile) -> tuple[float, float] | None:
    """Smallest positive and largest value over several Fisher tensors (or their profiles), or
    `None` if no value is positive.

    Pass it as `value_range` to [`summarise_fisher`][unlearn_lens.metrics.summarise_fisher]
    for each tensor so that their histograms share the same bins.
    """
    ranges = [
        (v if isinstance(v, FisherProfile) else FisherProfile.of(v)).positive_range for v in values
    ]
    found = [r for r in ranges if r is not None]
    if not found:
        return None
    return min(low for low, _ in found), max(high for _, high in found)


def _order_statistics(values: Tensor, ranks: set[int]) -> dict[int, float]:
    """The values at some ranks of the ascending order, by one partial partition in numpy (O(n),
    no full sort, no size limit), in the values' own precision: converting to float64 is exact
    and keeps the order, so float32 values need no float64 copy."""
    ordered = np.partition(values.cpu().numpy(), sorted(ranks))
    return {rank: float(ordered[rank]) for rank in ranks}


def _checked_values(values: Tensor) -> Tensor:
    """Flat values in float32 or float64 (half precisions upcast exactly), checked as Fisher values."""
    flat = values.detach().flatten()
    if flat.dtype not in (torch.float32, torch.float64):
        flat = flat.to(torch.float32)
    if flat.numel() == 0:
        raise ValueError("no Fisher values to summarise (empty tensor)")
    if not torch.isfinite(flat).all():
        raise ValueError("Fisher values contain NaN or infinite values")
    if flat.min() < 0:
        raise ValueError(
            f"Fisher values are squared gradients and cannot be negative, got minimum {float(flat.min()):.3g}"
        )
    return flat


def _log_edges(value_range: tuple[float, float], bins: int, device: torch.device) -> Tensor:
    low, high = value_range
    if not 0 < low <= high:
        raise ValueError(
            f"value_range must satisfy 0 < low <= high for a log-scale histogram, got {value_range}"
        )
    if low == high:
        # A single positive value: give it a bin one decade wide around it.
        low, high = low / math.sqrt(10.0), high * math.sqrt(10.0)
    edges = torch.logspace(
        math.log10(low), math.log10(high), bins + 1, dtype=torch.float64, device=device
    )
    # Pin the ends exactly, so that rounding in 10**x cannot push the extremes out of range.
    edges[0], edges[-1] = low, high
    return edges


@dataclass(frozen=True)
class FisherProfile:
    """One tensor's Fisher values with the statistics that do not depend on a histogram's range.

    The quantiles are what a summary costs most (a partition of every value); a model compared
    with several others (the original with each of its updates) is profiled once and then costs
    one pass over its values per histogram.

    **Fields:** `values` (the tensors profiled as one set, flattened views: no copy is kept),
    `n`, `n_zero`, `mean`, `median`, `quantiles` (as in
    [`FisherSummary`][unlearn_lens.metrics.FisherSummary]) and `positive_range`, the smallest
    positive and the largest value (`None` if none is positive).
    """

    values: tuple[Tensor, ...]
    n: int
    n_zero: int
    mean: float
    median: float
    quantiles: dict[float, float]
    positive_range: tuple[float, float] | None

    @classmethod
    def of(cls, *values: Float[Tensor, ...]) -> FisherProfile:
        """Check and profile non-negative, finite Fisher values: one tensor, or several as one set
        (a layer's matrices), of any shapes."""
        flat = _checked_values(
            torch.cat([v.detach().flatten() for v in values]) if len(values) > 1 else values[0]
        )
        n, n_zero = flat.numel(), int((flat == 0).sum())
        # Linear interpolation between the order statistics around level · (n - 1) (numpy's
        # default); rank n_zero is the smallest positive value and rank n - 1 the largest.
        positions = {level: level * (n - 1) for level in (0.5, *QUANTILE_LEVELS)}
        ranks = {n - 1, min(n_zero, n - 1)}
        for position in positions.values():
            ranks |= {math.floor(position), min(math.floor(position) + 1, n - 1)}
        order = _order_statistics(flat, ranks)

        def quantile(position: float) -> float:
            below = math.floor(position)
            low, high = order[below], order[min(below + 1, n - 1)]
            return low + (position - below) * (high - low)

        median, *quantiles = (quantile(position) for position in positions.values())
        positive_range = (order[n_zero], order[n - 1]) if n_zero < n else None
        return cls(
            values=tuple(v.detach().flatten() for v in values),
            n=n,
            n_zero=n_zero,
            mean=float(flat.sum(dtype=torch.float64)) / n,
            median=median,
            quantiles=dict(zip(QUANTILE_LEVELS, quantiles, strict=True)),
            positive_range=positive_range,
        )

    def summary(
        self, bins: int = 30, value_range: tuple[float, float] | None = None
    ) -> FisherSummary:
        """The [`FisherSummary`][unlearn_lens.metrics.FisherSummary] with a log-scale histogram
        of `bins` bins between `value_range` (default: this tensor's `positive_range`)."""
        if bins < 1:
            raise ValueError(f"bins must be at least 1, got {bins}")
        value_range = value_range if value_range is not None else self.positive_range
        if value_range is None:
            warnings.warn(
                f"all {self.n} Fisher values are 0 (no parameter affects the log-likelihood "
                "of these examples): the log-scale histogram is empty.",
                UserWarning,
                stacklevel=2,
            )
            edges: tuple[float, ...] = ()
            counts: tuple[int, ...] = ()
            n_below, n_above = 0, 0
        else:
            edge_tensor = _log_edges(value_range, bins, self.values[0].device)
            # One bucketize of every value: slot 0 is below the first edge (zeros included),
            # slot bins + 1 at or above the last, which closes the last bin.
            slots, on_last_edge = torch.zeros(bins + 2, dtype=torch.int64), 0
            for part in self.values:
                flat = part.to(torch.float64)
                slots += torch.bincount(
                    torch.bucketize(flat, edge_tensor, right=True), minlength=bins + 2
                ).cpu()
                on_last_edge += int((flat == edge_tensor[-1]).sum())
            slot_counts: list[int] = slots.tolist()
            counts = (*slot_counts[1:bins], slot_counts[bins] + on_last_edge)
            edges, n_below, n_above = (
                tuple(edge_tensor.tolist()),
                slot_counts[0] - self.n_zero,
                slot_counts[bins + 1] - on_last_edge,
            )
        return FisherSummary(
            n=self.n,
            n_zero=self.n_zero,
            mean=self.mean,
            median=self.median,
            quantiles=dict(self.quantiles),
            edges=edges,
            counts=tuple(counts),
            n_below=n_below,
            n_above=n_above,
        )


def summarise_fisher(
    values: Float[Tensor, ...], bins: int = 30, value_range: tuple[float, float] | None = None
) -> FisherSummary:
    """Summarise one layer's Fisher values (any shape; flattened): mean, median, quantiles
    and a log10-spaced histogram of the positive values.

    **Arguments:**

    - `values`: non-negative Fisher values.
    - `bins`: number of histogram bins.
    - `value_range`: `(low, high)`, positive, the histogram's outer edges; `None` uses this
      tensor's smallest positive and largest value. Give two models the same range (see
      [`shared_value_range`][unlearn_lens.metrics.shared_value_range]) to compare them.
    """
    return FisherProfile.of(values).summary(bins, value_range)


def log10_ratio(updated: float, original: float) -> float:
    """`log10(updated / original)`: 0 when equal (zeros included), ±inf when only one is 0."""
    if updated == original:
        return 0.0
    if original == 0.0:
        return math.inf
    if updated == 0.0:
        return -math.inf
    return math.log10(updated / original)


def _histogram_tv_distance(original: FisherSummary, updated: FisherSummary) -> float:
    """`½ Σ |p - q|` over all bins, in exact integer arithmetic until one final division."""

    def bins(summary: FisherSummary) -> tuple[int, ...]:
        return (summary.n_zero, summary.n_below, *summary.counts, summary.n_above)

    gap = sum(
        abs(p * updated.n - q * original.n)
        for p, q in zip(bins(original), bins(updated), strict=True)
    )
    return gap / (2 * original.n * updated.n)


def _ks_statistic(original: Tensor, updated: Tensor) -> float:
    original, updated = original.sort().values, updated.sort().values
    grid = torch.cat([original, updated])
    cdf_original = (
        torch.searchsorted(original, grid, right=True).to(torch.float64) / original.numel()
    )
    cdf_updated = torch.searchsorted(updated, grid, right=True).to(torch.float64) / updated.numel()
    return float((cdf_original - cdf_updated).abs().max())


def compare_fisher(
    original: FisherSummary | Tensor, updated: FisherSummary | Tensor, bins: int = 30
) -> FisherComparison:
    """Compare two models' Fisher distributions for one layer (e.g. original vs unlearned).

    Give either both raw value tensors (summarised here on shared bins, `bins` of them;
    the KS statistic is exact) or both summaries made with the same edges (`bins` is then
    unused and `ks_statistic` is `None`).
    """
    if isinstance(original, Tensor) and isinstance(updated, Tensor):
        value_range = shared_value_range(original, updated)
        original_summary = summarise_fisher(original, bins, value_range)
        updated_summary = summarise_fisher(updated, bins, value_range)
        ks = _ks_statistic(_checked_values(original).double(), _checked_values(updated).double())
    elif isinstance(original, FisherSummary) and isinstance(updated, FisherSummary):
        if original.edges != updated.edges:
            raise ValueError(
                "the two Fisher summaries have different histogram edges; summarise both with "
                "the same bins and value_range=shared_value_range(original, updated), or pass "
                "the raw values"
            )
        original_summary, updated_summary, ks = original, updated, None
    else:
        raise TypeError(
            "compare_fisher needs two Fisher value tensors or two FisherSummary objects, got "
            f"{type(original).__name__} and {type(updated).__name__}"
        )
    return FisherComparison(
        log10_mean_ratio=log10_ratio(updated_summary.mean, original_summary.mean),
        log10_median_ratio=log10_ratio(updated_summary.median, original_summary.median),
        histogram_tv_distance=_histogram_tv_distance(original_summary, updated_summary),
        ks_statistic=ks,
        original=original_summary,
        updated=updated_summary,
    )
