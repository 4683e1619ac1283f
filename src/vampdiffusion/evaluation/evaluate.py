"""The evaluation (docs/evaluation.md) on the held-out split: `evaluate(model_dir, data_dir, truth=...)` -> an `Evaluation`.

1. Routing: the routers on every held-out batch (timesteps drawn uniformly); style / quality routing
   frequencies, entropy, routing accuracy against the labels, collapse alerts, heatmaps.
2. Generation: eval.n_per_tier prompts (0: every held-out row once) drawn from the held-out tags, each
   generated at all four quality tiers with the same seed (so tiers differ only by the quality input).
3. FID per tier (Inception weights from eval.inception_weights, else a "skipped: …" row), against the
   held-out latents decoded by the same VAE: the VAE's own reconstruction error is then common to both
   sides and FID measures the diffusion model. CLIP score likewise, when configured.
4. Synthetic-set oracle (with truth, the synthetic dataset's truth.jsonl): conditioning accuracy per
   attribute against the prompt, with chance levels, and mean sharpness per tier (conditioning.py).
5. Style in the images (with truth): style conditioning accuracy, steering (style experts forced) and the
   composition check, read by the style oracle (style_conditioning.py).
6. The training logs beside the model, for the report's curves.

Images are measured batch by batch as they come (`Measured`), so memory does not grow with n_per_tier.
`write_outputs` writes eval.json, report.html (self-contained) and the sample grids.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from vampdiffusion.atomic import atomic_write, atomic_write_json
from vampdiffusion.evaluation import report as R
from vampdiffusion.evaluation import sections as S
from vampdiffusion.evaluation.measure import Measured
from vampdiffusion.evaluation.oracle import Palette

log = logging.getLogger("vampdiffusion.eval")


@dataclass
class Evaluation:
    """Everything one evaluation measured and drew; `results` is what eval.json holds."""
    results: dict
    tier_images: dict[int, list[Image.Image]] = field(default_factory=dict)    # tier -> first grid_columns images (prompt i at column i)
    style_images: dict[int, list[Image.Image]] = field(default_factory=dict)   # style label -> tier-3 images
    real_images: list[Image.Image] = field(default_factory=list)               # first grid_columns decoded held-out latents
    steering_images: dict[int, list[Image.Image]] = field(default_factory=dict)  # forced expert -> one image per style's first prompt
    composition_images: list[Image.Image] = field(default_factory=list)        # the composition prompt's first images
    logs: dict[str, list[dict]] = field(default_factory=dict)                  # run name -> metrics.jsonl rows


@dataclass
class Setup:
    """What every step of one evaluation reads: the model, the held-out data, the prompts and the measures."""
    gen: object                    # generation.generate.LoadedModel
    ds: object                     # latents.loader.LatentDataset of the eval split
    truth: dict[int, dict]         # synthetic truth by post id ({} without a truth file)
    truth_bad: int                 # malformed truth lines skipped
    palette: Palette | None        # what the oracle reads (None: no oracle)
    prompt_rows: np.ndarray        # held-out rows whose tags are the prompts
    seeds: list[int]               # one per prompt, the same at every tier
    inception: object | None       # FID network, None when its weights are missing
    inception_weights: Path | None
    clip: object | None            # (model, preprocess, tokenizer), None when unavailable
    clip_status: str | None        # why CLIP score is skipped

    @property
    def cfg(self):
        return self.gen.cfg


# ----------------------------------------------------------------------------
# The steps
# ----------------------------------------------------------------------------

def check_heldout_shards(data_dir: Path, ds) -> None:
    """The shards holding the held-out rows match their sha256 (shards.json) before anything is measured on
    them; a damaged one is a ValueError naming it and the fix."""
    from vampdiffusion.latents.shards import damaged_message, verify_shards
    used = set(ds.shard.tolist())
    problems, _ = verify_shards(data_dir, [r for shard, r in ds.records.items() if shard in used])
    if problems:
        raise ValueError(damaged_message(data_dir, problems))


def open_evaluation(model_dir: str | Path, data_dir: str | Path, truth: str | Path | None, overrides, eval_config,
                    vae_path: str | None, device: str | None) -> Setup:
    """Load the model, its held-out split, the truth and the measures; draw the prompts and their seeds."""
    from vampdiffusion.config import apply_override, validate
    from vampdiffusion.evaluation.clip_score import clip_unavailable, load_clip
    from vampdiffusion.evaluation.conditioning import read_truth, set_palette
    from vampdiffusion.evaluation.heldout import pick_prompt_rows
    from vampdiffusion.evaluation.inception import load_inception, resolve_inception_weights
    from vampdiffusion.generation.generate import load_generator, read_model_config
    from vampdiffusion.latents.loader import LatentDataset

    read_model_config(model_dir)  # the folder holds what a model folder holds, before its vocab is compared
    check_same_vocab(model_dir, data_dir)
    gen = load_generator(model_dir, vae_path=vae_path, device=device)
    cfg = gen.cfg
    if eval_config is not None:
        cfg.eval = eval_config
    for o in overrides:
        apply_override(cfg, o)
    ec = validate(cfg).eval
    truth_map, truth_bad = read_truth(truth) if truth is not None else ({}, 0)
    ds = LatentDataset(data_dir, split="eval", max_tags=cfg.model.max_tags)
    check_heldout_shards(Path(data_dir), ds)
    if ec.n_per_tier == 0 and len(ds) < 2:
        raise ValueError(f"eval.n_per_tier=0 asks for every held-out row, but {data_dir} has {len(ds)}; FID needs "
                         f">= 2: encode with a larger data.eval_fraction or set eval.n_per_tier >= 2")
    prompt_rows = pick_prompt_rows(ds, ec.n_per_tier, ec.seed)
    weights = resolve_inception_weights(ec.inception_weights)
    clip_status = clip_unavailable(ec.clip_model, ec.clip_weights)
    known = any(int(i) in truth_map for i in ds.ids)
    return Setup(gen=gen, ds=ds, truth=truth_map, truth_bad=truth_bad,
                 palette=set_palette(truth, truth_map) if known else None, prompt_rows=prompt_rows,
                 seeds=[ec.seed * 1_000_003 + i for i in range(len(prompt_rows))],
                 inception=load_inception(weights, gen.device) if weights is not None else None,
                 inception_weights=weights, clip_status=clip_status,
                 clip=load_clip(ec.clip_model, ec.clip_weights, gen.device) if clip_status is None else None)


def check_same_vocab(model_dir: str | Path, data_dir: str | Path) -> None:
    """The held-out tag ids mean what they meant in training only with the model's vocabulary, token for token."""
    from vampdiffusion.data.vocab import VOCAB_NAME, TagVocab
    model_vocab, data_vocab = Path(model_dir) / VOCAB_NAME, Path(data_dir) / VOCAB_NAME
    if not data_vocab.is_file():
        raise FileNotFoundError(f"{data_vocab} not found: a latent dataset written by `vamp data encode` holds "
                                f"the vocabulary its tag ids refer to; evaluate with the dataset the model was trained on")
    ours, theirs = TagVocab.load(model_vocab).tokens, TagVocab.load(data_vocab).tokens
    if ours == theirs:
        return
    first = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))
    at = [repr(t[first]) if first < len(t) else "absent" for t in (theirs, ours)]
    raise ValueError(f"{data_vocab} is not the model's vocabulary {model_vocab} ({len(theirs)} vs {len(ours)} tokens; "
                     f"id {first} is {at[0]} vs {at[1]}), so its tag ids would name other tags: "
                     f"evaluate with the dataset the model was trained on, or re-encode this one with the model's "
                     f"vocab.json")


