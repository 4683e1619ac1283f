"""Style in the generated images, read by the style oracle (style_oracle.py): whether the image has the style that
was asked for, whether forcing a style expert draws its style, and whether style and quality compose.

  conditioning  the tier rows' held-out prompts whose post has a style (its tags carry that style's tags): the
                share of images the oracle reads as the post's style, per style and per tier, beside the share of
                the decoded held-out latents of that style it reads right (the ceiling in this run)
  steering      the first STEERING_PROMPTS_PER_STYLE of the style grid's prompts of each style, at tier 3, with the
                style experts forced to expert k (the generation API's override, `style=k`), for each k: the
                share of images read as style k, and its lift over the share read as k under the other experts
  composition   COMPOSITION_PROMPT at tier 3 over COMPOSITION_SEEDS seeds: the experts that fire
                (generate.expert_routing), the styles read, the share read dark, the mean sharpness

Headline numbers pool the styles the oracle reads after the VAE (style_oracle.READABLE_STYLES); the others are
listed as unreadable, with no number. Chance is 1/NUM_STYLES: the oracle answers one of all eight styles.
Beside each share, `typical`: the share of the images that are as near their nearest style as 99 % of the set's
own round trips (StyleReading.typical); a reading of an untypical image is the nearest of eight styles that
all fit it badly.
"""

from __future__ import annotations

import math

import numpy as np

from vampdiffusion.evaluation.style_oracle import NUM_STYLES, READABLE_STYLES, StyleReading

COMPOSITION_PROMPT = "gothic, dark, masterpiece"  # the research document's composition check
COMPOSITION_TIER = 3
COMPOSITION_SEEDS = 16        # images of the composition prompt (seeds 0..15)
STEERING_PROMPTS_PER_STYLE = 2  # steering prompts of each style label (x 8 styles x 8 experts images)
GOTHIC = 0                    # the style the composition prompt asks for
UNREADABLE = "unreadable: the style oracle does not read this style after the VAE (docs/evaluation.md#style-oracle)"


def share(hits: list[bool]) -> float | None:
    return float(np.mean(hits)) if hits else None


def readable_mean(per_style: dict[str, dict], readable: tuple[int, ...]) -> float | None:
    """The share read right over the readable styles' images (pooled, not averaged per style)."""
    hits = sum(per_style[str(k)]["hits"] for k in readable)
    count = sum(per_style[str(k)]["count"] for k in readable)
    return hits / count if count else None


def per_style_accuracy(read: list[StyleReading], styles: list[int], readable: tuple[int, ...]) -> dict[str, dict]:
    """Per style: images of it, how many the oracle reads as it, their share (None for an unreadable style), and
    the share of them that are typical (as near a style as the set's own round trips are)."""
    out = {}
    for k in range(NUM_STYLES):
        mine = [r for r, s in zip(read, styles) if s == k]
        hits = [r.style == k for r in mine]
        out[str(k)] = {"count": len(hits), "hits": int(sum(hits)),
                       "accuracy": share(hits) if k in readable else None, "typical": share([r.typical for r in mine])}
        if k not in readable:
            out[str(k)]["status"] = UNREADABLE
    return out


def prompted_read(read: list[int], styles: list[int]) -> list[list[int]]:
    """(NUM_STYLES, NUM_STYLES) counts: row = the prompt's style, column = the style read."""
    counts = np.zeros((NUM_STYLES, NUM_STYLES), int)
    for r, s in zip(read, styles):
        if s >= 0:
            counts[s, r] += 1
    return counts.tolist()


