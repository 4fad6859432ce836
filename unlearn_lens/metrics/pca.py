"""PCA-based comparisons of two activation sets: PC similarity, PCA shift and PCA distance.

PCA is fitted with `torch.linalg.svd` on column-centred float64 data. A principal
component's sign is arbitrary; where a result depends on it (PCA shift, PCA distance), each
component is flipped so that its largest-magnitude loading (the first one on ties) is
positive.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor


@dataclass(frozen=True)
class _PCAFit:
    """Mean, sign-fixed components (orthonormal rows, by decreasing variance) and rank."""

    mean: Float[Tensor, " d"]
    components: Float[Tensor, "r d"]
    singular_values: Float[Tensor, " r"]
    rank: int


@dataclass(frozen=True)
class PCAShift:
    """Where the updated activations' mean sits in the reference's PC1–PC2 plane.

    Coordinates are projections after centring on the reference mean, with the sign
    convention of this module.

    **Fields:**

    - `delta_pc1`: mean PC1 projection of the updated set minus that of the reference.
    - `pc2`: PC2 coordinate of the updated set's mean.
    - `reference_pc2`: PC2 coordinate of the reference mean (0 up to rounding).
    - `reference_pc1_std`: sample standard deviation (ddof=1) of the reference along PC1.
    """

    delta_pc1: float
    pc2: float
    reference_pc2: float
    reference_pc1_std: float


def _fit_pca(X: Tensor, name: str) -> _PCAFit:
    if X.ndim != 2:
        raise ValueError(
            f"PCA needs 2-D activations [n_samples, n_features], {name} has shape {tuple(X.shape)}"
        )
    n, d = X.shape
    if n < 2:
        raise ValueError(f"PCA needs at least 2 samples, {name} has {n}")
    X = X.detach().to(torch.float64)
    if not torch.isfinite(X).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    mean = X.mean(dim=0)
    _, S, Vh = torch.linalg.svd(X - mean, full_matrices=False)
    largest = Vh.abs().argmax(dim=1)
    Vh = Vh * torch.sign(Vh[torch.arange(Vh.shape[0], device=Vh.device), largest]).unsqueeze(1)
    # The tolerance numpy.linalg.matrix_rank uses: directions below it are rounding noise.
    tolerance = S[0] * max(n, d) * torch.finfo(torch.float64).eps
    rank = int((tolerance < S).sum()) if S[0] > 0 else 0
    return _PCAFit(mean=mean, components=Vh, singular_values=S, rank=rank)


def _check_same_width(X: Tensor, Y: Tensor, names: tuple[str, str]) -> None:
    if X.ndim == 2 and Y.ndim == 2 and X.shape[1] != Y.shape[1]:
        raise ValueError(
            f"{names[0]} has {X.shape[1]} features and {names[1]} has {Y.shape[1]}; PCA "
            "comparisons need the same feature space"
        )


def _warn_low_rank(name: str, rank: int, needed: int) -> None:
    warnings.warn(
        f"{name}'s centred activations span only {rank} direction(s), fewer than the {needed} "
        f"principal components asked for; components beyond PC{rank} are not determined by "
        "the data.",
        UserWarning,
        stacklevel=2,
    )


def principal_angle_cosines(
    X: Float[Tensor, "n1 d"], Y: Float[Tensor, "n2 d"], k: int
) -> Float[Tensor, " k"]:
    """Cosines of the principal angles between the top-`k` PC subspaces of `X` and `Y`.

    Sorted in decreasing order, in [0, 1]. If either set spans fewer than `k` directions
    (warned), the missing directions count as orthogonal: their cosines are 0.
    """
    _check_same_width(X, Y, ("X", "Y"))
    fit_x, fit_y = _fit_pca(X, "X"), _fit_pca(Y, "Y")
    d = fit_x.mean.shape[0]
    if not 1 <= k <= d:
        raise ValueError(f"k must be between 1 and the feature dimension {d}, got {k}")
    for name, fit in (("X", fit_x), ("Y", fit_y)):
        if fit.rank < k:
            _warn_low_rank(name, fit.rank, k)
    basis_x = fit_x.components[: min(k, fit_x.rank)]
    basis_y = fit_y.components[: min(k, fit_y.rank)]
    cosines = torch.zeros(k, dtype=torch.float64, device=basis_x.device)
    found = torch.linalg.svdvals(basis_x @ basis_y.T).clamp(0.0, 1.0)
    cosines[: found.shape[0]] = found
    return cosines


def pc1_similarity(X: Float[Tensor, "n1 d"], Y: Float[Tensor, "n2 d"]) -> float:
    """|cos| between the first principal components of `X` and `Y` (sign-invariant).

    1 means both sets vary most along the same direction. 0, with a warning, when either
    set is constant (it has no PC1).
    """
    return float(principal_angle_cosines(X, Y, 1)[0])


def subspace_similarity(X: Float[Tensor, "n1 d"], Y: Float[Tensor, "n2 d"], k: int) -> float:
    """Mean squared cosine of the principal angles between the top-`k` PC subspaces.

    In [0, 1]: 1 for the same subspace, `k' / k` when `k'` directions are shared and the rest
    orthogonal. See [`principal_angle_cosines`][unlearn_lens.metrics.principal_angle_cosines].
    """
    return float((principal_angle_cosines(X, Y, k) ** 2).mean())


def _shift(reference: Tensor, updated: Tensor) -> tuple[PCAShift, int]:
    """The shift and the reference's rank, without warnings."""
    _check_same_width(reference, updated, ("reference", "updated"))
    fit = _fit_pca(reference, "reference")
    if fit.mean.shape[0] < 2:
        raise ValueError("PCA shift needs at least 2 features (a PC1–PC2 plane)")
    if updated.ndim != 2 or updated.shape[0] < 1:
        raise ValueError(
            f"updated must be 2-D [n_samples, n_features] with at least one sample, got shape "
            f"{tuple(updated.shape)}"
        )
    updated = updated.detach().to(torch.float64)
    if not torch.isfinite(updated).all():
        raise ValueError("updated contains NaN or infinite values")
    plane = fit.components[:2].T
    reference_xy = (reference.detach().to(torch.float64) - fit.mean) @ plane
    updated_xy = (updated - fit.mean) @ plane
    n = reference.shape[0]
    shift = PCAShift(
        delta_pc1=float(updated_xy[:, 0].mean() - reference_xy[:, 0].mean()),
        pc2=float(updated_xy[:, 1].mean()),
        reference_pc2=float(reference_xy[:, 1].mean()),
        reference_pc1_std=float(fit.singular_values[0]) / math.sqrt(n - 1),
    )
    return shift, fit.rank


