import math

import numpy as np
import pytest
import torch
from unchecked import unchecked

from unlearn_lens.metrics import (
    PCAShift,
    mean_pca_distance,
    pc1_similarity,
    pca_distance,
    pca_shift,
    principal_angle_cosines,
    subspace_similarity,
)


def planted(
    rng: np.random.Generator, directions: np.ndarray, n: int = 400, noise: float = 1e-3
) -> torch.Tensor:
    """Samples varying along the rows of `directions` (decreasing scales) plus tiny noise."""
    k, d = directions.shape
    scales = np.linspace(10.0, 5.0, k)
    coefficients = rng.standard_normal((n, k)) * scales
    return torch.from_numpy(coefficients @ directions + noise * rng.standard_normal((n, d)) + 2.0)


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def test_pc1_similarity_of_same_data_is_one():
    X = torch.randn(50, 8, generator=torch.Generator().manual_seed(0))
    assert pc1_similarity(X, X) == pytest.approx(1.0, abs=1e-12)


def test_pc1_similarity_matches_planted_directions():
    rng = np.random.default_rng(1)
    u = unit(rng.standard_normal(6))
    r = rng.standard_normal(6)
    w = unit(r - (r @ u) * u)
    v = -0.6 * u + 0.8 * w  # cos(u, v) = -0.6
    got = pc1_similarity(planted(rng, u[None]), planted(rng, v[None]))
    assert got == pytest.approx(0.6, abs=1e-4)


def test_pc1_similarity_is_sign_invariant():
    rng = np.random.default_rng(2)
    X = torch.from_numpy(rng.standard_normal((60, 5)) * [5.0, 3.0, 1.0, 1.0, 0.5])
    Y = torch.from_numpy(rng.standard_normal((70, 5)) * [4.0, 4.5, 1.0, 1.0, 0.5])
    base = pc1_similarity(X, Y)
    flips = torch.tensor([1.0, -1.0, -1.0, 1.0, -1.0], dtype=torch.float64)
    assert pc1_similarity(-X, Y) == pytest.approx(base, rel=1e-12)
    assert pc1_similarity(X, -Y) == pytest.approx(base, rel=1e-12)
    assert pc1_similarity(X * flips, Y * flips) == pytest.approx(base, rel=1e-12)


def test_principal_angle_cosines_of_planted_subspaces():
    rng = np.random.default_rng(3)
    basis = np.linalg.qr(rng.standard_normal((10, 4)))[0].T  # 4 orthonormal rows
    # X varies in span(b0, b1), Y in span(b0, b2): one shared direction, one orthogonal.
    X = planted(rng, basis[[0, 1]])
    Y = planted(rng, basis[[2, 0]])
    cosines = principal_angle_cosines(X, Y, 2)
    assert cosines.shape == (2,)
    assert cosines.tolist() == pytest.approx([1.0, 0.0], abs=1e-4)
    assert subspace_similarity(X, Y, 2) == pytest.approx(0.5, abs=1e-4)
    assert subspace_similarity(X, X, 2) == pytest.approx(1.0, abs=1e-12)


def test_subspace_rank_shortfall_warns_and_counts_as_orthogonal():
    rng = np.random.default_rng(4)
    direction = unit(rng.standard_normal(5))
    line = torch.from_numpy(rng.standard_normal((30, 1)) * direction)  # spans one direction
    full = torch.from_numpy(rng.standard_normal((30, 5)))
    with pytest.warns(UserWarning, match="span only 1 direction"):
        cosines = principal_angle_cosines(line, full, 3)
    assert cosines[1:].tolist() == [0.0, 0.0]


def test_constant_input_has_no_pc1():
    with pytest.warns(UserWarning, match="span only 0 direction"):
        assert pc1_similarity(torch.ones(10, 3), torch.randn(10, 3)) == 0.0


def test_pca_input_errors():
    with pytest.raises(ValueError, match="same feature space"):
        unchecked(pc1_similarity)(torch.randn(10, 3), torch.randn(10, 4))
    with pytest.raises(ValueError, match="k must be between 1 and"):
        subspace_similarity(torch.randn(10, 3), torch.randn(10, 3), 4)
    with pytest.raises(ValueError, match="at least 2 samples"):
        pc1_similarity(torch.randn(1, 3), torch.randn(10, 3))
    with pytest.raises(ValueError, match="2-D"):
        unchecked(pca_shift)(torch.randn(10), torch.randn(10, 3))


