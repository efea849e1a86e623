"""Fréchet distance between Gaussians fitted to feature sets (the formula behind FID).

For features ``f1 [N1, F]`` and ``f2 [N2, F]`` with means ``mu_i`` and covariances ``S_i``,

    FD = ||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^{1/2}),

the squared 2-Wasserstein distance between ``N(mu1, S1)`` and ``N(mu2, S2)`` (Dowson & Landau
1982; Heusel et al. 2017 use it on Inception features as FID). Everything here is float64 NumPy:
the statistics are small (``F x F``) and the trace term is a difference of large, nearly equal
numbers, so it deserves double precision whatever the dtype of the features.

Estimator bias: the plug-in FD of two finite samples of the *same* law is positive, of order
``tr(S) F / N``. Compare FD values only at equal sample sizes (and equal reference statistics).
"""

from __future__ import annotations

import numpy as np

__all__ = ["feature_statistics", "frechet_distance", "trace_sqrt_product"]


def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of a feature set, in float64.

    Args:
      features: ``[N, F]`` array (NumPy or JAX, any real dtype), ``N >= 2``; trailing axes beyond
        the second are flattened into ``F``.

    Returns:
      ``(mu [F] float64, sigma [F, F] float64)`` with ``sigma`` the unbiased sample covariance
      ``sum_i (f_i - mu)(f_i - mu)^T / (N - 1)``, exactly symmetric.
    """
    f = np.asarray(features)
    if f.ndim < 2:
        raise ValueError(
            f"features must have shape [num_samples, num_features], got {f.shape}; for scalar "
            "features pass features[:, None]."
        )
    f = f.reshape(f.shape[0], -1).astype(np.float64)
    if f.shape[0] < 2:
        raise ValueError(f"need at least 2 feature vectors for a covariance, got {f.shape[0]}.")
    if not np.all(np.isfinite(f)):
        raise ValueError("features contain NaN or inf; check the samples fed to the extractor.")
    mu = f.mean(axis=0)
    centred = f - mu
    sigma = centred.T @ centred / (f.shape[0] - 1)
    return mu, 0.5 * (sigma + sigma.T)


def _check_stats(mu, sigma, name: str) -> tuple[np.ndarray, np.ndarray]:
    mu = np.asarray(mu, dtype=np.float64)
    sigma = np.asarray(sigma, dtype=np.float64)
    if mu.ndim != 1:
        raise ValueError(f"mu{name} must be a vector [F], got shape {mu.shape}.")
    if sigma.shape != (mu.shape[0], mu.shape[0]):
        raise ValueError(
            f"sigma{name} must be [F, F] = {(mu.shape[0],) * 2} to match mu{name}, got "
            f"{sigma.shape}."
        )
    if not (np.all(np.isfinite(mu)) and np.all(np.isfinite(sigma))):
        raise ValueError(f"mu{name} / sigma{name} contain NaN or inf.")
    scale = max(np.max(np.abs(sigma)), np.finfo(np.float64).tiny)
    if np.max(np.abs(sigma - sigma.T)) > 1e-6 * scale:
        raise ValueError(f"sigma{name} is not symmetric; pass a covariance matrix.")
    return mu, 0.5 * (sigma + sigma.T)


def _psd_sqrt(sigma: np.ndarray, eps: float) -> np.ndarray:
    """Symmetric square root of a PSD matrix via ``eigh``; tiny or negative eigenvalues -> 0."""
    w, v = np.linalg.eigh(sigma)
    w = np.where(w > eps * max(w.max(initial=0.0), 0.0), w, 0.0)
    return (v * np.sqrt(w)) @ v.T


def trace_sqrt_product(sigma1, sigma2, eps: float = 1e-12) -> float:
    """``tr((S1 S2)^{1/2})`` for symmetric PSD ``S1``, ``S2`` (float64).

    ``S1 S2`` is not symmetric, but it is similar to the symmetric PSD matrix
    ``M = S1^{1/2} S2 S1^{1/2}`` (conjugate by ``S1^{1/2}``), so both have the same eigenvalues
    ``lambda_k >= 0`` and ``tr((S1 S2)^{1/2}) = sum_k sqrt(lambda_k)``. Using ``eigh`` on ``M``
    keeps every step real and symmetric; no matrix inverse is needed, so singular covariances
    (fewer samples than features, dead feature units) are fine.

    ``eps`` (relative): eigenvalues of ``S1`` and of ``M`` below ``eps * (largest eigenvalue)``,
    including the slightly negative ones that round-off produces for rank-deficient matrices,
    are treated as exact zeros before the square root. This changes the trace by at most about
    ``F * sqrt(eps * lambda_max)`` (``1e-6 F sqrt(lambda_max)`` for the default ``1e-12``, i.e.
    at the level of float64 round-off of ``M``) and keeps ``sqrt`` from amplifying noise.
    """
    half1 = _psd_sqrt(sigma1, eps)
    m = half1 @ sigma2 @ half1
    lam = np.linalg.eigvalsh(0.5 * (m + m.T))
    lam = np.where(lam > eps * max(lam.max(initial=0.0), 0.0), lam, 0.0)
    return float(np.sum(np.sqrt(lam)))


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-12) -> float:
    """Fréchet distance ``||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^{1/2})`` (float64).

    The trace of the matrix square root is computed as in :func:`trace_sqrt_product` (eigenvalues
    of ``S1^{1/2} S2 S1^{1/2}``), which is symmetric and stable and needs no regularising
    ``eps * I`` added to the covariances. The result is a Python float, never complex, and
    clamped at 0 (it can only dip below 0 by round-off). It is symmetric in its two arguments
    and 0 for identical statistics up to round-off (about ``1e-12 * tr(S)``).

    Args:
      mu1: ``[F]`` mean of the first feature set.
      sigma1: ``[F, F]`` symmetric PSD covariance of the first feature set.
      mu2: ``[F]`` mean of the second feature set.
      sigma2: ``[F, F]`` covariance of the second feature set.
      eps: relative eigenvalue floor, see :func:`trace_sqrt_product`.

    Returns:
      The distance as a non-negative Python float.
    """
    mu1, sigma1 = _check_stats(mu1, sigma1, "1")
    mu2, sigma2 = _check_stats(mu2, sigma2, "2")
    if mu1.shape != mu2.shape:
        raise ValueError(
            f"the two statistics have different feature sizes: {mu1.shape[0]} and {mu2.shape[0]}."
        )
    if not (isinstance(eps, (int, float)) and 0.0 <= eps < 1.0):
        raise ValueError(f"eps must be a float in [0, 1), got {eps!r}.")
    diff = mu1 - mu2
    tr_covmean = trace_sqrt_product(sigma1, sigma2, eps)
    value = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)
    return max(value, 0.0)
