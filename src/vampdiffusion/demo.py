"""`vamp demo`: the whole system on the embedded synthetic Danbooru set, on a laptop CPU.

    synth -> prepare (5 filter stages) -> encode (TAESD-XL) -> train phase 1 -> 2 -> 3 -> eval -> report.html

Every stage writes its outputs into its own folder of --out and, when it has finished, a
`.done.json` holding the stage's inputs; a second run skips each stage whose marker matches
(encoding and training also resume from inside an interrupted stage).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vampdiffusion.atomic import atomic_write_json
from vampdiffusion.config import Config, load_config

TINY_PRESET = Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml"
TAESDXL_HUB_ID = "madebyollin/taesdxl"
MIN_PHASE_STEPS = 100                # no phase is planned shorter than this
MIN_SIZING_STEPS = 40                # phase 1 is sized from its warm-up when that is at least this long


@dataclass
class DemoArgs:
    out: Path = Path("vamp-demo")     # everything goes under this folder
    minutes: float = 11.0             # wall-clock budget of the three training phases together
    n: int = 4000                     # synthetic posts
    size: int = 64                    # synthetic image side, pixels
    seed: int = 0                     # synthetic data and training seed
    vae_path: str = ""                # TAESD-XL: local folder or hub id; "" = $VAMP_TAESDXL, else the hub
    phase_shares: tuple[float, float, float] = (0.8, 0.1, 0.1)  # share of the budget per phase


# ----------------------------------------------------------------------------
# Stage bookkeeping
# ----------------------------------------------------------------------------

def stage_done(folder: Path, inputs: dict) -> bool:
    marker = folder / ".done.json"
    if not marker.is_file():
        return False
    try:
        return json.loads(marker.read_text()) == inputs
    except (OSError, ValueError):
        return False


def mark_done(folder: Path, inputs: dict) -> None:
    atomic_write_json(folder / ".done.json", inputs)


def banner(text: str) -> None:
    print(f"\n=== {text} " + "=" * max(0, 70 - len(text)), flush=True)


def resolve_vae_path(arg: str) -> str:
    """A local TAESD-XL folder when one is given or named by $VAMP_TAESDXL, else the hub id."""
    return arg or os.environ.get("VAMP_TAESDXL", "") or TAESDXL_HUB_ID


def demo_config(a: DemoArgs, overrides: list[str]) -> Config:
    cfg = load_config(TINY_PRESET, overrides)
    cfg.latents.vae = "taesdxl"
    cfg.latents.vae_path = resolve_vae_path(a.vae_path)
    cfg.latents.scaling_factor = 1.0
    cfg.latents.resolution = a.size
    cfg.train.seed = a.seed
    return cfg


# ----------------------------------------------------------------------------
# Stages
# ----------------------------------------------------------------------------

def run_synth(a: DemoArgs, folder: Path) -> None:
    from vampdiffusion.data.synth import SynthArgs, synthesize
    inputs = {"n": a.n, "size": a.size, "seed": a.seed}
    if stage_done(folder, inputs):
        print(f"reusing {folder}")
        return
    summary = synthesize(SynthArgs(n=a.n, size=a.size, seed=a.seed, workers=min(2, os.cpu_count() or 1)), folder)
    print(f"wrote {summary['n']} synthetic posts to {folder}")
    mark_done(folder, inputs)


def run_prepare(cfg: Config, synth: Path, folder: Path) -> None:
    from dataclasses import asdict

    from vampdiffusion.data.prepare import prepare
    inputs = {"data": asdict(cfg.data), "synth": json.loads((synth / ".done.json").read_text())}
    if stage_done(folder, inputs):
        print(f"reusing {folder}")
        return
    prepare(cfg.data, synth / "posts.jsonl", synth, folder)
    mark_done(folder, inputs)


def run_encode(cfg: Config, prepared: Path, folder: Path) -> None:
    from dataclasses import asdict

    from vampdiffusion.data.encode import encode_dataset
    latents = asdict(cfg.latents)
    latents.pop("vae_path")  # the same weights may sit in another folder on the next run
    inputs = {"latents": latents, "prepared": json.loads((prepared / ".done.json").read_text())}
    if stage_done(folder, inputs):
        print(f"reusing {folder}")
        return
    encode_dataset(prepared / "manifest.parquet", folder, cfg.latents, torch.device("cpu"))
    mark_done(folder, inputs)


def measure_step_seconds(cfg: Config, latent_hw: tuple[int, int], steps: int = 20) -> float:
    """Seconds per optimizer step of the demo model (forward, backward, AdamW) on random batches: the median
    of all but the first two (≈ 6 s; a 6-step probe read 0.30 and 0.41 s where phase 1 then ran at 0.36 and
    0.35 s, moving phase 1 by ±18 % on the shared 2-core machine)."""
    from vampdiffusion.diffusion.loss import training_loss
    from vampdiffusion.diffusion.schedule import NoiseSchedule
    from vampdiffusion.models.dit import VampDiT
    from vampdiffusion.training.optim import make_optimizer

    torch.manual_seed(0)
    model = VampDiT(cfg.model)
    optimizer = make_optimizer(list(model.named_parameters()), cfg.train, cfg.train.phase1.lr)
    schedule = NoiseSchedule(cfg.diffusion)
    B, L = cfg.train.micro_batch, cfg.model.max_tags
    batch = {"latent": torch.randn(B, cfg.model.in_channels, *latent_hw),
             "tag_ids": torch.randint(4, cfg.model.vocab_size, (B, L)),
             "quality": torch.randint(0, 4, (B,)), "style": torch.randint(-1, 8, (B,))}
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        loss, _ = training_loss(model, batch, schedule, cfg.diffusion, 0.0, torch.Generator().manual_seed(0))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    return sorted(times[2:])[len(times[2:]) // 2]


def plan_training(a: DemoArgs, cfg: Config, latents: Path, folder: Path) -> dict:
    """Optimizer steps per phase that fit `--minutes`, from a measured step time (saved, reused)."""
    from vampdiffusion.data.loader import LatentDataset
    plan_file = folder / "training_plan.json"
    ds = LatentDataset(latents, split="train", max_tags=cfg.model.max_tags)
    key = {"minutes": a.minutes, "shares": list(a.phase_shares), "train_rows": len(ds)}
    if plan_file.is_file():
        plan = json.loads(plan_file.read_text())
        if plan.get("key") == key:
            return plan
    latent_hw = tuple(int(x) for x in ds[0]["latent"].shape[-2:])
    step_s = measure_step_seconds(cfg, latent_hw)
    # loader, EMA, logging, checkpoints, and the shared machine's drift: phase 1 ran at 1.10, 1.18, 0.84, 1.07 and
    # 1.42x the probe's step time (2026-11-26). Only the first guess: phase 1 re-sizes itself from its warm-up
    # (size_phase1) and phases 2-3 are re-sized after phase 1; this plan sets phase 1's warm-up length
    overhead = 1.2
    total = a.minutes * 60 / (step_s * overhead)
    steps = [max(MIN_PHASE_STEPS, int(total * s)) for s in a.phase_shares]
    plan = {"key": key, "step_seconds": round(step_s, 4), "steps": steps,
            "curate_top_k": max(cfg.train.micro_batch, int(0.6 * len(ds)))}
    atomic_write_json(plan_file, plan)
    return plan


def replan_after_phase1(a: DemoArgs, plan: dict, seconds_per_step: float, folder: Path) -> dict:
    """Phases 2 and 3 re-sized from phase 1's own speed (every overhead included), so the three phases
    together take ≈ --minutes even when the probe caught the machine at a faster or slower moment."""
    total = a.minutes * 60 / seconds_per_step
    rest = max(0.0, total - plan["steps"][0])
    share = a.phase_shares[1] + a.phase_shares[2]
    steps = [plan["steps"][0]] + [max(MIN_PHASE_STEPS, int(rest * s / share)) for s in a.phase_shares[1:]]
    plan = {**plan, "steps": steps, "phase1_step_seconds": round(seconds_per_step, 4)}
    atomic_write_json(folder / "training_plan.json", plan)
    return plan


def size_phase1(a: DemoArgs, cfg: Config, plan: dict, latents: Path, folder: Path) -> dict:
    """Phase 1's length from its own speed: train its warm-up steps first (timed), then set its total so that it
    fills its share of `--minutes`. The learning rate of a warm-up step depends only on the warm-up length, so
    resuming into the longer schedule is the same run as one planned at that length from the start — and the
    separate step-time probe, which misjudged phase 1's speed by up to ±40 % on the shared 2-core machine,
    now sets nothing but the warm-up. Saved in the plan; a rerun does not size twice."""
    from vampdiffusion.training.train import train
    if "phase1_sizing" in plan or (folder / ".done.json").is_file():
        return plan
    phase_cfg = phase_config(copy.deepcopy(cfg), plan, 1)
    first = phase_cfg.train.phase1.warmup_steps
    if first < MIN_SIZING_STEPS:
        return plan
    phase_cfg.train.phase1.steps = first
    phase_cfg.train.sample_every = 0  # the sample grid comes at the end of the whole phase
    t0 = time.time()
    rc = train(phase_cfg, 1, latents, folder, None, resume=True)
    elapsed = time.time() - t0
    if rc != 0:
        raise RuntimeError(f"phase 1 training stopped with exit code {rc}; rerun `vamp demo` to resume it")
    images_per_step = phase_cfg.train.micro_batch * phase_cfg.train.grad_accum
    step_s = measured_step_seconds(folder / "metrics.jsonl", images_per_step) or elapsed / first
    fixed = max(0.0, elapsed - first * step_s)  # start-up and checkpoints: paid again by the second call
    budget = a.minutes * 60 * a.phase_shares[0]
    steps = max(MIN_PHASE_STEPS, first, first + int((budget - elapsed - fixed) / step_s))
    plan = {**plan, "steps": [steps] + plan["steps"][1:],
            "phase1_sizing": {"steps": first, "seconds": round(elapsed, 3), "step_seconds": round(step_s, 5),
                              "probe_steps": plan["steps"][0]}}
    atomic_write_json(folder.parent / "training_plan.json", plan)
    return plan


def run_phase1(a: DemoArgs, cfg: Config, plan: dict, latents: Path, folder: Path) -> tuple[dict, int]:
    """Phase 1: its warm-up, the sizing, the rest; returns the (re-sized) plan and the steps trained by this call."""
    start = resume_start_step(folder)
    plan = size_phase1(a, cfg, plan, latents, folder)
    if "phase1_sizing" in plan:
        z = plan["phase1_sizing"]
        print(f"phase 1 sized from its first {z['steps']} steps ({z['step_seconds']:.3f} s/step): "
              f"{plan['steps'][0]} steps (the probe planned {z['probe_steps']})")
    trained = run_phase(cfg, plan, 1, latents, folder, None)
    return plan, (plan["steps"][0] - start if trained else 0)


def measured_step_seconds(metrics: Path, images_per_step: int) -> float | None:
    """Seconds per optimizer step from the trainer's log windows (`images_per_s`), the first window (start-up)
    left out; None when fewer than two windows were logged."""
    from vampdiffusion.evaluation.report import read_metrics_log
    rows = read_metrics_log(metrics)[0] if metrics.is_file() else []
    rates = [r["images_per_s"] for r in rows if isinstance(r.get("images_per_s"), (int, float))]
    rates = [r for r in rates[1:] if r > 0]
    return images_per_step / float(np.median(rates)) if rates else None


def phase_config(cfg: Config, plan: dict, phase: int) -> Config:
    p = getattr(cfg.train, f"phase{phase}")
    p.steps = plan["steps"][phase - 1]
    p.warmup_steps = min(p.warmup_steps, p.steps // 5)
    if phase == 1 and "phase1_sizing" in plan:  # the warm-up that was trained before the sizing
        p.warmup_steps = plan["phase1_sizing"]["steps"]
    if phase == 3:
        p.curate_top_k = plan["curate_top_k"]
    cfg.train.ckpt_every = max(50, p.steps // 4)
    cfg.train.ema_every = cfg.train.ckpt_every
    cfg.train.sample_every = p.steps  # one sample grid at the end of each phase
    return cfg


def resume_start_step(folder: Path) -> int:
    """The step a --resume of this run starts from: the newest checkpoint that verifies (train skips a
    corrupt or unfinished newer one, and so must the count of steps trained), else 0."""
    from vampdiffusion.training.checkpoint import list_checkpoints, verify_checkpoint
    return next((step for step, path in list_checkpoints(folder) if verify_checkpoint(path) is None), 0)


def run_phase(cfg: Config, plan: dict, phase: int, latents: Path, folder: Path, init_from: Path | None) -> int:
    """Train (or resume, or reuse) one phase; returns the optimizer steps trained by this call."""
    from vampdiffusion.training.train import train
    inputs = {"steps": plan["steps"][phase - 1], "init_from": str(init_from) if init_from else None}
    if stage_done(folder, inputs):
        print(f"reusing {folder}")
        return 0
    start = resume_start_step(folder)
    phase_cfg = phase_config(copy.deepcopy(cfg), plan, phase)
    rc = train(phase_cfg, phase, latents, folder, str(init_from) if init_from else None, resume=True)
    if rc != 0:
        raise RuntimeError(f"phase {phase} training stopped with exit code {rc}; rerun `vamp demo` to resume it")
    mark_done(folder, inputs)
    return plan["steps"][phase - 1] - start


# ----------------------------------------------------------------------------
# Evaluation and the report
# ----------------------------------------------------------------------------

COMPOSITION_PROMPT = "gothic, dark, masterpiece"


def phase_routing(model_dir: Path, latents: Path, cfg: Config) -> dict:
    """Held-out routing metrics of one phase's exported (EMA) model."""
    from vampdiffusion.data.loader import LatentDataset
    from vampdiffusion.evaluation.evaluate import heldout_batches
    from vampdiffusion.evaluation.routing import collect_routing, metrics_from_record
    from vampdiffusion.models.dit import VampDiT

    model = VampDiT.from_pretrained(model_dir).eval()
    ds = LatentDataset(latents, split="eval", max_tags=cfg.model.max_tags)
    batches = (b for _, b in heldout_batches(ds, np.arange(len(ds)), cfg.eval.batch_size))
    record = collect_routing(model, batches, cfg.diffusion.num_timesteps, cfg.eval.seed)
    return metrics_from_record(record, cfg.model.num_style_experts, cfg.model.num_quality_experts,
                               cfg.eval.collapse_threshold)


