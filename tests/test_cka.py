import math

import numpy as np
import pytest
import torch
from unchecked import unchecked

from unlearn_lens.metrics import CKAResult, cka_both, linear_cka


def reference_biased_cka(X: np.ndarray, Y: np.ndarray) -> float:
    """Kornblith et al. (2019): HSIC with the centring matrix H on linear Gram matrices."""
    n = X.shape[0]
    H = np.eye(n) - np.ones((n, n)) / n

    def hsic(K, L):
        return np.trace(K @ H @ L @ H) / (n - 1) ** 2

    K, L = X @ X.T, Y @ Y.T
    return hsic(K, L) / math.sqrt(hsic(K, K) * hsic(L, L))


def reference_debiased_cka(X: np.ndarray, Y: np.ndarray) -> float:
    """Song et al. (2012) eq. 5, the unbiased HSIC, on raw (uncentred) linear Gram matrices."""
    n = X.shape[0]
    one = np.ones(n)

    def hsic(K, L):
        K, L = K.copy(), L.copy()
        np.fill_diagonal(K, 0.0)
        np.fill_diagonal(L, 0.0)
        return (
            np.trace(K @ L)
            + (one @ K @ one) * (one @ L @ one) / ((n - 1) * (n - 2))
            - 2.0 / (n - 2) * (one @ K @ L @ one)
        ) / (n * (n - 3))

    K, L = X @ X.T, Y @ Y.T
    return hsic(K, L) / math.sqrt(hsic(K, K) * hsic(L, L))


def correlated_pair(
    rng: np.random.Generator, n: int, d1: int, d2: int
) -> tuple[np.ndarray, np.ndarray]:
    """Two related representations with non-zero means (to exercise centring)."""
    X = rng.standard_normal((n, d1)) + rng.standard_normal(d1)
    Y = X @ rng.standard_normal((d1, d2)) + 0.5 * rng.standard_normal((n, d2)) + 3.0
    return X, Y