def prompt_texts(s: Setup) -> list[str]:
    """The tags of each prompt row as text (what CLIP score compares the image with)."""
    from vampdiffusion.data.vocab import SPECIAL_TOKENS
    tags = (s.gen.vocab.decode(s.ds.tag_batch(s.prompt_rows[k:k + 1])[0]) for k in range(len(s.prompt_rows)))
    return [" ".join(t for t in row if t not in SPECIAL_TOKENS) for row in tags]


def generate_and_measure(s: Setup, show_progress: bool) -> tuple[dict[int, Measured], dict[int, list], Measured]:
    """Every prompt at every tier, a few tier-3 images per style label, and the decoded held-out latents,
    each measured as it comes: (per-tier measurements, style images, real measurements)."""
    from tqdm import tqdm

    from vampdiffusion.evaluation.heldout import decode_batches, generate_batches, generate_rows
    ec, ds, tiers = s.cfg.eval, s.ds, s.cfg.model.num_quality_tiers
    prompts = prompt_texts(s) if s.clip is not None else None
    style_rows = style_grid_rows(s)
    total = tiers * len(s.prompt_rows) + sum(len(r) for r in style_rows.values()) + len(ds)
    bar = tqdm(total=total, desc="eval: generating and measuring", unit="img", disable=not show_progress)
    generated: dict[int, Measured] = {}
    for q in range(tiers):
        generated[q] = Measured(keep=ec.grid_columns)
        for idx, images in generate_batches(s.gen, ds, s.prompt_rows, q, s.seeds, ec.batch_size):
            generated[q].add(idx, images, s.inception, ec.batch_size, s.palette, s.clip, prompts)
            bar.update(len(idx))
    style_images = {}
    for k, rows in style_rows.items():
        if len(rows):
            style_images[k] = generate_rows(s.gen, ds, rows, tiers - 1, s.seeds[:len(rows)], ec.batch_size)
            bar.update(len(rows))
    real = Measured(keep=ec.grid_columns)
    for idx, images in decode_batches(s.gen, ds, np.arange(len(ds)), ec.batch_size):
        real.add(idx, images, s.inception, ec.batch_size, s.palette)
        bar.update(len(idx))
    bar.close()
    return generated, style_images, real


