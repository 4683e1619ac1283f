"""The noise schedule table and a text histogram of each timestep sampler.

So a user sees what each choice trains on: e.g. EDM's lognormal(−1.2, 1.2) almost never draws
t > 900, the region zero terminal SNR exists for.
"""

from __future__ import annotations

import math

import torch

from vampdiffusion.config import Config, DiffusionConfig
from vampdiffusion.diffusion.samplers import trailing_timesteps
from vampdiffusion.diffusion.schedule import NoiseSchedule
from vampdiffusion.diffusion.timesteps import TIMESTEP_SAMPLERS, sample_timesteps

TABLE_FRACTIONS = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0)  # rows of the table, as t/T
BAR_WIDTH = 40


def schedule_table(schedule: NoiseSchedule) -> str:
    T = schedule.T
    rows = sorted({min(round(f * T), T - 1) for f in TABLE_FRACTIONS} | {T - 2})
    log_sigma = schedule.edm_log_sigma()
    lines = [f"{'t':>6} {'alpha_bar':>12} {'alpha':>10} {'sigma':>8} {'SNR':>11} {'ln SNR':>8} {'EDM sigma':>11}"]
    for t in rows:
        ab, snr = schedule.alpha_bar[t].item(), schedule.snr[t].item()
        ln_snr = math.log(snr) if snr > 0 else -math.inf
        lines.append(f"{t:>6} {ab:>12.6g} {schedule.alpha[t].item():>10.5f} {schedule.sigma[t].item():>8.5f} "
                     f"{snr:>11.4g} {ln_snr:>8.3f} {math.exp(log_sigma[t].item()):>11.4g}")
    finite = log_sigma[torch.isfinite(log_sigma)].exp()
    lines.append(f"terminal SNR (t={T - 1}): {schedule.snr[-1].item():.3g}   "
                 f"EDM sigma range: {finite.min().item():.4g} .. {finite.max().item():.4g}"
                 f"{' (then inf at the terminal step)' if len(finite) < T else ''}")
    return "\n".join(lines)


def histogram(t: torch.Tensor, T: int, bins: int) -> str:
    """Text histogram of timesteps over `bins` equal ranges of 0..T−1."""
    width = T / bins
    counts = torch.bincount((t.double() / width).floor().long().clamp(max=bins - 1), minlength=bins)
    share = counts.double() / len(t)
    top = share.max().item()
    lines = []
    for i, s in enumerate(share.tolist()):
        lo, hi = math.ceil(i * width), math.ceil((i + 1) * width) - 1
        lines.append(f"  {lo:>4}-{hi:<4} {100 * s:6.2f}% {'#' * round(BAR_WIDTH * s / top) if top else ''}")
    return "\n".join(lines)


def sampler_summary(t: torch.Tensor, T: int) -> str:
    above = (t > 0.9 * T).double().mean().item()
    terminal = (t == T - 1).double().mean().item()
    return (f"  mean t {t.double().mean().item():.1f}, median {t.double().median().item():.0f}, "
            f"t > {int(0.9 * T)}: {100 * above:.2f}%, t = {T - 1}: {100 * terminal:.3f}%")


def sampler_description(dcfg: DiffusionConfig, name: str) -> str:
    if name == "lognormal":
        return f"lognormal(P_mean={dcfg.lognormal_mean}, P_std={dcfg.lognormal_std})"
    if name == "logit_normal":
        return f"logit_normal(m={dcfg.logit_normal_mean}, s={dcfg.logit_normal_std})"
    return "uniform"


def schedule_report(cfg: Config, n: int = 100_000, bins: int = 20, seed: int = 0) -> str:
    """What `vamp schedule` prints: the schedule table, the sampler's timesteps, a histogram of n draws per sampler."""
    if n < 1:
        raise ValueError(f"the number of draws must be >= 1, got {n}")
    if not 1 <= bins <= 1000:
        raise ValueError(f"the number of histogram bins must be in 1..1000, got {bins}")
    dcfg = cfg.diffusion
    schedule = NoiseSchedule(dcfg)
    out = [f"noise schedule: {dcfg.beta_schedule}, T={dcfg.num_timesteps}, "
           f"zero terminal SNR {'on' if dcfg.zero_terminal_snr else 'off'}",
           schedule_table(schedule), ""]
    steps = min(cfg.sample.steps, schedule.T)
    out.append(f"sampling: {cfg.sample.sampler}, {steps} trailing steps: {trailing_timesteps(schedule.T, steps)}")
    out.append("")
    for name in TIMESTEP_SAMPLERS:
        mark = "  <- diffusion.timestep_sampling" if name == dcfg.timestep_sampling else ""
        t = sample_timesteps(n, schedule, DiffusionConfig(**{**vars(dcfg), "timestep_sampling": name}),
                             torch.Generator().manual_seed(seed))
        out.append(f"{sampler_description(dcfg, name)}: {n} draws{mark}")
        out.append(histogram(t, schedule.T, bins))
        out.append(sampler_summary(t, schedule.T))
        out.append("")
    return "\n".join(out)