def random_orthogonal(rng: np.random.Generator, d: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


# (n, d1, d2): n small against the widths takes the sample-space (n x n) path, n large the
# feature-space (d x d) path.
SHAPES = [(10, 50, 40), (200, 5, 7), (64, 64, 3)]


@pytest.mark.parametrize(("n", "d1", "d2"), SHAPES)
def test_biased_matches_centring_matrix_formula(n, d1, d2):
    X, Y = correlated_pair(np.random.default_rng(n + d1), n, d1, d2)
    expected = reference_biased_cka(X, Y)
    assert linear_cka(torch.from_numpy(X), torch.from_numpy(Y)) == pytest.approx(
        expected, rel=1e-10
    )


@pytest.mark.parametrize(("n", "d1", "d2"), SHAPES)
def test_debiased_matches_song_unbiased_hsic(n, d1, d2):
    X, Y = correlated_pair(np.random.default_rng(n + d2), n, d1, d2)
    expected = reference_debiased_cka(X, Y)
    got = linear_cka(torch.from_numpy(X), torch.from_numpy(Y), debiased=True)
    assert got == pytest.approx(expected, rel=1e-9)


def test_cka_both_matches_single_estimators():
    X, Y = correlated_pair(np.random.default_rng(3), 20, 30, 12)
    X_t, Y_t = torch.from_numpy(X), torch.from_numpy(Y)
    result = cka_both(X_t, Y_t)
    assert isinstance(result, CKAResult)
    assert result.biased == pytest.approx(linear_cka(X_t, Y_t), rel=1e-12)
    assert result.debiased == pytest.approx(linear_cka(X_t, Y_t, debiased=True), rel=1e-12)


def test_float32_input_is_computed_in_float64():
    X, Y = correlated_pair(np.random.default_rng(4), 16, 24, 8)
    X32, Y32 = X.astype(np.float32), Y.astype(np.float32)
    expected = reference_debiased_cka(X32.astype(np.float64), Y32.astype(np.float64))
    got = linear_cka(torch.from_numpy(X32), torch.from_numpy(Y32), debiased=True)
    assert got == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize(("n", "d"), [(12, 40), (100, 6)])
def test_identity_gives_one(debiased, n, d):
    X = torch.randn(n, d, generator=torch.Generator().manual_seed(n), dtype=torch.float64)
    assert linear_cka(X, X, debiased=debiased) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize(("n", "d"), [(12, 40), (100, 6)])
def test_invariant_to_orthogonal_maps_and_isotropic_scaling(debiased, n, d):
    rng = np.random.default_rng(7 + n)
    X, Y = correlated_pair(rng, n, d, d)
    base = linear_cka(torch.from_numpy(X), torch.from_numpy(Y), debiased=debiased)
    transformed = 3.7 * Y @ random_orthogonal(rng, d) + 5.0
    moved = linear_cka(torch.from_numpy(X), torch.from_numpy(transformed), debiased=debiased)
    assert moved == pytest.approx(base, rel=1e-9)
    # A representation compared with a rotated, rescaled copy of itself is the same geometry.
    assert linear_cka(
        torch.from_numpy(Y), torch.from_numpy(transformed), debiased=debiased
    ) == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("debiased", [False, True])
def test_not_invariant_to_general_linear_maps(debiased):
    rng = np.random.default_rng(11)
    X = rng.standard_normal((200, 10))
    # Strongly anisotropic invertible map: stretches one axis 100-fold.
    A = random_orthogonal(rng, 10) @ np.diag([100.0] + [1.0] * 9) @ random_orthogonal(rng, 10)
    assert np.linalg.matrix_rank(A) == 10
    value = linear_cka(torch.from_numpy(X), torch.from_numpy(X @ A), debiased=debiased)
    assert value < 0.5


@pytest.fixture
def single_thread():
    """Hundreds of tiny products: on a small, busy machine thread hand-offs cost 100x the maths."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.usefixtures("single_thread")
def test_independent_gaussians_debiased_near_zero_biased_inflated():
    rng = np.random.default_rng(12)
    results = [
        cka_both(
            torch.from_numpy(rng.standard_normal((32, 64))),
            torch.from_numpy(rng.standard_normal((32, 64))),
        )
        for _ in range(200)
    ]
    assert abs(np.mean([r.debiased for r in results])) < 0.02
    assert np.mean([r.biased for r in results]) > 0.3


def test_science_numbers_32_by_576():
    # SCIENCE.md: two independent 32 x 576 Gaussian matrices give biased CKA around 0.945.
    rng = np.random.default_rng(13)
    results = [
        cka_both(
            torch.from_numpy(rng.standard_normal((32, 576))),
            torch.from_numpy(rng.standard_normal((32, 576))),
        )
        for _ in range(5)
    ]
    assert np.mean([r.biased for r in results]) == pytest.approx(0.945, abs=0.01)
    assert abs(np.mean([r.debiased for r in results])) < 0.1


def test_debiased_can_be_negative_and_is_returned_as_is():
    rng = np.random.default_rng(14)
    draws = [(rng.standard_normal((8, 20)), rng.standard_normal((8, 20))) for _ in range(20)]
    values = [linear_cka(torch.from_numpy(X), torch.from_numpy(Y), debiased=True) for X, Y in draws]
    assert min(values) < 0.0


@pytest.mark.parametrize("n", [1, 2, 3])
def test_debiased_needs_four_samples(n):
    X = torch.randn(n, 5)
    with pytest.raises(ValueError, match=f"debiased CKA needs at least 4 samples, got {n}"):
        linear_cka(X, X, debiased=True)
    with pytest.raises(ValueError, match="at least 4 samples"):
        cka_both(X, X)


def test_biased_works_with_few_samples():
    X = torch.tensor([[0.0, 1.0], [1.0, 0.0], [2.0, 2.0]])
    assert linear_cka(X, X) == pytest.approx(1.0)


def test_input_errors():
    with pytest.raises(ValueError, match="10 rows and Y has 9"):
        unchecked(linear_cka)(torch.randn(10, 3), torch.randn(9, 3))
    with pytest.raises(ValueError, match="2-D"):
        unchecked(linear_cka)(torch.randn(10, 3, 2), torch.randn(10, 3))
    with pytest.raises(ValueError, match="2-D"):
        unchecked(linear_cka)(torch.randn(10), torch.randn(10, 3))
    with pytest.raises(ValueError, match="NaN"):
        linear_cka(torch.full((10, 3), float("nan")), torch.randn(10, 3))


@pytest.mark.parametrize("debiased", [False, True])
def test_constant_input_warns_and_returns_zero(debiased):
    Y = torch.randn(16, 4, generator=torch.Generator().manual_seed(0))
    # 0.1 is not exact in binary: centring leaves rounding residue that must still count as constant.
    constant = torch.full((16, 8), 0.1)
    with pytest.warns(UserWarning, match="same for every sample"):
        value = linear_cka(constant, Y, debiased=debiased)
    assert value == 0.0
    with pytest.warns(UserWarning, match="Y is the same for every sample"):
        assert linear_cka(Y, torch.zeros(16, 3), debiased=debiased) == 0.0


def test_constant_input_cka_both_warns_once():
    with pytest.warns(UserWarning, match="same for every sample") as record:
        result = cka_both(torch.ones(8, 3), torch.ones(8, 3))
    assert len(record) == 1
    assert result == CKAResult(biased=0.0, debiased=0.0)
    assert not math.isnan(result.biased) and not math.isnan(result.debiased)


def test_one_outlier_sample_has_no_debiased_cka():
    # All rows but one identical: the unbiased self-HSIC is exactly 0 in theory.
    X = torch.zeros(50, 3, dtype=torch.float64)
    X[0] = torch.tensor([1.0, 2.0, 3.0])
    Y = torch.randn(50, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with pytest.warns(UserWarning, match="unbiased self-HSIC of X"):
        result = cka_both(X, Y)
    assert result.debiased == 0.0
    assert 0.0 < result.biased < 1.0
