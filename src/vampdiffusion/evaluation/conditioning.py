"""Conditioning accuracy on the synthetic set: oracle readings of generated images against what their prompts
asked for (the set's truth.jsonl), with chance levels; sharpness per quality tier.

The oracle is calibrated on the decoded held-out latents in the same run: an attribute it reads there below
`eval.oracle_min_accuracy` is withheld (its calibration shown instead), never reported as a number.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from vampdiffusion.evaluation.oracle import SHAPES, Palette, palette_from_summary, palette_from_truth


def read_truth(path: str | Path) -> tuple[dict[int, dict], int]:
    """truth.jsonl (written by `vamp data synth`) → {post id: record}, and the number of malformed lines skipped."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"truth file {p} not found; `vamp data synth` writes DIR/truth.jsonl")
    truth, bad = {}, 0
    for line in p.read_text().splitlines():
        try:
            t = json.loads(line)
            truth[int(t["id"])] = t
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            bad += int(bool(line.strip()))
    return truth, bad


def set_palette(truth_path: str | Path, truth: dict[int, dict]) -> Palette:
    """The palette of the set a truth file belongs to: synth.json beside it (the whole palette), else the
    colours and backgrounds its records show."""
    summary = Path(truth_path).with_name("synth.json")
    if summary.is_file():
        try:
            return palette_from_summary(json.loads(summary.read_text()))
        except (ValueError, KeyError, TypeError, IndexError):
            pass  # not a synth.json of this format: the records still say what was drawn
    return palette_from_truth(truth)


def oracle_scores(readings: list, truths: list[dict]) -> dict:
    """Per attribute: (correct, counted) of oracle readings against what the prompt asked for."""
    tally = {"colour": [0, 0], "shape": [0, 0], "background": [0, 0], "colour_pair": [0, 0]}
    for r, t in zip(readings, truths):
        tally["background"][0] += r.background == t["background"]
        tally["background"][1] += 1
        objs = t["objects"]
        if len(objs) == 1:  # single-object prompts: the largest object read is the answer
            top = r.objects[0] if r.objects else None
            tally["colour"][0] += top is not None and top.colour == objs[0]["colour"]
            tally["shape"][0] += top is not None and top.shape == objs[0]["shape"]
            tally["colour"][1] += 1
            tally["shape"][1] += 1
        else:               # two objects: share of the prompted colours among the two largest read
            found = {o.colour for o in r.objects[:len(objs)]}
            tally["colour_pair"][0] += sum(o["colour"] in found for o in objs)
            tally["colour_pair"][1] += len(objs)
    return tally


def single_object_reading(readings: list, truths: list[dict]) -> dict | None:
    """Single-object prompts: how often the largest coloured region read has the prompted colour, how often
    the prompted colour is among the regions read at all, and how many regions are read per image —
    what separates a wrong colour from extra coloured regions that outgrow the object."""
    pairs = [(r, t["objects"][0]["colour"]) for r, t in zip(readings, truths) if len(t["objects"]) == 1]
    if not pairs:
        return None
    return {"count": len(pairs),
            "largest_is_prompted": float(np.mean([bool(r.objects) and r.objects[0].colour == c for r, c in pairs])),
            "prompted_present": float(np.mean([c in {o.colour for o in r.objects} for r, c in pairs])),
            "mean_regions_read": float(np.mean([len(r.objects) for r, _ in pairs]))}


def oracle_chance(palette: Palette) -> dict:
    """Accuracy of a reader that guesses uniformly: 1/n per attribute; a random pair of distinct colours
    holds each prompted colour with probability 2/n."""
    n_colours = len(palette.colours)
    return {"colour": 1 / n_colours, "shape": 1 / len(SHAPES), "background": 1 / len(palette.backgrounds),
            "colour_pair": 2 / n_colours}


def attribute_accuracy(name: str, pooled: dict, calib: dict, per_tier: dict, chance: float, min_accuracy: float) -> dict:
    """One attribute's accuracy over the pooled generated images (counts are prompts; objects for colour_pair),
    reported only when the oracle reads the decoded real latents at least min_accuracy right."""
    c_ok, c_n = calib[name]
    calibration = c_ok / c_n if c_n else None
    ok, n = pooled[name]
    entry = {"chance": chance, "calibration": calibration, "calibration_count": c_n, "count": n}
    if calibration is not None and calibration >= min_accuracy and n:
        entry["accuracy"] = ok / n
        entry["per_tier"] = {str(q): (v[name][0] / v[name][1] if v[name][1] else None) for q, v in per_tier.items()}
        entry["status"] = "ok"
    elif calibration is None:
        entry["status"] = "withheld: no calibration images"
    elif calibration < min_accuracy:
        entry["status"] = (f"withheld: the oracle reads decoded real latents {calibration:.1%} right, below "
                           f"eval.oracle_min_accuracy={min_accuracy:.0%}")
    else:
        entry["status"] = f"withheld: no generated image was prompted with a {name} to read"
    return entry


def mean_sharpness(readings: list) -> float | None:
    v = [r.sharpness for r in readings if math.isfinite(r.sharpness)]
    return float(np.mean(v)) if v else None


def sharpness_by_tier(gen_read: dict[int, list], real_read: list, real_tiers: np.ndarray) -> dict:
    """Mean sharpness of the generated and of the decoded real images per tier; whether it rises tier by tier."""
    tiers = sorted(gen_read)
    generated = {str(q): mean_sharpness(gen_read[q]) for q in tiers}
    real = {str(q): mean_sharpness([r for r, t in zip(real_read, real_tiers) if t == q]) for q in tiers}
    seq = [generated[str(q)] for q in tiers]
    rises = all(v is not None for v in seq) and all(a < b for a, b in zip(seq, seq[1:]))
    return {"generated": generated, "real": real, "rises_with_tier": rises}


def oracle_results(gen_read: dict[int, list], gen_truths: list[dict], real_read: list, real_truths: list[dict],
                   real_tiers: np.ndarray, min_accuracy: float, palette: Palette) -> dict:
    """Oracle readings of generated images (per tier, aligned with gen_truths) and of the decoded held-out
    latents (the calibration) → accuracy per attribute with chance levels, sharpness per tier."""
    calib = oracle_scores(real_read, real_truths)
    chance = oracle_chance(palette)
    pooled_read = [r for q in sorted(gen_read) for r in gen_read[q]]
    pooled_truths = [t for q in sorted(gen_read) for t in gen_truths[:len(gen_read[q])]]
    pooled = oracle_scores(pooled_read, pooled_truths)
    per_tier = {q: oracle_scores(gen_read[q], gen_truths[:len(gen_read[q])]) for q in gen_read}
    return {
        "attributes": {name: attribute_accuracy(name, pooled, calib, per_tier, chance[name], min_accuracy)
                       for name in ("colour", "shape", "background", "colour_pair")},
        "sharpness": sharpness_by_tier(gen_read, real_read, real_tiers),
        "min_accuracy": min_accuracy,
        "single_object_colour": {"generated": single_object_reading(pooled_read, pooled_truths),
                                 "real": single_object_reading(real_read, real_truths)},
    }
