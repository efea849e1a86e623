"""Fréchet distance: agreement with a scipy.linalg.sqrtm reference, identities, closed forms."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from flowjax.evaluation import feature_statistics, frechet_distance


def _reference_fd(mu1, s1, mu2, s2) -> float:
    """The textbook formula with a general (non-symmetric) matrix square root."""
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean).real)


def _random_stats(rng, dim: int, scale: float = 1.0):
    a = rng.normal(size=(dim, dim))
    sigma = scale * (a @ a.T / dim + 0.1 * np.eye(dim))
    return rng.normal(size=dim), sigma


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_sqrtm_reference_on_random_spd(seed):
    rng = np.random.default_rng(seed)
    mu1, s1 = _random_stats(rng, 20)
    mu2, s2 = _random_stats(rng, 20, scale=3.0)
    ours = frechet_distance(mu1, s1, mu2, s2)
    ref = _reference_fd(mu1, s1, mu2, s2)
    assert ours == pytest.approx(ref, rel=1e-6)
    # Same means: only the covariance term remains, still matching.
    assert frechet_distance(mu1, s1, mu1, s2) == pytest.approx(
        _reference_fd(mu1, s1, mu1, s2), rel=1e-6
    )


def test_zero_for_identical_statistics_and_symmetric():
    rng = np.random.default_rng(3)
    mu1, s1 = _random_stats(rng, 16)
    mu2, s2 = _random_stats(rng, 16, scale=0.5)
    assert abs(frechet_distance(mu1, s1, mu1, s1)) < 1e-9 * np.trace(s1)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(
        frechet_distance(mu2, s2, mu1, s1), rel=1e-9
    )


def test_commuting_covariances_closed_form():
    rng = np.random.default_rng(4)
    a = rng.uniform(0.1, 4.0, size=12)
    b = rng.uniform(0.1, 4.0, size=12)
    a[:3] = 0.0  # singular: three dead features in the first set
    mu1, mu2 = rng.normal(size=12), rng.normal(size=12)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-9)
    # A common rotation keeps the covariances commuting and the distance unchanged.
    q, _ = np.linalg.qr(rng.normal(size=(12, 12)))
    rotated = frechet_distance(q @ mu1, q @ np.diag(a) @ q.T, q @ mu2, q @ np.diag(b) @ q.T)
    assert rotated == pytest.approx(expected, rel=1e-7)


def test_rank_deficient_covariances_are_finite_and_exact():
    """Fewer samples than features: singular covariances, where sqrtm-based code struggles."""
    rng = np.random.default_rng(5)
    f1 = rng.normal(size=(6, 32))
    mu, sigma = feature_statistics(f1)
    assert np.linalg.matrix_rank(sigma) == 5
    shift = rng.normal(size=32)
    value = frechet_distance(mu, sigma, mu + shift, sigma)
    assert np.isfinite(value) and isinstance(value, float)
    assert value == pytest.approx(shift @ shift, rel=1e-6)
    # Two different singular covariances: never negative, never complex.
    _, sigma2 = feature_statistics(rng.normal(size=(4, 32)))
    other = frechet_distance(mu, sigma, mu, sigma2)
    assert isinstance(other, float) and other > 0.0


def test_feature_statistics_match_numpy_and_are_float64():
    rng = np.random.default_rng(6)
    f = rng.normal(size=(50, 7)).astype(np.float32)
    mu, sigma = feature_statistics(f)
    assert mu.dtype == np.float64 and sigma.dtype == np.float64
    np.testing.assert_allclose(mu, f.astype(np.float64).mean(0), rtol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(f.astype(np.float64), rowvar=False), rtol=1e-10)
    np.testing.assert_array_equal(sigma, sigma.T)


def test_validation_errors():
    mu, sigma = np.zeros(3), np.eye(3)
    with pytest.raises(ValueError, match="feature sizes"):
        frechet_distance(mu, sigma, np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match=r"\[F, F\]"):
        frechet_distance(mu, np.eye(4), mu, sigma)
    with pytest.raises(ValueError, match="symmetric"):
        frechet_distance(mu, np.triu(np.ones((3, 3))), mu, sigma)
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(mu, np.full((3, 3), np.nan), mu, sigma)
    with pytest.raises(ValueError, match="at least 2"):
        feature_statistics(np.zeros((1, 3)))
    with pytest.raises(ValueError, match=r"features\[:, None\]"):
        feature_statistics(np.zeros(5))
