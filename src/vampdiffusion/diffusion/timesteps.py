"""Training timestep samplers (docs/diffusion.md): uniform, lognormal (Karras/EDM), logit_normal.

Each returns a (n,) long tensor of indices in 0..T−1, drawn with an optional torch.Generator.
"""

from __future__ import annotations

import torch

from vampdiffusion.config import DiffusionConfig
from vampdiffusion.diffusion.schedule import NoiseSchedule

TIMESTEP_SAMPLERS = ("uniform", "lognormal", "logit_normal")


def sample_uniform(n: int, T: int, generator: torch.Generator | None = None) -> torch.Tensor:
    # t ~ U{0, …, T−1}
    return torch.randint(0, T, (n,), generator=generator)


def sample_lognormal(n: int, schedule: NoiseSchedule, p_mean: float, p_std: float,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """ln σ ~ N(P_mean, P_std²), σ = √((1−ᾱ)/ᾱ); t = the step nearest in ln σ.

    The terminal step has σ = ∞ under zero terminal SNR, so it is nobody's nearest neighbour;
    a draw beyond the largest finite σ (step T−2) is mapped to T−1 instead.
    """
    log_sigma = schedule.edm_log_sigma()                          # (T,) increasing, maybe +inf last
    finite = log_sigma[torch.isfinite(log_sigma)]                 # (T',) T' = T−1 with zero-SNR
    x = (p_mean + p_std * torch.randn(n, generator=generator, dtype=torch.float64))
    hi = torch.searchsorted(finite, x).clamp(1, len(finite) - 1)  # first index with table >= x
    lo = hi - 1
    t = torch.where((x - finite[lo]).abs() <= (finite[hi] - x).abs(), lo, hi)
    t = torch.where(x < finite[0], torch.zeros_like(t), t)
    beyond = x > finite[-1]
    t = torch.where(beyond, torch.full_like(t, schedule.T - 1), t)
    return t


def sample_logit_normal(n: int, T: int, m: float, s: float,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    # u = sigmoid(N(m, s²)) ∈ (0, 1); t = ⌊u T⌋ so that step k covers u ∈ [k/T, (k+1)/T)
    u = torch.sigmoid(m + s * torch.randn(n, generator=generator, dtype=torch.float64))
    return (u * T).floor().long().clamp(0, T - 1)


def sample_timesteps(n: int, schedule: NoiseSchedule, cfg: DiffusionConfig,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw n training timesteps with the sampler named by cfg.timestep_sampling."""
    if cfg.timestep_sampling == "uniform":
        return sample_uniform(n, schedule.T, generator)
    if cfg.timestep_sampling == "lognormal":
        return sample_lognormal(n, schedule, cfg.lognormal_mean, cfg.lognormal_std, generator)
    if cfg.timestep_sampling == "logit_normal":
        return sample_logit_normal(n, schedule.T, cfg.logit_normal_mean, cfg.logit_normal_std, generator)
    raise ValueError(f"diffusion.timestep_sampling must be one of {TIMESTEP_SAMPLERS}, "
                     f"got {cfg.timestep_sampling!r}")