@torch.no_grad()
def composition_check(gen, quality: int = 3, n: int = 4, seed: int = 7) -> dict:
    """The document's §5.4 check: which style and quality experts fire for COMPOSITION_PROMPT."""
    from vampdiffusion.generation.generate import generate, tokenize

    ids, unknown = tokenize(gen, COMPOSITION_PROMPT)
    cfg = gen.cfg
    B = n
    tag_ids = torch.tensor([ids] * B, device=gen.device)
    t = torch.linspace(0, cfg.diffusion.num_timesteps - 1, B).long().to(gen.device)
    x = torch.randn(B, cfg.model.in_channels, 8, 8, generator=torch.Generator().manual_seed(seed)).to(gen.device)
    _, aux = gen.model(x, t, tag_ids, torch.full((B,), quality, device=gen.device))
    style_top1 = aux.style_experts[:, :, 0]                              # (n_S, B): best expert per block
    style_top2 = aux.style_experts                                       # (n_S, B, 2)
    images = generate(gen, COMPOSITION_PROMPT, quality=quality, seed=seed, n=n,
                      size=(8 * x.shape[-1], 8 * x.shape[-2]), batch_size=n)
    return {
        "prompt": COMPOSITION_PROMPT, "quality": quality, "unknown_tags": unknown,
        "style_blocks": list(aux.style_blocks), "quality_blocks": list(aux.quality_blocks),
        "style_top2_per_block": [sorted({int(e) for e in style_top2[i].flatten()}) for i in range(style_top2.shape[0])],
        "style_top1_per_block": [int(torch.mode(style_top1[i]).values) for i in range(style_top1.shape[0])],
        "style_probs_mean": aux.style_probs.mean(dim=(0, 1)).tolist(),
        "quality_expert_per_block": [int(torch.mode(aux.quality_experts[i]).values)
                                     for i in range(aux.quality_experts.shape[0])],
        "images": images,
    }


