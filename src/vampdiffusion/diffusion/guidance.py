"""Classifier-free guidance (docs/model.md, docs/diffusion.md) with guidance rescale φ (Lin et al. 2023 §3.4).

The unconditional input is the empty tag sequence [BOS][EOS], or the tags of a negative prompt
(`negative_tag_ids`), so guidance pushes away from them; the quality tier (and a forced style
expert or style mix) is kept, unless `negative_quality` names a tier for the unconditional branch —
the quality counterpart of a "worst quality" negative prompt: guidance then also pushes away from
that tier (the model saw every tier with empty tags in training, docs/model.md). Unconditional and conditional
passes run as one batch of 2B; a VampDiT encodes the two tag sequences once per sampling run.
"""

from __future__ import annotations

import torch

from vampdiffusion.data.vocab import BOS, EOS, PAD
from vampdiffusion.diffusion.samplers import PredictV


def cfg_combine(v_uncond: torch.Tensor, v_cond: torch.Tensor, scale: float) -> torch.Tensor:
    # v_cfg = v_u + w (v_c − v_u)
    return v_uncond + scale * (v_cond - v_uncond)


def rescale_guidance(v_cfg: torch.Tensor, v_cond: torch.Tensor, phi: float) -> torch.Tensor:
    """v = φ · v_cfg · std(v_c)/std(v_cfg) + (1 − φ) · v_cfg, std per image over (C, H, W)."""
    dims = list(range(1, v_cfg.dim()))
    std_cond = v_cond.std(dim=dims, keepdim=True)                 # (B, 1, 1, 1)
    std_cfg = v_cfg.std(dim=dims, keepdim=True)                   # (B, 1, 1, 1)
    ratio = torch.where(std_cfg > 0, std_cond / std_cfg, torch.ones_like(std_cfg))  # a constant v_cfg stays
    factor = phi * ratio + (1 - phi)
    return v_cfg * factor


def guided_v(v_uncond: torch.Tensor, v_cond: torch.Tensor, scale: float, rescale: float) -> torch.Tensor:
    """CFG at scale w followed by guidance rescale φ; φ = 0 is plain CFG."""
    v_cfg = cfg_combine(v_uncond, v_cond, scale)
    if rescale == 0:
        return v_cfg
    return rescale_guidance(v_cfg, v_cond, rescale)


def empty_tags_like(tag_ids: torch.Tensor) -> torch.Tensor:
    """[BOS][EOS][PAD]… with the shape of tag_ids (B, L)."""
    empty = torch.full_like(tag_ids, PAD)
    empty[:, 0] = BOS
    empty[:, 1] = EOS
    return empty


def _encodes_once(model: torch.nn.Module) -> bool:
    """A plain (not FSDP2-sharded) VampDiT: its tag encoding can be reused across sampling steps."""
    if not (hasattr(model, "encode_tags") and hasattr(model, "denoise")):
        return False
    return all(type(p) is torch.nn.Parameter or type(p) is torch.Tensor for p in model.parameters())


def guided_predictor(model: torch.nn.Module, tag_ids: torch.Tensor, quality: torch.Tensor,
                     scale: float, rescale: float, style_override: torch.Tensor | None = None,
                     negative_quality: int = -1, negative_tag_ids: torch.Tensor | None = None) -> PredictV:
    """predict_v(x, t) for a sampler: one batched 2B pass (uncond first), then CFG + rescale.

    At w = 1 the guided prediction is the conditional one, so only the conditional half runs.
    negative_quality >= 0: the unconditional half uses that tier instead of the prompt's.
    negative_tag_ids (B, L): the unconditional half's tags instead of [BOS][EOS] (a negative prompt).
    """
    guided = scale != 1
    if negative_tag_ids is not None and negative_tag_ids.shape != tag_ids.shape:
        raise ValueError(f"negative_tag_ids must have the shape of tag_ids {tuple(tag_ids.shape)}, "
                         f"got {tuple(negative_tag_ids.shape)}")
    if not guided:
        tags2, quality2, style2 = tag_ids, quality, style_override
    else:
        q_uncond = quality if negative_quality < 0 else torch.full_like(quality, negative_quality)
        uncond_tags = empty_tags_like(tag_ids) if negative_tag_ids is None else negative_tag_ids
        tags2 = torch.cat([uncond_tags, tag_ids])
        quality2 = torch.cat([q_uncond, quality])
        style2 = None if style_override is None else torch.cat([style_override, style_override])
    e_tag2 = model.encode_tags(tags2)[2] if _encodes_once(model) else None   # (nB, d), once per run

    def predict_v(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        x2, t2 = (torch.cat([x, x]), torch.cat([t, t])) if guided else (x, t)
        if e_tag2 is not None:
            v, _ = model.denoise(x2, t2, e_tag2, quality2, style_override=style2)
        else:
            v, _ = model(x2, t2, tags2, quality2, style_override=style2)        # (2B or B, C, H, W)
        if not guided:
            return v
        v_uncond, v_cond = v.chunk(2)
        return guided_v(v_uncond, v_cond, scale, rescale)

    return predict_v