def style_grid_rows(s: Setup) -> dict[int, np.ndarray]:
    """Per style label: the first eval.style_samples held-out rows of it (the style grid's prompts)."""
    return {k: np.flatnonzero(s.ds.style == k)[:s.cfg.eval.style_samples] for k in range(s.cfg.model.num_style_experts)}


def fid_and_clip(s: Setup, generated: dict[int, Measured], real: Measured) -> tuple[dict, dict]:
    """FID of each tier against the decoded held-out images, and the CLIP score per tier (or why not)."""
    from vampdiffusion.evaluation.fid import fid_results
    ec = s.cfg.eval
    if s.inception is None:
        fid = {"status": f"skipped: no Inception weights at {Path(ec.inception_weights).expanduser()}"}
    else:
        fid = fid_results(s.inception_weights, {q: m.feature_array() for q, m in generated.items()},
                          real.feature_array(), s.ds.quality)
    clip = ({"status": s.clip_status} if s.clip is None else
            {"status": "ok", "model": ec.clip_model, "per_tier": {str(q): float(np.mean(m.clip)) for q, m in generated.items()}})
    return fid, clip


def oracle_step(s: Setup, truth: str | Path | None, generated: dict[int, Measured], real: Measured) -> dict:
    """Conditioning accuracy and sharpness per tier from the oracle readings, or why there are none."""
    from vampdiffusion.evaluation.conditioning import oracle_results
    ds = s.ds
    if truth is None:
        return {"status": "skipped: no --truth file (the oracle reads the synthetic dataset only)"}
    if s.palette is None:
        return {"status": f"skipped: none of the {len(ds)} held-out ids is in {truth}"}
    known = np.array([int(i) in s.truth for i in ds.ids])
    keep = np.flatnonzero(known[s.prompt_rows])
    real_keep = np.flatnonzero(known)
    result = oracle_results({q: [m.readings[k] for k in keep] for q, m in generated.items()},
                            [s.truth[int(ds.ids[s.prompt_rows[k]])] for k in keep],
                            [real.readings[k] for k in real_keep], [s.truth[int(ds.ids[k])] for k in real_keep],
                            ds.quality[real_keep], s.cfg.eval.oracle_min_accuracy, s.palette)
    return {**result, "status": "ok", "missing_truth": int((~known).sum()), "malformed_truth_lines": s.truth_bad}


