"""Style in the generated images, read by the style oracle (style_oracle.py): whether the image has the style that
was asked for, whether forcing a style expert draws its style, and whether style and quality compose.

  conditioning  the tier rows' held-out prompts whose post has a style (its tags carry that style's tags): the
                share of images the oracle reads as the post's style, per style and per tier, beside the share of
                the decoded held-out latents of that style it reads right (the ceiling in this run)
  steering      the style grid's prompts at tier 3 with the style experts forced to expert k (the generation
                API's override, `style=k`), for each k: the share of images read as style k
  composition   COMPOSITION_PROMPT at tier 3 over COMPOSITION_SEEDS seeds: the experts that fire
                (generate.expert_routing), the styles read, the share read dark, the mean sharpness

Headline numbers pool the styles the oracle reads after the VAE (style_oracle.READABLE_STYLES); the others are
listed as unreadable, with no number. Chance is 1/NUM_STYLES: the oracle answers one of all eight styles.
"""

from __future__ import annotations

import math

import numpy as np

from vampdiffusion.evaluation.style_oracle import NUM_STYLES, READABLE_STYLES, StyleReading

COMPOSITION_PROMPT = "gothic, dark, masterpiece"  # the research document's composition check (§5.4)
COMPOSITION_TIER = 3
COMPOSITION_SEEDS = 16        # images of the composition prompt (seeds 0..15)
GOTHIC = 0                    # the style the composition prompt asks for
UNREADABLE = "unreadable: the style oracle does not read this style after the VAE (docs/evaluation.md#style-oracle)"


def share(hits: list[bool]) -> float | None:
    return float(np.mean(hits)) if hits else None


def readable_mean(per_style: dict[str, dict], readable: tuple[int, ...]) -> float | None:
    """The share read right over the readable styles' images (pooled, not averaged per style)."""
    hits = sum(per_style[str(k)]["hits"] for k in readable)
    count = sum(per_style[str(k)]["count"] for k in readable)
    return hits / count if count else None


def per_style_accuracy(read: list[int], styles: list[int], readable: tuple[int, ...]) -> dict[str, dict]:
    """Per style: images of it, how many the oracle reads as it, their share (None for an unreadable style)."""
    out = {}
    for k in range(NUM_STYLES):
        hits = [r == k for r, s in zip(read, styles) if s == k]
        out[str(k)] = {"count": len(hits), "hits": int(sum(hits)),
                       "accuracy": share(hits) if k in readable else None}
        if k not in readable:
            out[str(k)]["status"] = UNREADABLE
    return out


def conditioning_results(generated: dict[int, list[StyleReading]], prompt_styles: list[int],
                         real: list[StyleReading], real_styles: list[int], real_tiers: np.ndarray,
                         readable: tuple[int, ...] = READABLE_STYLES) -> dict:
    """Style conditioning accuracy of the generated images (per tier, aligned with prompt_styles; -1: the post
    has no style) at the top tier and per tier, beside the oracle's accuracy on the decoded held-out latents of
    the same tier (its ceiling in this run)."""
    top = max(generated)
    per_tier = {q: per_style_accuracy([r.style for r in readings], prompt_styles[:len(readings)], readable)
                for q, readings in generated.items()}
    calibration = {q: per_style_accuracy([r.style for r, t in zip(real, real_tiers) if t == q],
                                         [c for c, t in zip(real_styles, real_tiers) if t == q], readable)
                   for q in generated}
    return {"accuracy": readable_mean(per_tier[top], readable), "tier": top, "chance": 1 / NUM_STYLES,
            "readable_styles": list(readable), "per_style": per_tier[top],
            "per_tier": {str(q): readable_mean(v, readable) for q, v in per_tier.items()},
            "calibration": readable_mean(calibration[top], readable), "calibration_per_style": calibration[top],
            "calibration_per_tier": {str(q): readable_mean(v, readable) for q, v in calibration.items()}}


def steering_results(read_by_expert: dict[int, list[StyleReading]], readable: tuple[int, ...] = READABLE_STYLES) -> dict:
    """Per forced expert k: the share of images read as style k, and the shares of every style read."""
    per_expert, matrix = {}, []
    for k, readings in sorted(read_by_expert.items()):
        read = np.bincount([r.style for r in readings], minlength=NUM_STYLES) / max(len(readings), 1)
        matrix.append(read.round(6).tolist())
        per_expert[str(k)] = {"count": len(readings), "read_as_k": float(read[k]) if k in readable else None}
        if k not in readable:
            per_expert[str(k)]["status"] = UNREADABLE
    shares = [v["read_as_k"] for k, v in per_expert.items() if int(k) in readable]
    return {"per_expert": per_expert, "expert_read": matrix, "chance": 1 / NUM_STYLES,
            "read_as_k_mean": float(np.mean(shares)) if shares else None}


def composition_results(routing: dict, styles: list[StyleReading], sharpness: list[float],
                        reference_sharpness: float | None) -> dict:
    """The experts the composition prompt fires, and what the oracles read in its images."""
    finite = [v for v in sharpness if math.isfinite(v)]
    read = np.bincount([r.style for r in styles], minlength=NUM_STYLES) / max(len(styles), 1)
    return {"prompt": routing["prompt"], "quality": routing["quality"], "images": len(styles),
            "unknown_tags": routing["unknown_tags"], "style_blocks": routing["style_blocks"],
            "style_top2_per_block": routing["style_top2_per_block"],
            "style_top1_per_block": routing["style_top1_per_block"],
            "quality_blocks": routing["quality_blocks"], "quality_expert_per_block": routing["quality_expert_per_block"],
            "style_read": read.round(6).tolist(), "read_gothic": float(read[GOTHIC]),
            "read_dark": share([r.dark for r in styles]),
            "sharpness": float(np.mean(finite)) if finite else None,
            "sharpness_tier_reference": reference_sharpness}