STYLE_ROUTING_MIN = 3 / 8  # "well above chance": three times the 1/8 of random routing


def learning_checks(results: dict, routing_by_phase: dict) -> list[dict]:
    """The demo's claims, each a measured number against its threshold and its chance level."""
    checks = []
    oracle = results.get("oracle", {})
    colour = oracle.get("attributes", {}).get("colour", {})
    if "accuracy" in colour:
        checks.append({"check": "colour conditioning accuracy (single-object prompts)", "value": colour["accuracy"],
                       "threshold": ">= 0.80", "chance": colour["chance"], "passed": colour["accuracy"] >= 0.8})
    else:
        checks.append({"check": "colour conditioning accuracy", "value": None, "threshold": ">= 0.80",
                       "chance": colour.get("chance"), "passed": False,
                       "note": colour.get("status", oracle.get("status", "no oracle result"))})
    sharp = oracle.get("sharpness", {}).get("generated", {})
    values = [sharp.get(str(q)) for q in range(4)]
    checks.append({"check": "mean sharpness of generated images rises with quality tier 0 -> 3", "value": values,
                   "threshold": "increasing", "chance": None,
                   "passed": bool(oracle.get("sharpness", {}).get("rises_with_tier", False))})
    r2 = routing_by_phase.get("phase 2")
    acc = r2["style"]["accuracy_mean"] if r2 else None
    checks.append({"check": "style routing accuracy after phase 2 (held-out, mean over blocks)", "value": acc,
                   "threshold": f">= {STYLE_ROUTING_MIN:.3f}", "chance": 1 / 8,
                   "passed": acc is not None and acc >= STYLE_ROUTING_MIN})
    return checks


