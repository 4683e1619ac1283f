"""`vamp eval --model DIR --data LATENT_DIR --out DIR [--truth truth.jsonl]`: SPEC §6 on the held-out split.

1. Routing: the model runs on every held-out batch (timesteps drawn uniformly); style / quality
   routing frequencies, entropy, routing accuracy against the labels, collapse alerts, heatmaps.
2. Generation: eval.n_per_tier prompts (0: every held-out row once) drawn from the held-out tags, each
   generated at all four quality tiers with the same seed (so tiers differ only by the quality input).
3. FID per tier (Inception weights from eval.inception_weights, else a "skipped: …" row), against the
   held-out latents decoded by the same VAE: the VAE's own reconstruction error is then common to both
   sides and FID measures the diffusion model. CLIP score likewise, when configured.
4. Synthetic-set oracle (with --truth, the synthetic dataset's truth.jsonl): conditioning accuracy per
   attribute against the prompt, with chance levels, and mean sharpness per tier. The oracle is first
   calibrated on the decoded held-out latents; an attribute it reads there below
   eval.oracle_min_accuracy is withheld, its calibration shown instead.
5. eval.json and report.html (self-contained) in --out, plus the sample grids as PNGs.

Images are measured batch by batch as they come (`Measured`), so memory does not grow with n_per_tier.

The functions are the API `vamp demo` builds on: `evaluate(...)` returns an `Evaluation`,
`eval_sections(evaluation)` the report sections, `write_outputs(...)` the files.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vampdiffusion.atomic import atomic_write, atomic_write_json
from vampdiffusion.evaluation import report as R

log = logging.getLogger("vampdiffusion.eval")

NUM_TIERS = 4
TIER_NAMES = ("Draft", "Standard", "High", "Ultra")
STYLE_NAMES = ("dark/gothic", "soft pastel", "bold lineart", "painterly", "flat color", "realistic", "chibi", "cyberpunk")


@dataclass
class Evaluation:
    """Everything one evaluation measured and drew; `results` is what eval.json holds."""
    results: dict
    tier_images: dict[int, list[Image.Image]] = field(default_factory=dict)    # tier -> first grid_columns images (prompt i at column i)
    style_images: dict[int, list[Image.Image]] = field(default_factory=dict)   # style label -> tier-3 images
    real_images: list[Image.Image] = field(default_factory=list)               # first grid_columns decoded held-out latents
    logs: dict[str, list[dict]] = field(default_factory=dict)                  # run name -> metrics.jsonl rows


# ----------------------------------------------------------------------------
# Held-out data
# ----------------------------------------------------------------------------

def heldout_batches(ds, rows: np.ndarray, batch_size: int):
    """Loader-format batches of the given dataset rows, one latent size per batch."""
    for b in np.unique(ds.bucket[rows]):
        sel = rows[ds.bucket[rows] == b]
        for i in range(0, len(sel), batch_size):
            yield sel[i:i + batch_size], ds.__getitems__(sel[i:i + batch_size].tolist())


def pick_prompt_rows(ds, n: int, seed: int) -> np.ndarray:
    """n held-out rows (a seeded permutation, repeated when the split is smaller than n); n = 0: every
    held-out row once (in the permutation's order)."""
    perm = np.random.default_rng(seed).permutation(len(ds))
    return perm if n == 0 else np.resize(perm, n)


@torch.no_grad()
def generate_batches(gen, ds, rows: np.ndarray, quality: int, seeds: list[int], batch_size: int,
                     style_override: int | None = None):
    """Yield (positions, images): one image per dataset row from its held-out tags at the given quality
    tier (position k uses seeds[k]), at the row's latent size; batches never mix sizes."""
    from vampdiffusion.generation.generate import VAE_FACTOR, decode, sample_latents
    s = gen.cfg.sample
    buckets = ds.bucket[rows]
    for b in np.unique(buckets):
        h, w = ds.bucket_shapes[b]
        positions = np.flatnonzero(buckets == b)
        for i in range(0, len(positions), batch_size):
            idx = positions[i:i + batch_size]
            B = len(idx)
            tag_ids = torch.from_numpy(ds.tag_batch(rows[idx]))
            style = None if style_override is None else torch.full((B,), style_override, dtype=torch.long)
            latents = sample_latents(gen, tag_ids, torch.full((B,), quality, dtype=torch.long),
                                     [seeds[k] for k in idx], (int(w) * VAE_FACTOR, int(h) * VAE_FACTOR),
                                     s.steps, s.sampler, s.cfg_scale, s.cfg_rescale, style,
                                     s.negative_quality)
            yield idx, decode(gen, latents)


def generate_rows(gen, ds, rows: np.ndarray, quality: int, seeds: list[int], batch_size: int,
                  style_override: int | None = None) -> list[Image.Image]:
    """generate_batches collected into a list in row order (for small sets: grids)."""
    images: list[Image.Image | None] = [None] * len(rows)
    for idx, batch in generate_batches(gen, ds, rows, quality, seeds, batch_size, style_override):
        for k, im in zip(idx, batch):
            images[k] = im
    return images  # type: ignore[return-value]


@torch.no_grad()
def decode_batches(gen, ds, rows: np.ndarray, batch_size: int):
    """Yield (positions, images): the held-out latents of these rows decoded by the model's VAE (the real reference)."""
    from vampdiffusion.generation.generate import decode
    position = {int(r): k for k, r in enumerate(rows)}
    for sel, batch in heldout_batches(ds, rows, batch_size):
        yield np.array([position[int(r)] for r in sel]), decode(gen, batch["latent"])


@dataclass
class Measured:
    """What a stream of images leaves behind, batch by batch, so that no run holds all its images:
    the first `keep` images (for the grids), Inception features, oracle readings, CLIP scores."""
    keep: int
    images: dict[int, Image.Image] = field(default_factory=dict)
    features: list[np.ndarray] = field(default_factory=list)
    readings: dict[int, object] = field(default_factory=dict)
    clip: list[float] = field(default_factory=list)

    def add(self, positions: np.ndarray, images: list[Image.Image], inception=None, batch_size: int = 32,
            read_oracle: bool = False, clip=None, prompts: list[str] | None = None) -> None:
        from vampdiffusion.evaluation.clip_score import clip_scores
        from vampdiffusion.evaluation.inception import inception_features
        from vampdiffusion.evaluation.oracle import read_image
        for k, im in zip(positions.tolist(), images):
            if k < self.keep:
                self.images[k] = im
            if read_oracle:
                self.readings[k] = read_image(np.asarray(im.convert("RGB")))
        if inception is not None:
            x = torch.from_numpy(np.stack([np.asarray(im.convert("RGB")) for im in images])).permute(0, 3, 1, 2)
            self.features.append(inception_features(inception, x.float() / 255.0, batch_size).numpy())
        if clip is not None:
            self.clip += clip_scores(clip, images, [prompts[k] for k in positions.tolist()])

    def kept(self) -> list[Image.Image]:
        return [self.images[k] for k in sorted(self.images)]

    def feature_array(self) -> np.ndarray:
        return np.concatenate(self.features) if self.features else np.zeros((0, 0))


# ----------------------------------------------------------------------------
# FID, CLIP
# ----------------------------------------------------------------------------

def fid_results(weights_path: Path, generated: dict[int, np.ndarray], real: np.ndarray, real_tiers: np.ndarray) -> dict:
    """From Inception features: FID of each tier's generated images against all decoded held-out images,
    and against the held-out images of the same tier."""
    from vampdiffusion.evaluation.fid import fid_from_features
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
    fids = [out["per_tier"].get(str(q), {}).get("fid") for q in range(NUM_TIERS)]
    out["ordering_holds"] = (all(f is not None for f in fids) and fids[3] < fids[2] < fids[1] < fids[0])
    if len(real) < 2048:
        out["note"] = (f"{len(real)} reference images: below the 2048 feature dimensions, so the covariance is "
                       f"rank-deficient and FID is biased upward; compare tiers with each other, not with published FIDs")
    return out


# ----------------------------------------------------------------------------
# The synthetic-set oracle
# ----------------------------------------------------------------------------

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


def oracle_chance(num_colours: int, num_shapes: int, num_backgrounds: int) -> dict:
    return {"colour": 1 / num_colours, "shape": 1 / num_shapes, "background": 1 / num_backgrounds,
            "colour_pair": 2 / num_colours}  # a random pair of distinct colours holds each prompted colour w.p. 2/6


def oracle_results(gen_read: dict[int, list], gen_truths: list[dict], real_read: list, real_truths: list[dict],
                   real_tiers: np.ndarray, min_accuracy: float) -> dict:
    """Oracle readings of generated images (per tier, aligned with gen_truths) and of the decoded held-out
    latents (the calibration) → accuracy per attribute with chance levels, sharpness per tier."""
    from vampdiffusion.data.synth import BACKGROUNDS, COLOURS, SHAPES
    calib = oracle_scores(real_read, real_truths)
    chance = oracle_chance(len(COLOURS), len(SHAPES), len(BACKGROUNDS))
    pooled_read = [r for q in sorted(gen_read) for r in gen_read[q]]
    pooled_truths = [t for q in sorted(gen_read) for t in gen_truths[:len(gen_read[q])]]
    pooled = oracle_scores(pooled_read, pooled_truths)
    per_tier = {q: oracle_scores(gen_read[q], gen_truths[:len(gen_read[q])]) for q in gen_read}
    attributes = {}
    for name in ("colour", "shape", "background", "colour_pair"):
        c_ok, c_n = calib[name]
        calibration = c_ok / c_n if c_n else None
        ok, n = pooled[name]
        # counts are prompts (objects for colour_pair) behind each accuracy
        entry = {"chance": chance[name], "calibration": calibration, "calibration_count": c_n, "count": n}
        if calibration is not None and calibration >= min_accuracy and n:
            entry["accuracy"] = ok / n
            entry["per_tier"] = {str(q): (v[name][0] / v[name][1] if v[name][1] else None) for q, v in per_tier.items()}
            entry["status"] = "ok"
        else:
            entry["status"] = (f"withheld: the oracle reads decoded real latents {calibration:.1%} right, below "
                               f"eval.oracle_min_accuracy={min_accuracy:.0%}" if calibration is not None
                               else "withheld: no calibration images")
        attributes[name] = entry

    def mean_sharpness(readings) -> float | None:
        v = [r.sharpness for r in readings if math.isfinite(r.sharpness)]
        return float(np.mean(v)) if v else None

    gen_sharp = {str(q): mean_sharpness(gen_read[q]) for q in sorted(gen_read)}
    real_sharp = {str(q): mean_sharpness([r for r, t in zip(real_read, real_tiers) if t == q]) for q in range(NUM_TIERS)}
    seq = [gen_sharp.get(str(q)) for q in range(NUM_TIERS)]
    return {
        "attributes": attributes,
        "sharpness": {"generated": gen_sharp, "real": real_sharp,
                      "rises_with_tier": all(v is not None for v in seq) and all(a < b for a, b in zip(seq, seq[1:]))},
        "min_accuracy": min_accuracy,
        "single_object_colour": {
            "generated": single_object_reading(pooled_read, pooled_truths),
            "real": single_object_reading(real_read, real_truths)},
    }


# ----------------------------------------------------------------------------
# The whole evaluation
# ----------------------------------------------------------------------------

def evaluate(model_dir: str | Path, data_dir: str | Path, truth: str | Path | None = None,
             logs: list[str | Path] | tuple = (), overrides: list[str] | tuple = (), eval_config=None,
             vae_path: str | None = None, device: str | None = None, show_progress: bool = True) -> Evaluation:
    """Run SPEC §6 for a model folder on a latent dataset's held-out split (see the module docstring)."""
    from tqdm import tqdm

    from vampdiffusion.config import apply_override
    from vampdiffusion.data.loader import LatentDataset
    from vampdiffusion.evaluation.routing import collect_routing, metrics_from_record
    from vampdiffusion.generation.generate import load_generator

    t0 = time.time()
    gen = load_generator(model_dir, vae_path=vae_path, device=device)
    cfg = gen.cfg
    if eval_config is not None:
        cfg.eval = eval_config
    for o in overrides:
        apply_override(cfg, o)
    ec = cfg.eval
    if ec.n_per_tier < 0 or ec.n_per_tier == 1:
        raise ValueError(f"eval.n_per_tier must be >= 2, or 0 for every held-out row once; got {ec.n_per_tier}")
    truth_map, truth_bad = read_truth(truth) if truth is not None else ({}, 0)
    ds = LatentDataset(data_dir, split="eval", max_tags=cfg.model.max_tags)
    if ec.n_per_tier == 0 and len(ds) < 2:
        raise ValueError(f"eval.n_per_tier=0 asks for every held-out row, but {data_dir} has {len(ds)}; FID needs "
                         f">= 2: encode with a larger data.eval_fraction or set eval.n_per_tier >= 2")
    rows = np.arange(len(ds))
    results: dict = {"model": str(model_dir), "data": str(data_dir), "heldout_images": len(ds),
                     "sample": {k: getattr(cfg.sample, k) for k in ("sampler", "steps", "cfg_scale", "cfg_rescale")},
                     "eval": vars(ec).copy()}

    # 1. routing
    record = collect_routing(gen.model, (b for _, b in heldout_batches(ds, rows, ec.batch_size)),
                             cfg.diffusion.num_timesteps, ec.seed, gen.device)
    results["routing"] = metrics_from_record(record, cfg.model.num_style_experts, cfg.model.num_quality_experts,
                                             ec.collapse_threshold)

    # what each image is measured with (loaded once; None when unavailable, with the reason in the results)
    from vampdiffusion.evaluation.clip_score import clip_unavailable, load_clip
    from vampdiffusion.evaluation.inception import load_inception, resolve_inception_weights
    weights = resolve_inception_weights(ec.inception_weights)
    inception = load_inception(weights, gen.device) if weights is not None else None
    clip_why = clip_unavailable(ec.clip_model, ec.clip_weights)
    clip = load_clip(ec.clip_model, ec.clip_weights, gen.device) if clip_why is None else None
    known = np.array([int(i) in truth_map for i in ds.ids])
    read_oracle = bool(known.any())

    # 2. generation: the same prompts and seeds at every tier, measured batch by batch
    prompt_rows = pick_prompt_rows(ds, ec.n_per_tier, ec.seed)
    seeds = [ec.seed * 1_000_003 + i for i in range(len(prompt_rows))]
    prompts = [" ".join(gen.vocab.tokens[i] for i in ds.tag_batch(prompt_rows[k:k + 1])[0] if i > 3)
               for k in range(len(prompt_rows))]
    style_rows = {s: np.flatnonzero(ds.style == s)[:ec.style_samples] for s in range(cfg.model.num_style_experts)}
    total = NUM_TIERS * len(prompt_rows) + sum(len(r) for r in style_rows.values()) + len(ds)
    bar = tqdm(total=total, desc="eval: generating and measuring", unit="img", disable=not show_progress)
    generated: dict[int, Measured] = {}
    for q in range(NUM_TIERS):
        generated[q] = Measured(keep=ec.grid_columns)
        for idx, images in generate_batches(gen, ds, prompt_rows, q, seeds, ec.batch_size):
            generated[q].add(idx, images, inception, ec.batch_size, read_oracle, clip, prompts)
            bar.update(len(idx))
    style_images: dict[int, list[Image.Image]] = {}
    for s, srows in style_rows.items():
        if len(srows):
            style_images[s] = generate_rows(gen, ds, srows, NUM_TIERS - 1, seeds[:len(srows)], ec.batch_size)
            bar.update(len(srows))
    real = Measured(keep=ec.grid_columns)
    for idx, images in decode_batches(gen, ds, rows, ec.batch_size):
        real.add(idx, images, inception, ec.batch_size, read_oracle)
        bar.update(len(idx))
    bar.close()
    real_tiers = ds.quality[rows]

    # 3. FID, CLIP
    if inception is None:
        results["fid"] = {"status": f"skipped: no Inception weights at {Path(ec.inception_weights).expanduser()}"}
    else:
        results["fid"] = fid_results(weights, {q: m.feature_array() for q, m in generated.items()},
                                     real.feature_array(), real_tiers)
    results["clip"] = ({"status": clip_why} if clip is None else
                       {"status": "ok", "model": ec.clip_model,
                        "per_tier": {str(q): float(np.mean(m.clip)) for q, m in generated.items()}})

    # 4. oracle
    if truth is None:
        results["oracle"] = {"status": "skipped: no --truth file (the oracle reads the synthetic dataset only)"}
    elif not read_oracle:
        results["oracle"] = {"status": f"skipped: none of the {len(ds)} held-out ids is in {truth}"}
    else:
        keep = np.flatnonzero(known[prompt_rows])
        gen_truths = [truth_map[int(ds.ids[prompt_rows[k]])] for k in keep]
        real_keep = np.flatnonzero(known)
        results["oracle"] = oracle_results({q: [m.readings[k] for k in keep] for q, m in generated.items()}, gen_truths,
                                           [real.readings[k] for k in real_keep],
                                           [truth_map[int(ds.ids[k])] for k in real_keep], real_tiers[real_keep],
                                           ec.oracle_min_accuracy)
        results["oracle"]["status"] = "ok"
        results["oracle"]["missing_truth"] = int((~known).sum())
        results["oracle"]["malformed_truth_lines"] = truth_bad

    # 5. training logs
    run_logs: dict[str, list[dict]] = {}
    log_paths = [Path(p) for p in logs] or [p for p in [Path(model_dir).parent / "metrics.jsonl"] if p.is_file()]
    for p in log_paths:
        if p.is_file():
            rows_, bad = R.read_metrics_log(p)
            run_logs[p.parent.name or str(p)] = rows_
            if bad:
                log.warning("%s: %d malformed line(s) skipped", p, bad)
    results["logs"] = [str(p) for p in log_paths]
    results["seconds"] = round(time.time() - t0, 1)
    return Evaluation(results=results, tier_images={q: m.kept() for q, m in generated.items()},
                      style_images=style_images, real_images=real.kept(), logs=run_logs)


# ----------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------

def _pct(v) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


def summary_section(ev: Evaluation) -> R.Section:
    r = ev.results
    ro = r["routing"]
    rows = [("style routing accuracy (mean over blocks)", _pct(ro["style"]["accuracy_mean"]), _pct(ro["style"]["chance"])),
            ("quality routing accuracy (mean over blocks)", _pct(ro["quality"]["accuracy_mean"]), _pct(ro["quality"]["chance"])),
            ("style routing entropy H_S (mean)", R.fmt(ro["style"]["entropy_mean"]), f"max {ro['style']['entropy_max']:.2f}")]
    o = r.get("oracle", {})
    for name, label in (("colour", "colour accuracy (single-object prompts)"), ("shape", "shape accuracy (single-object prompts)"),
                        ("background", "background accuracy"), ("colour_pair", "colour accuracy (two-object prompts)")):
        a = o.get("attributes", {}).get(name)
        if a:
            rows.append((label, _pct(a["accuracy"]) if a["status"] == "ok" else a["status"], _pct(a["chance"])))
    fid = r["fid"]
    if fid["status"] == "ok":
        for q in range(NUM_TIERS):
            rows.append((f"FID tier {q} ({TIER_NAMES[q]})", R.fmt(fid["per_tier"][str(q)]["fid"], 2), ""))
        rows.append(("FID ordering FID₃ < FID₂ < FID₁ < FID₀", "holds" if fid["ordering_holds"] else "does not hold", ""))
    else:
        rows.append(("FID per tier", fid["status"], ""))
    rows.append(("CLIP score", r["clip"]["status"] if r["clip"]["status"] != "ok" else
                 ", ".join(f"tier {q}: {v:.2f}" for q, v in r["clip"]["per_tier"].items()), ""))
    alerts = ro["collapse_alerts"]
    body = R.table(("metric", "value", "chance"), rows, caption=f"{r['heldout_images']} held-out images")
    if alerts:
        body += "<p class='alert'>expert collapse: " + R.esc("; ".join(
            f"block {a['block']} expert {a['expert']} f={a['f']:.2f}" for a in alerts)) + "</p>"
    else:
        body += f"<p class='ok'>no style expert above f = {ro['collapse_threshold']}</p>"
    return R.Section("Summary", body)


def routing_section(ev: Evaluation) -> R.Section:
    ro = ev.results["routing"]
    st, qu = ro["style"], ro["quality"]
    rows = [(f"style block {b}", *(f"{x:.2f}" for x in f), R.fmt(h), _pct(a))
            for b, f, h, a in zip(st["blocks"], st["frequencies"], st["entropy"], st["accuracy"])]
    body = R.table(["block", *[f"f_{i}" for i in range(len(st["frequencies"][0]) if st["frequencies"] else 0)], "H_S", "accuracy"],
                   rows, caption=f"style routing per block (top-2 slots; chance accuracy {_pct(st['chance'])})")
    rows = [(f"quality block {b}", *(f"{x:.2f}" for x in f), _pct(a))
            for b, f, a in zip(qu["blocks"], qu["frequencies"], qu["accuracy"])]
    body += R.table(["block", *[f"f_{i}" for i in range(len(qu["frequencies"][0]) if qu["frequencies"] else 0)], "accuracy"],
                    rows, caption=f"quality routing per block (chance accuracy {_pct(qu['chance'])})")
    body += R.heatmap(st["label_expert"], [f"{i} {STYLE_NAMES[i]}" if i < len(STYLE_NAMES) else str(i) for i in range(len(st["label_expert"]))],
                      [f"E{i}" for i in range(len(st["label_expert"][0]))], "style label × top-1 style expert (row shares, all style blocks)")
    body += R.heatmap(qu["label_expert"], [f"{q} {TIER_NAMES[q]}" for q in range(len(qu["label_expert"]))],
                      [f"QE{i}" for i in range(len(qu["label_expert"][0]))], "quality tier × quality expert (row shares, all quality blocks)")
    return R.Section("Routing", body)


def oracle_section(ev: Evaluation) -> R.Section:
    o = ev.results["oracle"]
    if o.get("status") != "ok":
        return R.Section("Synthetic oracle", f"<p class='skip'>{R.esc(o.get('status'))}</p>")
    rows = []
    for name, a in o["attributes"].items():
        per = a.get("per_tier", {})
        rows.append((name, _pct(a["accuracy"]) if a["status"] == "ok" else a["status"], _pct(a["chance"]),
                     _pct(a["calibration"]), *(_pct(per.get(str(q))) for q in range(NUM_TIERS))))
    body = R.table(("attribute", "accuracy vs prompt", "chance", "oracle on decoded real", *(f"tier {q}" for q in range(NUM_TIERS))),
                   rows, caption="conditioning accuracy of generated images (synthetic-set oracle)")
    sh = o["sharpness"]
    body += R.table(("", *(f"tier {q} ({TIER_NAMES[q]})" for q in range(NUM_TIERS))),
                    [("generated", *(sh["generated"].get(str(q)) for q in range(NUM_TIERS))),
                     ("decoded real", *(sh["real"].get(str(q)) for q in range(NUM_TIERS)))],
                    caption="mean edge sharpness per quality tier (expected to rise with the tier)")
    body += f"<p class='{'ok' if sh['rises_with_tier'] else 'alert'}'>generated sharpness " \
            f"{'rises' if sh['rises_with_tier'] else 'does not rise'} with the quality tier</p>"
    return R.Section("Synthetic oracle", body)


def fid_section(ev: Evaluation) -> R.Section:
    fid = ev.results["fid"]
    if fid["status"] != "ok":
        body = f"<p class='skip'>FID: {R.esc(fid['status'])}</p>"
    else:
        body = R.table(("tier", "generated", "FID vs held-out", "FID vs same tier", "real of that tier"),
                       [(f"{q} {TIER_NAMES[q]}", v["generated"], v["fid"], v["fid_same_tier"], v["real_same_tier"])
                        for q, v in ((int(k), v) for k, v in fid["per_tier"].items())], caption="FID per quality tier")
        body += R.paragraph(f"ordering FID₃ < FID₂ < FID₁ < FID₀: {'holds' if fid['ordering_holds'] else 'does not hold'}")
        if fid.get("note"):
            body += R.paragraph(fid["note"])
    clip = ev.results["clip"]
    body += (f"<p class='skip'>CLIP score: {R.esc(clip['status'])}</p>" if clip["status"] != "ok" else
             R.table(("tier", "CLIP score"), [(q, v) for q, v in clip["per_tier"].items()], caption=f"CLIP score ({clip['model']})"))
    return R.Section("FID and CLIP score", body)


def samples_section(ev: Evaluation, columns: int) -> R.Section:
    body = ""
    if ev.tier_images:
        grid = [ev.tier_images[q][:columns] for q in sorted(ev.tier_images)]
        body += R.image_grid(grid, [f"tier {q} {TIER_NAMES[q]}" for q in sorted(ev.tier_images)],
                             caption="per quality tier: the same held-out prompts and seeds in every row")
    if ev.style_images:
        grid = [ev.style_images[s] for s in sorted(ev.style_images)]
        body += R.image_grid(grid, [f"{s} {STYLE_NAMES[s]}" for s in sorted(ev.style_images)],
                             caption="per style label: held-out prompts of that style, tier 3")
    if ev.real_images:
        body += R.image_grid([ev.real_images[:columns]], ["decoded real"], caption="held-out latents decoded by the VAE")
    return R.Section("Samples", body or R.paragraph("no samples"))


def curves_section(ev: Evaluation) -> R.Section:
    if not ev.logs:
        return R.Section("Training curves", R.paragraph("no metrics.jsonl given (--logs) or found beside the model folder"))
    body = R.line_chart(R.loss_series(ev.logs, ("loss",)), "training loss (v-MSE + auxiliary)", "loss", log_y=True)
    keys = sorted({k for rows in ev.logs.values() for r in rows for k in r if k.startswith("loss/")})
    if keys:
        body += R.line_chart(R.loss_series(ev.logs, keys), "loss terms", "value", log_y=True)
    norms = sorted({k for rows in ev.logs.values() for r in rows for k in r if k.startswith("grad_norm/")})
    if norms:  # SPEC §6: router vs backbone gradient norms
        body += R.line_chart(R.loss_series(ev.logs, norms), "gradient norms", "‖g‖", log_y=True)
    ent = sorted({k for rows in ev.logs.values() for r in rows for k in r if "entropy" in k})
    if ent:
        body += R.line_chart(R.loss_series(ev.logs, ent[:8]), "routing entropy", "nats")
    return R.Section("Training curves", body)


def eval_sections(ev: Evaluation, columns: int = 8) -> list[R.Section]:
    return [summary_section(ev), samples_section(ev, columns), routing_section(ev), oracle_section(ev),
            fid_section(ev), curves_section(ev)]


def write_outputs(ev: Evaluation, out_dir: str | Path, extra_sections: list[R.Section] | tuple = (),
                  title: str = "VampDiffusion evaluation", columns: int = 8) -> dict[str, Path]:
    """eval.json, report.html and the grids (samples_tiers.png, samples_styles.png) in out_dir."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"eval.json": atomic_write_json(out / "eval.json", ev.results)}
    if ev.tier_images:
        grid = R.compose_grid([ev.tier_images[q][:columns] for q in sorted(ev.tier_images)])
        paths["samples_tiers.png"] = atomic_write(out / "samples_tiers.png", lambda p: grid.save(p, format="PNG"))
    if ev.style_images:
        grid = R.compose_grid([ev.style_images[s] for s in sorted(ev.style_images)])
        paths["samples_styles.png"] = atomic_write(out / "samples_styles.png", lambda p: grid.save(p, format="PNG"))
    sections = list(extra_sections) + eval_sections(ev, columns)
    paths["report.html"] = R.write_report(out / "report.html", title, sections,
                                          subtitle=f"model {ev.results['model']} · data {ev.results['data']}")
    return paths


# ----------------------------------------------------------------------------
# `vamp eval`
# ----------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    from vampdiffusion.cli import add_config_arguments
    parser.add_argument("--model", required=True, help="model folder (config.json, model.safetensors, vocab.json)")
    parser.add_argument("--data", required=True, help="latent dataset folder (`vamp data encode` output); its eval split is used")
    parser.add_argument("--out", required=True, help="output folder for eval.json, report.html and sample grids")
    parser.add_argument("--truth", help="synthetic dataset truth.jsonl: enables the oracle metrics")
    parser.add_argument("--logs", nargs="*", default=[], help="training metrics.jsonl files for the loss curves "
                        "(default: metrics.jsonl beside the model folder)")
    parser.add_argument("--vae-path", help="local VAE weights (default: the model config's latents.vae_path)")
    parser.add_argument("--device", help="cpu | cuda (default: cuda when available)")
    add_config_arguments(parser)
    parser.set_defaults(config=None)


def main(args: argparse.Namespace) -> int:
    from vampdiffusion.config import load_config
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for path, what in ((args.model, "model folder"), (args.data, "latent dataset folder")):
        if not Path(path).is_dir():
            print(f"vamp eval: {what} {path} does not exist", file=sys.stderr)
            return 2
    eval_config = load_config(args.config).eval if args.config else None
    try:
        ev = evaluate(args.model, args.data, truth=args.truth, logs=args.logs, overrides=args.overrides,
                      eval_config=eval_config, vae_path=args.vae_path, device=args.device)
    except (FileNotFoundError, ValueError) as e:
        print(f"vamp eval: {e}", file=sys.stderr)
        return 2
    paths = write_outputs(ev, args.out, columns=ev.results["eval"]["grid_columns"])
    print_summary(ev)
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    return 0


def print_summary(ev: Evaluation) -> None:
    r = ev.results
    ro = r["routing"]
    print(f"held-out images: {r['heldout_images']}")
    print(f"style routing accuracy {_pct(ro['style']['accuracy_mean'])} (chance {_pct(ro['style']['chance'])}), "
          f"quality routing accuracy {_pct(ro['quality']['accuracy_mean'])} (chance {_pct(ro['quality']['chance'])}), "
          f"H_S {R.fmt(ro['style']['entropy_mean'])} (max {ro['style']['entropy_max']:.2f})")
    for a in ro["collapse_alerts"]:
        print(f"  COLLAPSE: style block {a['block']} expert {a['expert']} f={a['f']:.2f}")
    fid = r["fid"]
    print("FID: " + (fid["status"] if fid["status"] != "ok" else
                     ", ".join(f"tier {q} {v['fid']:.2f}" for q, v in fid["per_tier"].items())
                     + f" (ordering {'holds' if fid['ordering_holds'] else 'does not hold'})"))
    print("CLIP score: " + r["clip"]["status"])
    o = r["oracle"]
    if o.get("status") == "ok":
        for name, a in o["attributes"].items():
            print(f"  {name}: " + (f"{_pct(a['accuracy'])} (chance {_pct(a['chance'])}, oracle on decoded real "
                                   f"{_pct(a['calibration'])})" if a["status"] == "ok" else a["status"]))
        for kind, d in (o.get("single_object_colour") or {}).items():
            if d:
                print(f"  single-object prompts, {kind}: largest region has the prompted colour "
                      f"{_pct(d['largest_is_prompted'])}, prompted colour present {_pct(d['prompted_present'])}, "
                      f"{d['mean_regions_read']:.2f} coloured regions read per image")
        sh = o["sharpness"]["generated"]
        print("  sharpness per tier: " + ", ".join(f"{q}: {R.fmt(v)}" for q, v in sh.items()))
    else:
        print("oracle: " + o.get("status", ""))
