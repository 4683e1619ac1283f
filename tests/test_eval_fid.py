import numpy as np
import pytest
import scipy.linalg

from vampdiffusion.evaluation.fid import (
    feature_statistics, fid_from_features, frechet_distance, sqrtm_psd, trace_sqrt_product,
)


def random_spd(rng: np.random.Generator, d: int, cond: float = 1e3) -> np.ndarray:
    Q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    lam = np.geomspace(1.0, 1.0 / cond, d)
    return (Q * lam) @ Q.T


def scipy_frechet(mu1, s1, mu2, s2):
    # pytorch-fid's formula: sqrtm of the non-symmetric product, real part
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    diff = mu1 - mu2
    return diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)


def test_sqrtm_psd_squares_back_and_matches_scipy():
    rng = np.random.default_rng(0)
    S = random_spd(rng, 32)
    R = sqrtm_psd(S)
    np.testing.assert_allclose(R @ R, S, atol=1e-10)
    np.testing.assert_allclose(R, scipy.linalg.sqrtm(S).real, atol=1e-8)


def test_frechet_distance_diagonal_closed_form():
    rng = np.random.default_rng(1)
    d = 64
    a, b = rng.uniform(0.1, 3.0, d), rng.uniform(0.1, 3.0, d)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    # ‖Δμ‖² + Σ(√aᵢ − √bᵢ)²
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    got = frechet_distance(mu1, np.diag(a), mu2, np.diag(b))
    assert got == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("d", [8, 128])
def test_frechet_distance_matches_scipy_on_random_spd(d):
    rng = np.random.default_rng(d)
    s1, s2 = random_spd(rng, d), random_spd(rng, d)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(scipy_frechet(mu1, s1, mu2, s2), rel=1e-7)


def test_trace_sqrt_product_is_symmetric_in_its_arguments():
    rng = np.random.default_rng(3)
    s1, s2 = random_spd(rng, 40), random_spd(rng, 40)
    assert trace_sqrt_product(s1, s2) == pytest.approx(trace_sqrt_product(s2, s1), rel=1e-9)


def test_frechet_distance_of_identical_rank_deficient_gaussians_is_zero():
    # N < D features give a singular covariance, as at small eval sizes; the distance stays ≥ 0 and ≈ 0
    rng = np.random.default_rng(4)
    x = rng.standard_normal((20, 64))
    mu, s = feature_statistics(x)
    d = frechet_distance(mu, s, mu, s)
    assert 0.0 <= d < 1e-8


def test_fid_from_features_grows_with_mean_shift():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((500, 16))
    y_near = rng.standard_normal((500, 16)) + 0.1
    y_far = rng.standard_normal((500, 16)) + 1.0
    near, far = fid_from_features(x, y_near), fid_from_features(x, y_far)
    assert near < 0.5 and far == pytest.approx(16.0, rel=0.15)


def test_frechet_distance_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="matching shapes"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


@pytest.mark.parametrize("n1,n2,d", [(30, 50, 64), (200, 150, 16)])
def test_fid_from_features_small_sample_route_equals_covariance_route(n1, n2, d):
    rng = np.random.default_rng(n1)
    x = rng.standard_normal((n1, d)) * rng.uniform(0.5, 2, d)
    y = rng.standard_normal((n2, d)) + 0.3
    mu1, s1 = feature_statistics(x)
    mu2, s2 = feature_statistics(y)
    # rel 1e-6: for a rank-deficient Σ the eigen route adds √(round-off) ≈ 1e-8 per zero eigenvalue
    assert fid_from_features(x, y) == pytest.approx(frechet_distance(mu1, s1, mu2, s2), rel=1e-6)