def test_pca_shift_of_identical_sets_is_zero():
    X = torch.randn(40, 6, generator=torch.Generator().manual_seed(5))
    shift = pca_shift(X, X.clone())
    assert shift.delta_pc1 == 0.0
    assert shift.pc2 == shift.reference_pc2
    assert shift.reference_pc2 == pytest.approx(0.0, abs=1e-12)
    assert pca_distance(X, X.clone()) == 0.0


# Reference: mean (1, 1); variance 8/3 along x (PC1) and 2/3 along y (PC2), sample std ddof=1.
TOY_REFERENCE = torch.tensor([[-1.0, 1.0], [3.0, 1.0], [1.0, 0.0], [1.0, 2.0]])


def test_pca_shift_hand_computed():
    updated = TOY_REFERENCE + torch.tensor([1.0, 0.5])
    shift = pca_shift(TOY_REFERENCE, updated)
    assert isinstance(shift, PCAShift)
    assert shift.delta_pc1 == pytest.approx(1.0, abs=1e-12)
    assert shift.pc2 == pytest.approx(0.5, abs=1e-12)
    assert shift.reference_pc1_std == pytest.approx(math.sqrt(8.0 / 3.0), rel=1e-12)


def test_pca_shift_sign_convention_is_deterministic():
    # PC1 along (-0.8, 0.6): its largest loading is negative, so the convention flips it to
    # (0.8, -0.6) whatever sign the SVD returns; negating the data must not change that.
    rng = np.random.default_rng(6)
    direction = np.array([-0.8, 0.6])
    reference = torch.from_numpy(
        rng.standard_normal((50, 1)) * 3.0 * direction + 0.1 * rng.standard_normal((50, 2))
    )
    step = torch.from_numpy(2.0 * direction)
    for data in (reference, -reference):
        assert pca_shift(data, data + step).delta_pc1 == pytest.approx(-2.0, abs=0.01)


def test_pca_distance_and_mean_hand_computed():
    std = math.sqrt(8.0 / 3.0)
    layer_shifts = [torch.tensor([1.0, 0.5]), torch.tensor([0.0, -2.0]), torch.tensor([3.0, 4.0])]
    expected = [math.hypot(1.0, 0.5) / std, 2.0 / std, 5.0 / std]
    references = [TOY_REFERENCE] * 3
    updateds = [TOY_REFERENCE + s for s in layer_shifts]
    for reference, updated, value in zip(references, updateds, expected, strict=True):
        assert pca_distance(reference, updated) == pytest.approx(value, rel=1e-12)
    assert mean_pca_distance(references, updateds) == pytest.approx(sum(expected) / 3, rel=1e-12)


def test_pca_distance_uses_means_not_sample_pairs():
    # A different number of updated samples, same mean as a shifted reference.
    updated = torch.tensor([[2.0, 1.5], [2.0, 1.5]])
    assert pca_distance(TOY_REFERENCE, updated) == pytest.approx(
        math.hypot(1.0, 0.5) / math.sqrt(8.0 / 3.0)
    )


def test_pca_distance_constant_reference_warns_and_returns_zero():
    with pytest.warns(UserWarning, match="standard deviation along PC1 is 0"):
        assert pca_distance(torch.ones(5, 3), torch.randn(5, 3)) == 0.0


def test_rank_one_reference_warns_that_pc2_is_arbitrary():
    reference = torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]])
    with pytest.warns(UserWarning, match="span only 1 direction"):
        pca_shift(reference, reference + 1.0)
    with pytest.warns(UserWarning, match="span only 1 direction"):
        pca_distance(reference, reference + 1.0)


def test_mean_pca_distance_errors():
    with pytest.raises(ValueError, match="2 reference layers but 1 updated"):
        mean_pca_distance([TOY_REFERENCE, TOY_REFERENCE], [TOY_REFERENCE])
    with pytest.raises(ValueError, match="at least one layer"):
        mean_pca_distance([], [])
    with pytest.raises(ValueError, match="same feature space"):
        unchecked(pca_distance)(TOY_REFERENCE, torch.randn(4, 3))