def pca_shift(reference: Float[Tensor, "n1 d"], updated: Float[Tensor, "n2 d"]) -> PCAShift:
    """Shift of the updated activations along the reference's PC1, and their PC2 coordinate.

    PCA is fitted on `reference` only. Warns when the reference spans fewer than two
    directions (its PC2 is then arbitrary).
    """
    shift, rank = _shift(reference, updated)
    if rank < 2:
        _warn_low_rank("reference", rank, 2)
    return shift


def pca_distance(reference: Float[Tensor, "n1 d"], updated: Float[Tensor, "n2 d"]) -> float:
    """Distance between the two sets' means in the reference PC1–PC2 plane, in units of the
    reference's standard deviation along PC1 (sample std, ddof=1).

    One layer's term of [`mean_pca_distance`][unlearn_lens.metrics.mean_pca_distance];
    0.0 with a warning when that standard deviation is 0 (constant reference).
    """
    shift, rank = _shift(reference, updated)
    if rank == 0:
        warnings.warn(
            "PCA distance is undefined: the reference activations are the same for every "
            "sample, so their standard deviation along PC1 is 0; returning 0.0.",
            UserWarning,
            stacklevel=2,
        )
        return 0.0
    if rank < 2:
        _warn_low_rank("reference", rank, 2)
    return math.hypot(shift.delta_pc1, shift.pc2 - shift.reference_pc2) / shift.reference_pc1_std


def mean_pca_distance(
    references: Sequence[Float[Tensor, "n1 d"]], updateds: Sequence[Float[Tensor, "n2 d"]]
) -> float:
    """The study's summary of representational drift: [`pca_distance`][unlearn_lens.metrics.pca_distance]
    per layer, averaged over layers.

    **Arguments:**

    - `references`: one activation set per layer (e.g. the original model's).
    - `updateds`: the matching sets of the updated model, same layers in the same order.
    """
    if len(references) != len(updateds):
        raise ValueError(f"{len(references)} reference layers but {len(updateds)} updated layers")
    if not references:
        raise ValueError("mean PCA distance needs at least one layer")
    distances = [
        pca_distance(reference, updated)
        for reference, updated in zip(references, updateds, strict=True)
    ]
    return sum(distances) / len(distances)