def _read_json(path: Path):
    return json.loads(path.read_text()) if path.is_file() else []


def demo_sections(checks: list[dict], timings: dict, plan: dict, prepared: Path, routing_by_phase: dict,
                  composition: dict) -> list:
    from vampdiffusion.evaluation import report as R
    from vampdiffusion.evaluation.evaluate import STYLE_NAMES, TIER_NAMES

    verdict_rows = [(c["check"], c["value"] if not isinstance(c["value"], list) else
                     " < ".join(R.fmt(v) for v in c["value"]), c["threshold"], c["chance"],
                     "PASS" if c["passed"] else "FAIL") for c in checks]
    overview = (R.paragraph("The whole pipeline on the synthetic Danbooru set: synth → prepare (five filter stages) "
                            "→ encode (TAESD-XL) → train phase 1 → 2 → 3 (tiny config) → evaluate.")
                + R.table(["claim", "measured", "threshold", "chance", "verdict"], verdict_rows, "What the model learned")
                + R.table(["stage", "seconds"], [(k, round(v, 1)) for k, v in timings.items()], "Wall-clock time")
                + R.table(["phase", "optimizer steps"], [(f"phase {i + 1}", s) for i, s in enumerate(plan["steps"])],
                          f"Training plan (measured {plan['step_seconds']:.3f} s per step before training"
                          + (f"; phases 2-3 re-sized from phase 1's {plan['phase1_step_seconds']:.3f} s per step"
                             if "phase1_step_seconds" in plan else "") + ")"))
    stages = _read_json(prepared / "stages.json")
    tiers = _read_json(prepared / "tiers.json")
    styles = _read_json(prepared / "styles.json")
    data = (R.table(["stage", "in", "out", "removed", "% removed", "note"],
                    [(s["stage"], s["in"], s["out"], s["removed"], s["pct_removed"], s.get("note", ""))
                     for s in stages], "Filter stages (research document §4.2 layout)")
            + R.table(["quality tier", "score tags", "count", "%"],
                      [(f"QE-{t['tier']} ({t['name']})", t["score_tags"], t["count"], t["pct"]) for t in tiers],
                      "Quality tiers (§4.3)")
            + R.table(["style", "id", "count", "% of labeled"],
                      [(s["name"], s["style"], s["count"], s["pct_of_labeled"]) for s in styles], "Style labels (§4.4)"))
    routing_rows = [(name, r["style"]["accuracy_mean"], r["style"].get("entropy_mean"), r["quality"]["accuracy_mean"],
                     len(r.get("collapse_alerts", [])))
                    for name, r in routing_by_phase.items()]
    routing = R.table(["after", "style routing accuracy (chance 0.125)", "style entropy H_S (max 2.079)",
                       "quality routing accuracy (chance 0.25)", "collapse alerts"], routing_rows,
                      "Held-out expert routing after each phase (EMA weights)")
    c = composition
    fired = [(f"block {b}", ", ".join(f"{e} ({STYLE_NAMES[e]})" for e in top2), f"{c['style_top1_per_block'][i]}")
             for i, (b, top2) in enumerate(zip(c["style_blocks"], c["style_top2_per_block"]))]
    qfired = [(f"block {b}", f"QE-{e}" + (f" ({TIER_NAMES[e]})" if e < len(TIER_NAMES) else ""))
              for b, e in zip(c["quality_blocks"], c["quality_expert_per_block"])]
    comp = (R.paragraph(f"Prompt “{c['prompt']}” at quality {c['quality']}"
                        + (f" (not in the synthetic vocabulary, so [UNK]: {', '.join(c['unknown_tags'])})"
                           if c["unknown_tags"] else "")
                        + ". The research document's §5.4 hypothesis: the style router picks Dark/Gothic (expert 0 "
                          "after specialisation) while the quality router picks QE-3.")
            + R.image_grid([c["images"]], caption="samples", scale=4)
            + R.table(["style block", "experts chosen (top-2, any timestep)", "top-1 (mode)"], fired,
                      "Style experts fired")
            + R.table(["quality block", "expert chosen"], qfired, "Quality experts fired"))
    return [R.Section("Demo overview", overview, "overview"), R.Section("Data pipeline", data, "data"),
            R.Section("Routing by phase", routing, "routing-phases"),
            R.Section("Composition check: gothic, dark, masterpiece", comp, "composition")]


