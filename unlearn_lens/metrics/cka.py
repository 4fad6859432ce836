"""Linear CKA between two activation sets, biased (Kornblith et al. 2019) and debiased.

Both estimators need only three Frobenius inner products of the linear Gram matrices,
`<K, L>`, `<K, K>` and `<L, L>` with `K = X Xᵀ`, `L = Y Yᵀ`, plus the squared row norms
(the Gram diagonals). Each inner product is computed either in sample space (`n × n`
Gram matrices) or in feature space (`||Xᵀ Y||²_F`), whichever is cheaper; the two give
the same number.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

MIN_DEBIASED_SAMPLES = 4
"""The unbiased HSIC estimator divides by `n (n - 3)` and `n - 2`, so it needs `n >= 4`."""

_HSIC_RTOL = 1e-10
"""The unbiased HSIC adds terms as large as `||K||²_F` with both signs; a self-HSIC below
this fraction of `||K||²_F / (n (n - 3))` is rounding noise around 0."""

_CONSTANT_RTOL = 1e-12
"""Centring in float64 leaves residues near 1e-16 of the data's size; a centred norm below
this fraction of the raw norm means the input is constant across samples."""


@dataclass(frozen=True)
class CKAResult:
    """Biased and debiased linear CKA of the same pair of activation sets."""

    biased: float
    debiased: float


@dataclass(frozen=True)
class _GramStatistics:
    """What both CKA estimators need from a pair of column-centred matrices."""

    n: int
    kl: float
    kk: float
    ll: float
    x_row_sq: Float[Tensor, " n"]
    y_row_sq: Float[Tensor, " n"]


def _centred_float64(X: Tensor, Y: Tensor, *, debiased: bool) -> tuple[Tensor, Tensor] | None:
    """Validate, cast to float64 and centre the columns; `None` (after a warning) if constant."""
    if X.ndim != 2 or Y.ndim != 2:
        raise ValueError(
            f"CKA needs 2-D activations [n_samples, n_features], got shapes {tuple(X.shape)} "
            f"and {tuple(Y.shape)}"
        )
    n = X.shape[0]
    if Y.shape[0] != n:
        raise ValueError(
            f"CKA compares the same samples in two spaces, but X has {n} rows and Y has "
            f"{Y.shape[0]}"
        )
    if debiased and n < MIN_DEBIASED_SAMPLES:
        raise ValueError(f"debiased CKA needs at least {MIN_DEBIASED_SAMPLES} samples, got {n}")
    X = X.detach().to(torch.float64)
    Y = Y.detach().to(torch.float64)
    if not (torch.isfinite(X).all() and torch.isfinite(Y).all()):
        raise ValueError("CKA inputs contain NaN or infinite values")
    Xc = X - X.mean(dim=0, keepdim=True)
    Yc = Y - Y.mean(dim=0, keepdim=True)
    for name, raw, centred in (("X", X, Xc), ("Y", Y, Yc)):
        if torch.linalg.norm(centred) <= _CONSTANT_RTOL * torch.linalg.norm(raw):
            warnings.warn(
                f"CKA is undefined (0/0): {name} is the same for every sample, so it has no "
                "variance to compare; returning 0.0. If these are token-0 activations of prompts "
                "that share a first token, pool over real tokens instead.",
                UserWarning,
                stacklevel=2,
            )
            return None
    return Xc, Yc


def _gram_statistics(Xc: Tensor, Yc: Tensor) -> _GramStatistics:
    """Gram inner products in sample space (`n² (d1 + d2)` flops) or feature space
    (`n (d1² + d1 d2 + d2²)` flops), whichever is cheaper."""
    n, d1 = Xc.shape
    d2 = Yc.shape[1]
    if n * (d1 + d2) < d1 * d1 + d1 * d2 + d2 * d2:
        K = Xc @ Xc.T
        L = Yc @ Yc.T
        kl, kk, ll = (K * L).sum(), (K * K).sum(), (L * L).sum()
    else:
        kl = torch.linalg.matrix_norm(Xc.T @ Yc) ** 2
        kk = torch.linalg.matrix_norm(Xc.T @ Xc) ** 2
        ll = torch.linalg.matrix_norm(Yc.T @ Yc) ** 2
    return _GramStatistics(
        n=n,
        kl=float(kl),
        kk=float(kk),
        ll=float(ll),
        x_row_sq=(Xc * Xc).sum(dim=1),
        y_row_sq=(Yc * Yc).sum(dim=1),
    )


def _biased_cka(stats: _GramStatistics) -> float:
    return stats.kl / math.sqrt(stats.kk * stats.ll)


def _unbiased_hsic(kl: float, a: Tensor, b: Tensor, n: int) -> float:
    """Song et al. (2012) unbiased HSIC of linear kernels on column-centred data.

    With `K̃`, `L̃` the Gram matrices with zeroed diagonals (`a`, `b` the removed diagonals)
    and centred columns (`K 1 = 0`): `tr(K̃ L̃) = <K, L> - aᵀb`, `1ᵀ K̃ 1 = -Σa` and
    `1ᵀ K̃ L̃ 1 = aᵀb`, so no `n × n` matrix is needed.
    """
    ab = float(a @ b)
    sum_a, sum_b = float(a.sum()), float(b.sum())
    return (kl - ab + sum_a * sum_b / ((n - 1) * (n - 2)) - 2.0 * ab / (n - 2)) / (n * (n - 3))


def _debiased_cka(stats: _GramStatistics) -> float:
    a, b, n = stats.x_row_sq, stats.y_row_sq, stats.n
    hsic_xy = _unbiased_hsic(stats.kl, a, b, n)
    hsic_xx = _unbiased_hsic(stats.kk, a, a, n)
    hsic_yy = _unbiased_hsic(stats.ll, b, b, n)
    for name, hsic, gram_sq in (("X", hsic_xx, stats.kk), ("Y", hsic_yy, stats.ll)):
        if hsic * n * (n - 3) <= _HSIC_RTOL * gram_sq:
            warnings.warn(
                f"debiased CKA is undefined: the unbiased self-HSIC of {name} is {hsic:.3g}, "
                "not positive beyond rounding, as when all samples but one are identical; "
                "returning 0.0. The biased CKA is still defined; more varied samples fix it.",
                UserWarning,
                stacklevel=2,
            )
            return 0.0
    return hsic_xy / math.sqrt(hsic_xx * hsic_yy)


def linear_cka(X: Float[Tensor, "n d1"], Y: Float[Tensor, "n d2"], debiased: bool = False) -> float:
    """Linear CKA between two representations of the same `n` samples.

    The biased estimator is Kornblith et al. (2019) on column-centred data; it is inflated
    when `n` is small against the widths. The debiased one replaces each HSIC by the
    unbiased estimator of Song et al. (2012), as in Nguyen et al. (2021); it is near 0 for
    independent inputs at any `n`, can be slightly negative, and is returned as is.
    Computed in float64.

    **Arguments:**

    - `X`, `Y`: activations, one row per sample (rows must correspond).
    - `debiased`: use the unbiased HSIC estimator (needs `n >= 4`).

    **Returns:** the CKA value; 0.0, with a `UserWarning`, when it is undefined (an input
    constant across samples).
    """
    centred = _centred_float64(X, Y, debiased=debiased)
    if centred is None:
        return 0.0
    stats = _gram_statistics(*centred)
    return _debiased_cka(stats) if debiased else _biased_cka(stats)


def cka_both(X: Float[Tensor, "n d1"], Y: Float[Tensor, "n d2"]) -> CKAResult:
    """Biased and debiased linear CKA from one pass, for reports that show them side by side.

    Same definitions, errors and warnings as [`linear_cka`][unlearn_lens.metrics.linear_cka].
    """
    centred = _centred_float64(X, Y, debiased=True)
    if centred is None:
        return CKAResult(biased=0.0, debiased=0.0)
    stats = _gram_statistics(*centred)
    return CKAResult(biased=_biased_cka(stats), debiased=_debiased_cka(stats))