def style_step(s: Setup, generated: dict[int, Measured], real: Measured, oracle: dict) -> tuple[dict, dict, list]:
    """Style conditioning, steering and composition read by the style oracle (`oracle`: the colour oracle's
    results), or why not; the steering grid (expert -> images) and the composition images."""
    from vampdiffusion.evaluation.style_conditioning import conditioning_results
    from vampdiffusion.evaluation.style_oracle import NUM_STYLES
    if s.cfg.model.num_style_experts != NUM_STYLES:
        return {"status": f"skipped: the style oracle reads the synthetic set's {NUM_STYLES} styles, the model "
                          f"has {s.cfg.model.num_style_experts} style experts"}, {}, []
    t0 = time.time()
    ds = s.ds
    known = np.array([int(i) in s.truth for i in ds.ids])
    keep, real_keep = np.flatnonzero(known[s.prompt_rows]), np.flatnonzero(known)
    result = {"status": "ok", "conditioning": conditioning_results(
        {q: [m.styles[k] for k in keep] for q, m in generated.items()},
        [int(s.truth[int(ds.ids[s.prompt_rows[k]])].get("style", -1)) for k in keep],
        [real.styles[k] for k in real_keep], [int(s.truth[int(ds.ids[k])].get("style", -1)) for k in real_keep],
        ds.quality[real_keep])}
    result["composition"], composition_images = composition_step(s, oracle)
    # the experts, not the routing report: a token-routed model's routing needs x_t (no per-image report),
    # but the override forces its experts on every token
    if s.cfg.model.style_ffn == "moe":
        result["steering"], grid = steering_step(s)
    else:
        result["steering"], grid = {"status": "skipped: the model has no style experts to force"}, {}
    result["seconds"] = round(time.time() - t0, 1)
    return result, grid, composition_images


def steering_step(s: Setup) -> tuple[dict, dict[int, list]]:
    """The style grid's first prompts of each style at the top tier with the style experts forced to each expert
    k in turn (the generation API's override): the style oracle's reading per k, and one image per style."""
    from vampdiffusion.evaluation.heldout import generate_rows
    from vampdiffusion.evaluation.style_conditioning import STEERING_PROMPTS_PER_STYLE, steering_results
    from vampdiffusion.evaluation.style_oracle import read_style
    by_style = {k: r[:STEERING_PROMPTS_PER_STYLE] for k, r in style_grid_rows(s).items() if len(r)}
    if not by_style:
        return {"status": "skipped: no held-out row has a style label"}, {}
    rows = np.concatenate(list(by_style.values()))
    seeds = [s.seeds[i] for r in by_style.values() for i in range(len(r))]  # the style grid's seeds
    firsts = np.cumsum([0] + [len(r) for r in by_style.values()])[:-1]
    top, read, grid = s.cfg.model.num_quality_tiers - 1, {}, {}
    for k in range(s.cfg.model.num_style_experts):
        images = generate_rows(s.gen, s.ds, rows, top, seeds, s.cfg.eval.batch_size, style_override=k)
        read[k] = [read_style(np.asarray(im.convert("RGB")), s.palette) for im in images]
        grid[k] = [images[i] for i in firsts]
    return {**steering_results(read), "prompts": len(rows), "tier": top}, grid


def composition_step(s: Setup, oracle: dict) -> tuple[dict, list]:
    """COMPOSITION_PROMPT at tier COMPOSITION_TIER: the experts it fires and, over COMPOSITION_SEEDS images, the
    styles read, the share read dark and the mean sharpness (beside the tier's generated images')."""
    from vampdiffusion.evaluation.oracle import reading_of, segment
    from vampdiffusion.evaluation.style_conditioning import (COMPOSITION_PROMPT, COMPOSITION_SEEDS, COMPOSITION_TIER,
                                                             composition_results)
    from vampdiffusion.evaluation.style_oracle import style_of
    from vampdiffusion.generation.generate import expert_routing, generate
    routing = expert_routing(s.gen, COMPOSITION_PROMPT, quality=COMPOSITION_TIER)
    images = generate(s.gen, COMPOSITION_PROMPT, quality=COMPOSITION_TIER, seed=0, n=COMPOSITION_SEEDS,
                      batch_size=s.cfg.eval.batch_size)
    segs = [segment(np.asarray(im.convert("RGB")), s.palette) for im in images]
    reference = oracle["sharpness"]["generated"].get(str(COMPOSITION_TIER))
    return composition_results(routing, [style_of(g, s.palette) for g in segs],
                               [reading_of(g).sharpness for g in segs], reference), images[:s.cfg.eval.grid_columns]