def conditioning_results(generated: dict[int, list[StyleReading]], prompt_styles: list[int],
                         real: list[StyleReading], real_styles: list[int], real_tiers: np.ndarray,
                         readable: tuple[int, ...] = READABLE_STYLES) -> dict:
    """Style conditioning accuracy of the generated images (per tier, aligned with prompt_styles; -1: the post
    has no style) at the top tier and per tier, beside the oracle's accuracy on the decoded held-out latents of
    the same tier (its ceiling in this run)."""
    top = max(generated)
    per_tier = {q: per_style_accuracy(readings, prompt_styles[:len(readings)], readable)
                for q, readings in generated.items()}
    calibration = {q: per_style_accuracy([r for r, t in zip(real, real_tiers) if t == q],
                                         [c for c, t in zip(real_styles, real_tiers) if t == q], readable)
                   for q in generated}
    read_top = generated[top]
    return {"accuracy": readable_mean(per_tier[top], readable), "tier": top, "chance": 1 / NUM_STYLES,
            "readable_styles": list(readable), "per_style": per_tier[top],
            "prompted_read": prompted_read([r.style for r in read_top], prompt_styles[:len(read_top)]),
            "typical": share([r.typical for r, s in zip(read_top, prompt_styles) if s >= 0]),
            "calibration_typical": share([r.typical for r, t, s in zip(real, real_tiers, real_styles) if t == top and s >= 0]),
            "per_tier": {str(q): readable_mean(v, readable) for q, v in per_tier.items()},
            "calibration": readable_mean(calibration[top], readable), "calibration_per_style": calibration[top],
            "calibration_per_tier": {str(q): readable_mean(v, readable) for q, v in calibration.items()}}


def steering_results(read_by_expert: dict[int, list[StyleReading]], readable: tuple[int, ...] = READABLE_STYLES) -> dict:
    """Per forced expert k: the share of images read as style k, its lift (minus the mean share read as k when
    the other experts are forced: the prompts' own pull towards k taken out), and the shares of every style read."""
    experts = sorted(read_by_expert)
    matrix = np.stack([np.bincount([r.style for r in read_by_expert[k]], minlength=NUM_STYLES)
                       / max(len(read_by_expert[k]), 1) for k in experts])           # (forced expert, style read)
    per_expert = {}
    for i, k in enumerate(experts):
        others = np.delete(matrix[:, k], i)
        lift = float(matrix[i, k] - others.mean()) if len(others) else None
        per_expert[str(k)] = {"count": len(read_by_expert[k]), "read_as_k": float(matrix[i, k]) if k in readable else None,
                              "lift": lift if k in readable else None}
        if k not in readable:
            per_expert[str(k)]["status"] = UNREADABLE
    shares = [v["read_as_k"] for k, v in per_expert.items() if int(k) in readable]
    lifts = [v["lift"] for k, v in per_expert.items() if int(k) in readable and v["lift"] is not None]
    return {"per_expert": per_expert, "expert_read": matrix.round(6).tolist(), "chance": 1 / NUM_STYLES,
            "read_as_k_mean": float(np.mean(shares)) if shares else None,
            "lift_mean": float(np.mean(lifts)) if lifts else None}


def composition_results(routing: dict, styles: list[StyleReading], sharpness: list[float],
                        reference_sharpness: float | None) -> dict:
    """The experts the composition prompt fires, and what the oracles read in its images."""
    finite = [v for v in sharpness if math.isfinite(v)]
    read = np.bincount([r.style for r in styles], minlength=NUM_STYLES) / max(len(styles), 1)
    return {"prompt": routing["prompt"], "quality": routing["quality"], "images": len(styles),
            "unknown_tags": routing["unknown_tags"], "timesteps": routing["timesteps"], "style_blocks": routing["style_blocks"],
            "style_top2_per_block": routing["style_top2_per_block"],
            "style_top1_per_block": routing["style_top1_per_block"],
            "quality_blocks": routing["quality_blocks"], "quality_expert_per_block": routing["quality_expert_per_block"],
            "style_read": read.round(6).tolist(), "read_gothic": float(read[GOTHIC]),
            "read_dark": share([r.dark for r in styles]), "typical": share([r.typical for r in styles]),
            "sharpness": float(np.mean(finite)) if finite else None,
            "sharpness_tier_reference": reference_sharpness}
