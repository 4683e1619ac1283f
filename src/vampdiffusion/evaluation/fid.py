"""Fréchet distance between two Gaussians fitted to Inception features (SPEC §6).

    d² = ‖μ₁ − μ₂‖² + Tr(Σ₁) + Tr(Σ₂) − 2 Tr((Σ₁ Σ₂)^½)

Tr((Σ₁Σ₂)^½) is computed as Tr((Σ₁^½ Σ₂ Σ₁^½)^½): the inner matrix is symmetric positive
semi-definite, so both square roots come from symmetric eigendecompositions in float64, with
round-off negatives clamped to zero. No scipy at run time (scipy's `sqrtm` is what the tests
compare against), no complex parts to discard as pytorch-fid has to.
"""

from __future__ import annotations

import numpy as np


def sqrtm_psd(S: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix: S^½ = V diag(√λ) Vᵀ."""
    S = np.asarray(S, dtype=np.float64)
    S = 0.5 * (S + S.T)  # symmetrise away round-off
    lam, V = np.linalg.eigh(S)
    lam = np.clip(lam, 0.0, None)  # eigenvalues below 0 are round-off of a PSD matrix
    return (V * np.sqrt(lam)) @ V.T


def trace_sqrt_product(S1: np.ndarray, S2: np.ndarray) -> float:
    """Tr((S1 S2)^½) = Σ √λᵢ(S1^½ S2 S1^½), the inner matrix symmetric PSD."""
    R = sqrtm_psd(S1)
    M = R @ np.asarray(S2, dtype=np.float64) @ R
    M = 0.5 * (M + M.T)
    lam = np.clip(np.linalg.eigvalsh(M), 0.0, None)
    return float(np.sqrt(lam).sum())


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """d² = ‖μ₁ − μ₂‖² + Tr(Σ₁) + Tr(Σ₂) − 2 Tr((Σ₁ Σ₂)^½); never negative."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ValueError(f"Fréchet distance needs matching shapes, got μ {mu1.shape} / {mu2.shape}, "
                         f"Σ {sigma1.shape} / {sigma2.shape}")
    diff = mu1 - mu2
    d2 = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt_product(sigma1, sigma2)
    return max(float(d2), 0.0)


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(μ, Σ) of (N, D) features; Σ is the unbiased covariance, as pytorch-fid computes it."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"feature statistics need an (N >= 2, D) array, got shape {x.shape}")
    return x.mean(axis=0), np.cov(x, rowvar=False)


def fid_from_features(features1: np.ndarray, features2: np.ndarray) -> float:
    """FID between two sets of (N, 2048) Inception pool features."""
    mu1, s1 = feature_statistics(features1)
    mu2, s2 = feature_statistics(features2)
    return frechet_distance(mu1, s1, mu2, s2)
