"""Noise schedule (docs/diffusion.md): β schedules, zero terminal SNR, ᾱ / α / σ / SNR tables, q_sample, v <-> x0, ε.

Timesteps are indices t ∈ {0, …, T−1}; t = T−1 is the terminal step. With zero terminal SNR
ᾱ[T−1] = 0 exactly, so α = 0, σ = 1 there and every formula below stays finite: x0 = −v, ε = x_t.
Tables are built in float64 and kept as float64 CPU tensors; `coef` gathers and casts per batch.
"""

from __future__ import annotations

import math

import torch

from vampdiffusion.config import DiffusionConfig

BETA_SCHEDULES = ("linear", "scaled_linear", "cosine")


# ----------------------------------------------------------------------------
# β schedules
# ----------------------------------------------------------------------------

def linear_betas(T: int, beta_start: float, beta_end: float) -> torch.Tensor:
    # β_t linear from beta_start to beta_end
    return torch.linspace(beta_start, beta_end, T, dtype=torch.float64)


def scaled_linear_betas(T: int, beta_start: float, beta_end: float) -> torch.Tensor:
    # √β_t linear (Stable Diffusion)
    return torch.linspace(beta_start ** 0.5, beta_end ** 0.5, T, dtype=torch.float64) ** 2


def cosine_betas(T: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    # ᾱ(τ) = cos²(((τ + s)/(1 + s)) π/2), β_t = min(1 − ᾱ((t+1)/T)/ᾱ(t/T), max_beta)  (Nichol & Dhariwal)
    tau = torch.arange(T + 1, dtype=torch.float64) / T
    f = torch.cos((tau + s) / (1 + s) * math.pi / 2) ** 2
    return (1 - f[1:] / f[:-1]).clamp(max=max_beta)


def make_betas(cfg: DiffusionConfig) -> torch.Tensor:
    if cfg.num_timesteps < 2:
        raise ValueError(f"diffusion.num_timesteps must be >= 2, got {cfg.num_timesteps}")
    if cfg.beta_schedule == "linear":
        return linear_betas(cfg.num_timesteps, cfg.beta_start, cfg.beta_end)
    if cfg.beta_schedule == "scaled_linear":
        return scaled_linear_betas(cfg.num_timesteps, cfg.beta_start, cfg.beta_end)
    if cfg.beta_schedule == "cosine":
        return cosine_betas(cfg.num_timesteps)
    raise ValueError(f"diffusion.beta_schedule must be one of {BETA_SCHEDULES}, got {cfg.beta_schedule!r}")


def rescale_zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    """Lin et al. 2023, Algorithm 1: shift and scale √ᾱ so √ᾱ_T = 0 and √ᾱ_1 is unchanged."""
    sqrt_ab = torch.cumprod(1 - betas.double(), 0).sqrt()        # (T,)
    a0, aT = sqrt_ab[0].clone(), sqrt_ab[-1].clone()
    # √ᾱ ← (√ᾱ − √ᾱ_T) · √ᾱ_1 / (√ᾱ_1 − √ᾱ_T)
    sqrt_ab = (sqrt_ab - aT) * a0 / (a0 - aT)
    ab = sqrt_ab ** 2
    # α_t = ᾱ_t / ᾱ_{t−1}, α_1 = ᾱ_1; β = 1 − α
    alphas = torch.cat([ab[:1], ab[1:] / ab[:-1]])
    return 1 - alphas


# ----------------------------------------------------------------------------
# The schedule
# ----------------------------------------------------------------------------

class NoiseSchedule:
    """ᾱ, α = √ᾱ, σ = √(1−ᾱ), SNR = ᾱ/(1−ᾱ) over t = 0..T−1, and the v-parameterisation."""

    def __init__(self, cfg: DiffusionConfig):
        betas = make_betas(cfg)
        if cfg.zero_terminal_snr:
            betas = rescale_zero_terminal_snr(betas)
        self.T = cfg.num_timesteps
        self.betas = betas                                        # (T,) float64
        self.alpha_bar = torch.cumprod(1 - betas, 0)              # ᾱ_t = Π (1 − β_s)
        self.alpha = self.alpha_bar.sqrt()                        # α_t = √ᾱ_t
        self.sigma = (1 - self.alpha_bar).sqrt()                  # σ_t = √(1 − ᾱ_t)
        self.snr = self.alpha_bar / (1 - self.alpha_bar)          # SNR_t = ᾱ_t / (1 − ᾱ_t)

    def coef(self, table: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """table[t] shaped (B, 1, 1, …) to broadcast against `like` (B, …), in like's dtype/device."""
        c = table.index_select(0, t.detach().long().cpu()).to(device=like.device, dtype=like.dtype)
        return c.view(-1, *([1] * (like.dim() - 1)))

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        # x_t = α_t x0 + σ_t ε
        return self.coef(self.alpha, t, x0) * x0 + self.coef(self.sigma, t, x0) * eps

    def v_target(self, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        # v = α_t ε − σ_t x0
        return self.coef(self.alpha, t, x0) * eps - self.coef(self.sigma, t, x0) * x0

    def x0_from_v(self, x_t: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        # x0 = α_t x_t − σ_t v
        return self.coef(self.alpha, t, x_t) * x_t - self.coef(self.sigma, t, x_t) * v

    def eps_from_v(self, x_t: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        # ε = σ_t x_t + α_t v
        return self.coef(self.sigma, t, x_t) * x_t + self.coef(self.alpha, t, x_t) * v

    def edm_log_sigma(self) -> torch.Tensor:
        """ln σ_EDM = ½ ln((1−ᾱ)/ᾱ) per step (T,); +inf at the terminal step when ᾱ_T = 0."""
        return 0.5 * (torch.log1p(-self.alpha_bar) - torch.log(self.alpha_bar))
