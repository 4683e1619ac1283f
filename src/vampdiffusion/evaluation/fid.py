"""Fréchet distance between two Gaussians fitted to Inception features (docs/evaluation.md).

    d² = ‖μ₁ − μ₂‖² + Tr(Σ₁) + Tr(Σ₂) − 2 Tr((Σ₁ Σ₂)^½)

Tr((Σ₁Σ₂)^½) is computed as Tr((Σ₁^½ Σ₂ Σ₁^½)^½): the inner matrix is symmetric positive
semi-definite, so both square roots come from symmetric eigendecompositions in float64, with
round-off negatives clamped to zero. No scipy at run time (scipy's `sqrtm` is what the tests
compare against), no complex parts to discard as pytorch-fid has to.
"""

from __future__ import annotations

from pathlib import Path

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
    """FID between two sets of (N, D) Inception pool features.

    With A = X̃₁ᵀ/√(n₁−1) and B = X̃₂ᵀ/√(n₂−1) (centred features), Σ₁ = AAᵀ and Σ₂ = BBᵀ, and the non-zero
    eigenvalues of Σ₁Σ₂ are those of (AᵀB)(AᵀB)ᵀ, so Tr((Σ₁Σ₂)^½) = ‖AᵀB‖_* (sum of singular values):
        d² = ‖μ₁ − μ₂‖² + ‖A‖²_F + ‖B‖²_F − 2 ‖AᵀB‖_*
    an (n₁, n₂) SVD instead of two (D, D) eigendecompositions when there are fewer images than features.
    """
    x1, x2 = np.asarray(features1, np.float64), np.asarray(features2, np.float64)
    for x in (x1, x2):
        if x.ndim != 2 or x.shape[0] < 2:
            raise ValueError(f"feature statistics need an (N >= 2, D) array, got shape {x.shape}")
    if x1.shape[1] != x2.shape[1]:
        raise ValueError(f"Fréchet distance needs matching shapes, got features of width {x1.shape[1]} and {x2.shape[1]}")
    n1, n2, D = x1.shape[0], x2.shape[0], x1.shape[1]
    if min(n1, n2) >= D:  # enough images: the (D, D) covariance route is the smaller one
        mu1, s1 = feature_statistics(x1)
        mu2, s2 = feature_statistics(x2)
        return frechet_distance(mu1, s1, mu2, s2)
    mu1, mu2 = x1.mean(0), x2.mean(0)
    A = (x1 - mu1) / np.sqrt(n1 - 1)                                   # (n₁, D) = Aᵀ
    B = (x2 - mu2) / np.sqrt(n2 - 1)                                   # (n₂, D) = Bᵀ
    nuclear = np.linalg.svd(A @ B.T, compute_uv=False).sum()          # ‖AᵀB‖_* = Tr((Σ₁Σ₂)^½)
    diff = mu1 - mu2
    d2 = diff @ diff + (A * A).sum() + (B * B).sum() - 2.0 * nuclear
    return max(float(d2), 0.0)


def fid_results(weights_path: Path, generated: dict[int, np.ndarray], real: np.ndarray, real_tiers: np.ndarray) -> dict:
    """From Inception features: FID of each tier's generated images against all decoded held-out images,
    and against the held-out images of the same tier."""
    if len(real) < 2:
        return {"status": f"skipped: {len(real)} held-out image(s); FID needs at least 2"}
    out: dict = {"status": "ok", "weights": str(weights_path), "reference": "decoded held-out latents",
                 "real_images": int(len(real)), "per_tier": {}}
    for q, f_gen in generated.items():
        same = real[real_tiers == q]
        out["per_tier"][str(q)] = {
            "generated": int(len(f_gen)),
            "fid": fid_from_features(f_gen, real) if len(f_gen) >= 2 else None,
            "fid_same_tier": fid_from_features(f_gen, same) if len(same) >= 2 and len(f_gen) >= 2 else None,
            "real_same_tier": int(len(same)),
        }
    fids = [out["per_tier"][str(q)]["fid"] for q in sorted(generated)]
    # FID_3 < FID_2 < FID_1 < FID_0: every higher tier closer to the held-out images
    out["ordering_holds"] = (len(fids) > 1 and all(f is not None for f in fids)
                             and all(a > b for a, b in zip(fids, fids[1:])))
    if len(real) < 2048:
        out["note"] = (f"{len(real)} reference images: below the 2048 feature dimensions, so the covariance is "
                       f"rank-deficient and FID is biased upward; compare tiers with each other, not with published FIDs")
    return out