# ----------------------------------------------------------------------------
# The whole demo
# ----------------------------------------------------------------------------

def run_demo(a: DemoArgs, overrides: list[str] = ()) -> dict:
    from vampdiffusion.evaluation.evaluate import evaluate, print_summary, write_outputs
    from vampdiffusion.generation.generate import load_generator

    torch.set_num_threads(max(1, min(os.cpu_count() or 1, 4)))
    out = a.out
    out.mkdir(parents=True, exist_ok=True)
    cfg = demo_config(a, list(overrides))
    timings: dict[str, float] = {}

    def timed(name: str, fn, *args):
        banner(name)
        t0 = time.time()
        result = fn(*args)
        timings[name] = time.time() - t0
        return result

    timed("1/6 synthesise the Danbooru-like dataset", run_synth, a, out / "synth")
    timed("2/6 prepare: ingest, five filter stages, labels, vocabulary", run_prepare, cfg, out / "synth", out / "prepared")
    timed("3/6 encode latents with TAESD-XL", run_encode, cfg, out / "prepared", out / "latents")
    plan = plan_training(a, cfg, out / "latents", out)
    print(f"training plan: {plan['steps']} optimizer steps (phases 1-3), {plan['step_seconds']:.3f} s/step measured")
    init = None
    for phase in (1, 2, 3):
        folder = out / f"phase{phase}"
        if phase == 1:
            plan, trained = timed("4/6 train phase 1", run_phase1, a, cfg, plan, out / "latents", folder)
        else:
            trained = timed(f"4/6 train phase {phase}", run_phase, cfg, plan, phase, out / "latents", folder, init)
        if phase == 1 and trained >= MIN_PHASE_STEPS and "phase1_step_seconds" not in plan:
            plan = replan_after_phase1(a, plan, timings["4/6 train phase 1"] / trained, out)
            print(f"phases 2-3 re-planned from phase 1's {plan['phase1_step_seconds']:.3f} s/step: {plan['steps'][1:]} steps")
        init = folder

    banner("5/6 evaluate")
    t0 = time.time()
    routing_by_phase = {f"phase {p}": phase_routing(out / f"phase{p}" / "model", out / "latents", cfg) for p in (1, 2, 3)}
    ev = evaluate(out / "phase3" / "model", out / "latents", truth=out / "synth" / "truth.jsonl",
                  logs=[out / f"phase{p}" / "metrics.jsonl" for p in (1, 2, 3)],
                  vae_path=cfg.latents.vae_path, device="cpu")
    gen = load_generator(out / "phase3" / "model", vae_path=cfg.latents.vae_path, device="cpu")
    composition = composition_check(gen)
    timings["5/6 evaluate"] = time.time() - t0

    banner("6/6 report")
    checks = learning_checks(ev.results, routing_by_phase)
    ev.results["demo"] = {"checks": checks, "plan": plan, "timings": {k: round(v, 1) for k, v in timings.items()},
                          "routing_by_phase": routing_by_phase,
                          "composition": {k: v for k, v in composition.items() if k != "images"}}
    sections = demo_sections(checks, timings, plan, out / "prepared", routing_by_phase, composition)
    paths = write_outputs(ev, out, extra_sections=sections, title="VampDiffusion demo report",
                          columns=ev.results["eval"]["grid_columns"])
    print_summary(ev)
    print("\nwhat the model learned:")
    for c in checks:
        print(f"  [{'PASS' if c['passed'] else 'FAIL'}] {c['check']}: {c['value']} (threshold {c['threshold']}, "
              f"chance {c['chance']})")
    print(f"\nreport: {paths['report.html']}")
    return ev.results


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = DemoArgs()
    parser.add_argument("--out", default=str(d.out), help=f"output folder (default {d.out}); a second run reuses "
                        "finished stages")
    parser.add_argument("--minutes", type=float, default=d.minutes,
                        help=f"training budget of the three phases together, minutes (default {d.minutes:g})")
    parser.add_argument("--n", type=int, default=d.n, help=f"synthetic posts (default {d.n})")
    parser.add_argument("--size", type=int, default=d.size, help=f"synthetic image side, px (default {d.size})")
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--vae-path", default="", help="TAESD-XL weights: a local folder (e.g. the shared "
                        "weights/taesdxl) or a hub id; default $VAMP_TAESDXL, else downloads madebyollin/taesdxl")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a field of configs/tiny.yaml, e.g. --set model.depth=4")


def main(args: argparse.Namespace) -> int:
    import logging
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.minutes <= 0:
        print(f"vamp demo: --minutes must be > 0, got {args.minutes}", file=sys.stderr)
        return 2
    a = DemoArgs(out=Path(args.out), minutes=args.minutes, n=args.n, size=args.size, seed=args.seed,
                 vae_path=args.vae_path)
    try:
        results = run_demo(a, args.overrides)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"vamp demo: {e}", file=sys.stderr)
        return 1
    return 0 if all(c["passed"] for c in results["demo"]["checks"]) else 3