def training_logs(model_dir: str | Path, logs: list[str | Path] | tuple) -> tuple[dict[str, list[dict]], list[str]]:
    """The metrics.jsonl rows of the given runs (default: the run the model folder belongs to)."""
    from vampdiffusion.training.metrics import read_metrics_log
    paths = [Path(p) for p in logs] or [p for p in [Path(model_dir).parent / "metrics.jsonl"] if p.is_file()]
    rows: dict[str, list[dict]] = {}
    for p in paths:
        if p.is_file():
            rows[p.parent.name or str(p)], bad = read_metrics_log(p)
            if bad:
                log.warning("%s: %d malformed line(s) skipped", p, bad)
    return rows, [str(p) for p in paths]


# ----------------------------------------------------------------------------
# The whole evaluation
# ----------------------------------------------------------------------------

def evaluate(model_dir: str | Path, data_dir: str | Path, truth: str | Path | None = None,
             logs: list[str | Path] | tuple = (), overrides: list[str] | tuple = (), eval_config=None,
             vae_path: str | None = None, device: str | None = None, show_progress: bool = True) -> Evaluation:
    """Run the evaluation (docs/evaluation.md) for a model folder on a latent dataset's held-out split (see the module docstring)."""
    from vampdiffusion.data.labels import QUALITY_NAMES, style_names
    from vampdiffusion.evaluation.routing import heldout_routing
    t0 = time.time()
    s = open_evaluation(model_dir, data_dir, truth, overrides, eval_config, vae_path, device)
    cfg = s.cfg
    results: dict = {"model": str(model_dir), "data": str(data_dir), "heldout_images": len(s.ds),
                     "sample": {k: getattr(cfg.sample, k) for k in ("sampler", "steps", "cfg_scale", "cfg_rescale")},
                     "eval": vars(cfg.eval).copy(), "tier_names": list(QUALITY_NAMES),
                     "style_names": style_names(cfg.data.style_clusters)}
    results["routing"] = heldout_routing(s.gen.model, s.ds, cfg, s.gen.device)
    generated, style_images, real = generate_and_measure(s, show_progress)
    results["fid"], results["clip"] = fid_and_clip(s, generated, real)
    results["oracle"] = oracle_step(s, truth, generated, real)
    steering_images, composition_images = {}, []
    if results["oracle"]["status"] == "ok":
        results["oracle"]["style"], steering_images, composition_images = style_step(s, generated, real, results["oracle"])
    run_logs, results["logs"] = training_logs(model_dir, logs)
    results["seconds"] = round(time.time() - t0, 1)
    return Evaluation(results=results, tier_images={q: m.kept() for q, m in generated.items()},
                      style_images=style_images, real_images=real.kept(), logs=run_logs,
                      steering_images=steering_images, composition_images=composition_images)


