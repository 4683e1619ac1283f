"""Training loss (docs/diffusion.md): L = L_v + λ_S L_bal^S + λ_Q L_bal^Q + λ_spec (L_spec^S + L_spec^Q).

Also the classifier-free-guidance tag dropout (docs/model.md): with probability cfg_dropout an image's
tags become the empty sequence [BOS][EOS]; its quality tier is kept. It lives here and only here.
Randomness (t, ε, dropout) is drawn on the CPU from `generator`, so a run's noise does not depend
on the device.
"""

from __future__ import annotations

import torch

from vampdiffusion.config import DiffusionConfig
from vampdiffusion.diffusion.guidance import empty_tags_like
from vampdiffusion.diffusion.schedule import NoiseSchedule
from vampdiffusion.diffusion.timesteps import sample_timesteps


def empty_tags_where(tag_ids: torch.Tensor, drop: torch.Tensor) -> torch.Tensor:
    """tag_ids (B, L), drop (B,) bool -> dropped rows replaced by [BOS][EOS][PAD]…"""
    return torch.where(drop[:, None], empty_tags_like(tag_ids), tag_ids)


LOSS_WEIGHTINGS = ("none", "min_snr")


def loss_weights(schedule: NoiseSchedule, dcfg: DiffusionConfig, t: torch.Tensor) -> torch.Tensor:
    """Per-image weight of L_v at timesteps t (B,) -> (B,) float32.

    ‖v̂ − v‖² = (SNR_t + 1) ‖x̂0 − x0‖², so plain L_v weights the x0 error by SNR + 1, which grows without
    bound at the low-noise end where the target is mostly unpredictable pixel noise. `min_snr` caps that
    implied x0 weight at γ (Hang et al. 2023's min-SNR-γ, written for v-prediction so that the weight is 1,
    not 0, at and near the zero-SNR terminal step): w_t = min(1, γ / (SNR_t + 1))."""
    if dcfg.loss_weighting == "none":
        return torch.ones(t.shape, dtype=torch.float32, device=t.device)
    if dcfg.loss_weighting == "min_snr":
        if dcfg.min_snr_gamma <= 0:
            raise ValueError(f"diffusion.min_snr_gamma must be > 0, got {dcfg.min_snr_gamma}")
        snr = schedule.snr.to(t.device)[t]
        return torch.clamp(dcfg.min_snr_gamma / (snr + 1.0), max=1.0).float()
    raise ValueError(f"diffusion.loss_weighting must be one of {LOSS_WEIGHTINGS}, got {dcfg.loss_weighting!r}")


def training_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], schedule: NoiseSchedule,
                  dcfg: DiffusionConfig, lambda_spec: float,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One micro-batch's loss and its parts (detached tensors, no host sync).

    batch: {"latent": (B,4,h,w), "tag_ids": (B,L) long, "quality": (B,) long, "style": (B,) long}.
    """
    x0 = batch["latent"]
    device = x0.device
    B = x0.shape[0]
    t = sample_timesteps(B, schedule, dcfg, generator).to(device)                     # (B,)
    eps = torch.randn(x0.shape, generator=generator, dtype=torch.float32).to(device, x0.dtype)  # (B,4,h,w)
    drop = (torch.rand(B, generator=generator) < dcfg.cfg_dropout).to(device)       # (B,) bool
    tag_ids = empty_tags_where(batch["tag_ids"], drop)
    quality = batch["quality"]
    # a dropped image's tags no longer name its style: it does not train the style router's CE
    style = torch.where(drop, torch.full_like(batch["style"], -1), batch["style"])

    x_t = schedule.q_sample(x0, t, eps)                         # x_t = α_t x0 + σ_t ε
    v = schedule.v_target(x0, t, eps)                           # v = α_t ε − σ_t x0
    v_pred, aux = model(x_t, t, tag_ids, quality)
    per_image = (v_pred.float() - v.float()).pow(2).flatten(1).mean(1)    # ‖v_θ − v‖² per image (B,)
    loss_v = (per_image * loss_weights(schedule, dcfg, t)).mean()          # L_v: the w_t-weighted mean (w = 1: plain)
    spec_style, spec_quality = aux.specialisation_losses(style, quality)
    # L = L_v + λ_S L_bal^S + λ_Q L_bal^Q + λ_spec (L_spec^S + L_spec^Q)
    loss = (loss_v + dcfg.lambda_style * aux.balance_style + dcfg.lambda_quality * aux.balance_quality
            + lambda_spec * (spec_style + spec_quality))
    metrics = {
        "v_mse": loss_v.detach(),
        "balance_style": aux.balance_style.detach(),
        "balance_quality": aux.balance_quality.detach(),
        "spec_style": spec_style.detach(),
        "spec_quality": spec_quality.detach(),
        "cfg_dropped": drop.float().mean(),
    }
    return loss, metrics
