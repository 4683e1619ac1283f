"""Samplers (docs/diffusion.md): DDIM (η = 0), Euler, DPM-Solver++(2M), all with `trailing` spacing.

A sampler integrates the probability-flow ODE from x_T ~ N(0, I) at t = T−1 down to a clean
sample, calling `predict_v(x_t (B,…), t (B,) long) -> v (B,…)` once per step (`steps` calls).
The last call's x0 prediction is the result (the step to σ = 0 lands on x0 in all three).
Update coefficients are Python floats (float64) taken from the schedule tables.

Terminal step: zero terminal SNR makes ᾱ[T−1] = 0, i.e. EDM σ̃ = σ/α = ∞. DDIM only uses α and σ
and needs nothing special. Euler works in x̃ = x/α and DPM-Solver++ in λ = ln(α/σ): both break
at α = 0, so they read ᾱ[T−1] clamped to `alpha_bar_min` (2⁻²⁴, as diffusers does).
"""

from __future__ import annotations

import math
import typing
from typing import Callable

import torch

from vampdiffusion.config import SamplerName
from vampdiffusion.diffusion.schedule import NoiseSchedule

SAMPLERS: tuple[str, ...] = typing.get_args(SamplerName)
SAMPLER_NAMES = {"ddim": "DDIM", "euler": "Euler", "dpmpp2m": "DPM++ 2M"}  # as anime UIs write them

PredictV = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Progress = Callable[[int, int], None]  # (steps done, steps in all)


def trailing_timesteps(T: int, steps: int) -> list[int]:
    """`trailing` spacing (Lin et al. §3.3, diffusers): round(T, T−T/n, …) − 1, starting at T−1."""
    if not 1 <= steps <= T:
        raise ValueError(f"steps must be in 1..{T}, got {steps}")
    ratio = T / steps
    return [int(round(T - i * ratio)) - 1 for i in range(steps)]


def clamped_alpha_bar(schedule: NoiseSchedule, alpha_bar_min: float) -> list[float]:
    """ᾱ as Python floats with ᾱ[t] >= alpha_bar_min (only the terminal step moves)."""
    return [max(a, alpha_bar_min) for a in schedule.alpha_bar.tolist()]


def _tensor_t(t: int, x: torch.Tensor) -> torch.Tensor:
    return torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)


def _report(progress: Progress | None, i: int, n: int) -> None:
    if progress is not None:
        progress(i + 1, n)


# ----------------------------------------------------------------------------
# DDIM (η = 0)
# ----------------------------------------------------------------------------

@torch.no_grad()
def sample_ddim(predict_v: PredictV, x_T: torch.Tensor, schedule: NoiseSchedule, steps: int,
                progress: Progress | None = None) -> torch.Tensor:
    ts = trailing_timesteps(schedule.T, steps)
    ab = schedule.alpha_bar.tolist()
    x = x_T
    for i, t in enumerate(ts):
        a_t, s_t = math.sqrt(ab[t]), math.sqrt(1 - ab[t])
        v = predict_v(x, _tensor_t(t, x))
        x0 = a_t * x - s_t * v                                     # x0 = α_t x_t − σ_t v
        eps = s_t * x + a_t * v                                    # ε = σ_t x_t + α_t v
        _report(progress, i, steps)
        if i == steps - 1:
            return x0
        s = ts[i + 1]
        x = math.sqrt(ab[s]) * x0 + math.sqrt(1 - ab[s]) * eps     # x_s = α_s x0 + σ_s ε
    raise AssertionError("unreachable")


# ----------------------------------------------------------------------------
# Euler (probability-flow ODE in EDM coordinates x̃ = x/α, σ̃ = σ/α: dx̃/dσ̃ = ε)
# ----------------------------------------------------------------------------

@torch.no_grad()
def sample_euler(predict_v: PredictV, x_T: torch.Tensor, schedule: NoiseSchedule, steps: int,
                 alpha_bar_min: float, progress: Progress | None = None) -> torch.Tensor:
    ts = trailing_timesteps(schedule.T, steps)
    ab = clamped_alpha_bar(schedule, alpha_bar_min)
    x = x_T
    for i, t in enumerate(ts):
        a_t, s_t = math.sqrt(ab[t]), math.sqrt(1 - ab[t])
        v = predict_v(x, _tensor_t(t, x))
        x0 = a_t * x - s_t * v                                     # x0 = α_t x_t − σ_t v
        eps = s_t * x + a_t * v                                    # ε = σ_t x_t + α_t v = dx̃/dσ̃
        _report(progress, i, steps)
        if i == steps - 1:
            return x0
        s = ts[i + 1]
        a_s, s_s = math.sqrt(ab[s]), math.sqrt(1 - ab[s])
        # x̃_s = x̃_t + (σ̃_s − σ̃_t) ε,  x = α x̃
        x = a_s * (x / a_t + (s_s / a_s - s_t / a_t) * eps)
    raise AssertionError("unreachable")


# ----------------------------------------------------------------------------
# DPM-Solver++(2M) (Lu et al. 2022, data prediction, multistep, midpoint form as in diffusers)
# ----------------------------------------------------------------------------

@torch.no_grad()
def sample_dpmpp2m(predict_v: PredictV, x_T: torch.Tensor, schedule: NoiseSchedule, steps: int,
                   alpha_bar_min: float, progress: Progress | None = None) -> torch.Tensor:
    ts = trailing_timesteps(schedule.T, steps)
    ab = clamped_alpha_bar(schedule, alpha_bar_min)
    lam = [0.5 * (math.log(a) - math.log1p(-a)) for a in ab]      # λ_t = ln(α_t/σ_t)
    x = x_T
    prev: tuple[float, torch.Tensor] | None = None                 # (λ, x0) of the previous step
    for i, t in enumerate(ts):
        a_t, s_t = math.sqrt(ab[t]), math.sqrt(1 - ab[t])
        v = predict_v(x, _tensor_t(t, x))
        x0 = a_t * x - s_t * v                                     # D_0 = x0 = α_t x_t − σ_t v
        _report(progress, i, steps)
        if i == steps - 1:
            return x0                                              # first-order step to σ = 0
        s = ts[i + 1]
        a_s, s_s = math.sqrt(ab[s]), math.sqrt(1 - ab[s])
        h = lam[s] - lam[t]                                        # h = λ_s − λ_t
        phi = math.expm1(-h)                                       # e^{−h} − 1
        if prev is None:
            d = x0                                                 # first step: DPM-Solver++(1) = DDIM
        else:
            r = (lam[t] - prev[0]) / h                             # r = h_{i−1} / h_i
            d = x0 + (0.5 / r) * (x0 - prev[1])                    # D = D_0 + ½ (D_0 − D_1)/r
        x = (s_s / s_t) * x - a_s * phi * d                        # x_s = (σ_s/σ_t) x_t − α_s (e^{−h} − 1) D
        prev = (lam[t], x0)
    raise AssertionError("unreachable")


def sample(sampler: str, predict_v: PredictV, x_T: torch.Tensor, schedule: NoiseSchedule, steps: int,
           alpha_bar_min: float, progress: Progress | None = None) -> torch.Tensor:
    """Run the sampler named `sampler` ("ddim" | "euler" | "dpmpp2m")."""
    if sampler == "ddim":
        return sample_ddim(predict_v, x_T, schedule, steps, progress)
    if sampler == "euler":
        return sample_euler(predict_v, x_T, schedule, steps, alpha_bar_min, progress)
    if sampler == "dpmpp2m":
        return sample_dpmpp2m(predict_v, x_T, schedule, steps, alpha_bar_min, progress)
    raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