def write_outputs(ev: Evaluation, out_dir: str | Path, extra_sections: list[R.Section] | tuple = (),
                  title: str = "VampDiffusion evaluation", columns: int = 8) -> dict[str, Path]:
    """eval.json, report.html and the grids (samples_tiers.png, samples_styles.png) in out_dir."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"eval.json": atomic_write_json(out / "eval.json", ev.results)}
    for name, rows in (("samples_tiers.png", [ev.tier_images[q][:columns] for q in sorted(ev.tier_images)]),
                       ("samples_styles.png", [ev.style_images[k] for k in sorted(ev.style_images)])):
        if rows:
            grid = R.compose_grid(rows)
            paths[name] = atomic_write(out / name, lambda p, g=grid: g.save(p, format="PNG"))
    sections = list(extra_sections) + S.eval_sections(ev, columns)
    paths["report.html"] = R.write_report(out / "report.html", title, sections,
                                          subtitle=f"model {ev.results['model']} · data {ev.results['data']}")
    return paths


def summary_text(ev: Evaluation) -> str:
    """The evaluation's headline numbers as the lines `vamp eval` and `vamp demo` print."""
    lines: list[str] = []
    r = ev.results
    ro = r["routing"]
    lines.append(f"held-out images: {r['heldout_images']}")
    lines.append(f"style routing accuracy {S.pct(ro['style']['accuracy_mean'])} (chance {S.pct(ro['style']['chance'])}), "
          f"quality routing accuracy {S.pct(ro['quality']['accuracy_mean'])} (chance {S.pct(ro['quality']['chance'])}), "
          f"H_S {R.fmt(ro['style']['entropy_mean'])} (max {ro['style']['entropy_max']:.2f})")
    for a in ro["collapse_alerts"]:
        lines.append(f"  COLLAPSE: style block {a['block']} picks expert {a['expert']} first for {a['share']:.0%} of the images")
    fid = r["fid"]
    lines.append("FID: " + (fid["status"] if fid["status"] != "ok" else
                     ", ".join(f"tier {q} {v['fid']:.2f}" for q, v in fid["per_tier"].items())
                     + f" (ordering {'holds' if fid['ordering_holds'] else 'does not hold'})"))
    lines.append("CLIP score: " + r["clip"]["status"])
    o = r["oracle"]
    if o.get("status") == "ok":
        for name, a in o["attributes"].items():
            lines.append(f"  {name}: " + (f"{S.pct(a['accuracy'])} (chance {S.pct(a['chance'])}, oracle on decoded real "
                                   f"{S.pct(a['calibration'])})" if a["status"] == "ok" else a["status"]))
        for kind, d in (o.get("single_object_colour") or {}).items():
            if d:
                lines.append(f"  single-object prompts, {kind}: largest region has the prompted colour "
                      f"{S.pct(d['largest_is_prompted'])}, prompted colour present {S.pct(d['prompted_present'])}, "
                      f"{d['mean_regions_read']:.2f} coloured regions read per image")
        sh = o["sharpness"]["generated"]
        lines.append("  sharpness per tier: " + ", ".join(f"{q}: {R.fmt(v)}" for q, v in sh.items()))
        lines += style_text(o.get("style"))
    else:
        lines.append("oracle: " + o.get("status", ""))
    return "\n".join(lines)


def style_text(st: dict | None) -> list[str]:
    """The style oracle's headline lines of summary_text."""
    if not st:
        return []
    if st["status"] != "ok":
        return [f"  style: {st['status']}"]
    c, steer, comp = st["conditioning"], st["steering"], st["composition"]
    lines = [f"  style conditioning (images, tier {c['tier']}, readable styles): {S.pct(c['accuracy'])} "
             f"(chance {S.pct(c['chance'])}, oracle on decoded real {S.pct(c['calibration'])}; typical images "
             f"{S.pct(c['typical'])}, decoded real {S.pct(c['calibration_typical'])})"]
    if steer.get("status", "ok") == "ok":
        lines.append("  steering, read as the forced expert's style: " + ", ".join(
            f"E{k} {S.pct(v['read_as_k'])}" for k, v in steer["per_expert"].items() if v["read_as_k"] is not None)
            + f" (chance {S.pct(steer['chance'])}; mean lift over the other experts {S.points(steer['lift_mean'])})")
    else:
        lines.append(f"  steering: {steer['status']}")
    lines.append(f"  composition '{comp['prompt']}' ({comp['images']} seeds): read dark {S.pct(comp['read_dark'])}, "
                 f"read gothic {S.pct(comp['read_gothic'])}, sharpness {R.fmt(comp['sharpness'])} "
                 f"(tier {comp['quality']} generated {R.fmt(comp['sharpness_tier_reference'])})")
    return lines
