"""`vamp demo`: the whole system on the embedded synthetic Danbooru set, on a CPU (or one GPU).

    synth -> prepare (5 filter stages) -> encode (TAESD-XL) -> train phase 1 -> 2 -> 3 -> evaluate -> report.html

The work is fixed: the preset's steps for each phase (`tiny` at 64 px on a CPU, `small` at 256 px on a GPU),
the synthetic set's size, the seeds. Nothing measured while the demo runs decides how much it does, so the
same seed gives the same numbers on a busy machine as on an idle one (a slower machine only takes longer).
Every stage writes into its own folder of `out` and, when it has finished, a `.done.json` holding its
inputs; a second run skips each stage whose marker matches (encoding and training also resume from inside
an interrupted stage).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vampdiffusion.atomic import atomic_write_json
from vampdiffusion.config import Config, config_to_dict, load_config

TAESDXL_HUB_ID = "madebyollin/taesdxl"
# the claims: colour read from the generated images (chance 1/6), style routing after phase 2 (chance 1/8)
COLOUR_MIN = 0.70
STYLE_ROUTING_MIN = 3 / 8


@dataclass
class DemoArgs:
    out: Path = Path("vamp-demo")     # everything goes under this folder
    n: int = 4000                     # synthetic posts
    size: int = 64                    # synthetic image side, pixels
    seed: int = 0                     # synthetic data and training seed
    vae_path: str = ""                # TAESD-XL: local folder or hub id; "" = $VAMP_TAESDXL, else the hub
    config: str = "tiny"              # preset or YAML file: tiny (64 px, CPU), small (256 px, one GPU)
    device: str = ""                  # encode and evaluate here; "" = cuda when available (as training), else cpu


@dataclass
class DemoResult:
    results: dict                     # eval.json, with the demo's own section under "demo"
    checks: list[dict]                # the claims, each measured against its threshold
    report: Path
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(c["passed"] for c in self.checks)


def banner(text: str) -> None:
    print(f"\n=== {text} " + "=" * max(0, 70 - len(text)), flush=True)


def demo_config(a: DemoArgs, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """The preset (default tiny) with the demo's VAE (TAESD-XL), image size and seed."""
    cfg = load_config(a.config, list(overrides))
    cfg.latents.vae, cfg.latents.scaling_factor, cfg.latents.resolution = "taesdxl", 1.0, a.size
    cfg.latents.vae_path = a.vae_path or os.environ.get("VAMP_TAESDXL", "") or TAESDXL_HUB_ID
    cfg.train.seed = a.seed
    return cfg


def demo_device(a: DemoArgs) -> torch.device:
    """Where encoding and evaluation run: --device, else the device training picks (cuda when available)."""
    return torch.device(a.device or ("cuda" if torch.cuda.is_available() else "cpu"))


# ----------------------------------------------------------------------------
# Stages: each runs unless its folder holds a marker with the same inputs
# ----------------------------------------------------------------------------

def marker_digest(folder: Path) -> str:
    """sha256 of a finished stage's marker: the next stage's inputs name what it was built from."""
    return hashlib.sha256((folder / ".done.json").read_bytes()).hexdigest()


def stage_done(folder: Path, inputs: dict) -> bool:
    try:
        return json.loads((folder / ".done.json").read_text()) == inputs
    except (OSError, ValueError):
        return False


def run_stage(name: str, folder: Path, inputs: dict, work, timings: dict) -> None:
    """Run `work()` unless the stage is done; mark it done after; record its wall-clock seconds."""
    banner(name)
    t0 = time.time()
    if stage_done(folder, inputs):
        print(f"reusing {folder}")
    else:
        work()
        atomic_write_json(folder / ".done.json", inputs)
    timings[name] = round(time.time() - t0, 1)


def without_vae_path(cfg: Config) -> dict:
    """The config as a stage's inputs: the same weights may sit in another folder on the next run."""
    d = config_to_dict(cfg)
    d["latents"].pop("vae_path")
    return d


def phase_inputs(cfg: Config, phase: int) -> dict:
    """A training phase's config as its stage inputs: the settings it trains and runs with. The evaluation and
    sampling settings are left out (sampling draws only the phase's preview grid), and so are the later phases',
    so a run that differs only there (another eval setting, phase 2 without the specialisation loss) reuses
    its phase 1."""
    d = without_vae_path(cfg)
    for section in ("eval", "sample"):
        d.pop(section)
    for later in range(phase + 1, 4):
        d["train"].pop(f"phase{later}")
    return d


def phase_stage_inputs(cfg: Config, phase: int, upstream: str) -> dict:
    """What a training phase's stage marker records: its settings, its number and the marker digest of what it
    starts from (the latents for phase 1, the previous phase's folder after)."""
    return {"config": phase_inputs(cfg, phase), "phase": phase, "upstream": upstream}


def flat(d: dict, prefix: str = "") -> dict:
    """{"train": {"phase1": {"steps": 1}}} -> {"train.phase1.steps": 1}"""
    out = {}
    for k, v in d.items():
        out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def short(v) -> str:
    text = repr(v)
    return text if len(text) <= 24 else text[:20] + "…"


def refuse_other_inputs(folder: Path, inputs: dict, redo: list[Path]) -> None:
    """A training stage records its inputs before it trains (`.inputs.json`) and resumes only a folder started
    with the same inputs; otherwise one line names what differs and the way out (`redo`: this folder and the
    later phases'). Nothing is resumed under, or written over, other inputs."""
    from vampdiffusion.training import checkpoint as ckpt
    started = folder / ".inputs.json"
    way_out = f"give `vamp demo` a new --out, or delete {', '.join(str(f) for f in redo)} to train again"
    if started.is_file():
        then, now = flat(json.loads(started.read_text())), flat(inputs)
        changed = [f"{k} {short(then.get(k))} -> {short(now.get(k))}" for k in sorted(set(then) | set(now))
                   if then.get(k) != now.get(k)]
        if changed:
            raise ValueError(f"{folder} was started with other inputs ({'; '.join(changed[:4])}"
                             f"{' ...' if len(changed) > 4 else ''}; upstream = the data or an earlier phase); {way_out}")
    elif (folder / ".done.json").exists() or ckpt.list_checkpoints(folder):
        raise ValueError(f"{folder} holds a training run this demo did not start (no .inputs.json); {way_out}")
    atomic_write_json(started, inputs)


def data_stages(a: DemoArgs, cfg: Config, timings: dict, device: torch.device = torch.device("cpu")) -> Path:
    """synth -> prepare -> encode; returns the latent dataset folder."""
    from vampdiffusion.data.prepare import prepare
    from vampdiffusion.data.synth import SynthArgs, synthesize
    from vampdiffusion.latents.encode import encode
    out = a.out
    # every random choice is made in the main process, so the worker count changes no image
    synth = SynthArgs(n=a.n, size=a.size, seed=a.seed, workers=max(1, min(8, os.cpu_count() or 1)))
    run_stage("1/6 synthesise the Danbooru-like dataset", out / "synth", {"n": a.n, "size": a.size, "seed": a.seed},
              lambda: synthesize(synth, out / "synth"), timings)
    # prepare reads cfg.data and cfg.model.max_tags only, so a model or training override reuses the data stages
    run_stage("2/6 prepare: ingest, five filter stages, labels, vocabulary", out / "prepared",
              {"data": config_to_dict(cfg)["data"], "max_tags": cfg.model.max_tags, "synth": marker_digest(out / "synth")},
              lambda: prepare(cfg, out / "synth" / "posts.jsonl", out / "synth", out / "prepared"), timings)
    run_stage("3/6 encode latents with TAESD-XL", out / "latents",
              {"latents": without_vae_path(cfg)["latents"], "prepared": marker_digest(out / "prepared")},
              lambda: encode(out / "prepared", out / "latents", cfg.latents, device), timings)
    return out / "latents"


def train_stages(a: DemoArgs, cfg: Config, latents: Path, timings: dict) -> list[Path]:
    """Phases 1 -> 2 -> 3, each starting from the last's weights; returns the three run folders."""
    from vampdiffusion.training.train import train
    runs, upstream = [], marker_digest(latents)
    for phase in (1, 2, 3):
        folder, init = a.out / f"phase{phase}", runs[-1] if runs else None
        inputs = phase_stage_inputs(cfg, phase, upstream)

        def work(phase=phase, folder=folder, init=init, inputs=inputs) -> None:
            refuse_other_inputs(folder, inputs, [a.out / f"phase{p}" for p in range(phase, 4)])
            rc = train(copy.deepcopy(cfg), phase, latents, folder, None if init is None else str(init), resume=True)
            if rc != 0:
                raise RuntimeError(f"phase {phase} training stopped with exit code {rc}; rerun `vamp demo` to resume it")

        run_stage(f"4/6 train phase {phase} ({cfg.train.phase(phase).steps} steps)", folder, inputs, work, timings)
        runs.append(folder)
        upstream = marker_digest(folder)
    return runs


# ----------------------------------------------------------------------------
# Evaluation and claims
# ----------------------------------------------------------------------------

def evaluate_stage(a: DemoArgs, cfg: Config, latents: Path, runs: list[Path], timings: dict,
                   device: torch.device = torch.device("cpu")):
    """The phase-3 model's evaluation (with the style oracle's composition check) and the held-out routing after
    every phase."""
    from vampdiffusion.evaluation.evaluate import evaluate
    from vampdiffusion.evaluation.routing import heldout_routing
    from vampdiffusion.generation.generate import read_model_config
    from vampdiffusion.latents.loader import LatentDataset
    from vampdiffusion.models.dit import VampDiT
    banner("5/6 evaluate")
    t0 = time.time()
    heldout = LatentDataset(latents, split="eval", max_tags=cfg.model.max_tags)
    # each run's own config: it holds the latent space a token router reads x_t in
    routing = {f"phase {p}": heldout_routing(VampDiT.from_pretrained(run / "model").eval(), heldout,
                                             read_model_config(run / "model"))
               for p, run in enumerate(runs, start=1)}
    ev = evaluate(runs[-1] / "model", latents, truth=a.out / "synth" / "truth.jsonl",
                  logs=[run / "metrics.jsonl" for run in runs], vae_path=cfg.latents.vae_path, device=str(device))
    timings["5/6 evaluate"] = round(time.time() - t0, 1)
    return ev, routing


def learning_checks(results: dict, routing_by_phase: dict) -> list[dict]:
    """The demo's claims, each a measured number against its threshold and its chance level."""
    oracle = results.get("oracle", {})
    colour = oracle.get("attributes", {}).get("colour", {})
    sharp = oracle.get("sharpness", {})
    style = routing_by_phase["phase 2"]["style"]
    return [
        {"check": "colour conditioning accuracy (single-object prompts)", "value": colour.get("accuracy"),
         "threshold": f">= {COLOUR_MIN:.2f}", "chance": colour.get("chance"),
         "passed": colour.get("accuracy") is not None and colour["accuracy"] >= COLOUR_MIN,
         "note": colour.get("status", oracle.get("status", ""))},
        {"check": "mean sharpness of generated images rises with quality tier 0 -> 3",
         "value": [sharp.get("generated", {}).get(str(q)) for q in range(4)], "threshold": "increasing",
         "chance": None, "passed": bool(sharp.get("rises_with_tier", False))},
        {"check": "style routing accuracy after phase 2 (held-out, mean over blocks)", "value": style["accuracy_mean"],
         "threshold": f">= {STYLE_ROUTING_MIN:.3f}", "chance": style["chance"],
         "passed": style["accuracy_mean"] is not None and style["accuracy_mean"] >= STYLE_ROUTING_MIN},
    ]


def overview_section(checks: list[dict], timings: dict, cfg: Config):
    from vampdiffusion.evaluation import report as R
    rows = [(c["check"], " < ".join(R.fmt(v) for v in c["value"]) if isinstance(c["value"], list) else c["value"],
             c["threshold"], c["chance"], "PASS" if c["passed"] else "FAIL") for c in checks]
    body = (R.paragraph("The whole pipeline on the synthetic Danbooru set: synth → prepare (five filter stages) → encode "
                        "(TAESD-XL) → train phase 1 → 2 → 3 (fixed steps) → evaluate.")
            + R.table(["claim", "measured", "threshold", "chance", "verdict"], rows, "What the model learned")
            + R.table(["phase", "optimizer steps"], [(f"phase {p}", cfg.train.phase(p).steps) for p in (1, 2, 3)],
                      "Training (the preset's steps)")
            + R.table(["stage", "seconds"], list(timings.items()), "Wall-clock time (reported, never used to size the work)"))
    return R.Section("Demo overview", body, "overview")


# ----------------------------------------------------------------------------
# The whole demo
# ----------------------------------------------------------------------------

def run_demo(a: DemoArgs, overrides: list[str] | tuple[str, ...] = ()) -> DemoResult:
    """synth -> prepare -> encode -> train ×3 -> evaluate -> report; the claims measured on the way."""
    from vampdiffusion.evaluation import sections as S
    from vampdiffusion.evaluation.evaluate import write_outputs
    from vampdiffusion.latents.vae import load_vae
    torch.set_num_threads(max(1, min(os.cpu_count() or 1, 4)))
    cfg = demo_config(a, overrides)
    device = demo_device(a)
    load_vae(cfg.latents)   # a wrong --vae-path is refused before the first stage, not at the third
    a.out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    latents = data_stages(a, cfg, timings, device)
    runs = train_stages(a, cfg, latents, timings)
    ev, routing = evaluate_stage(a, cfg, latents, runs, timings, device)
    banner("6/6 report")
    checks = learning_checks(ev.results, routing)
    ev.results["demo"] = {"checks": checks, "steps": [cfg.train.phase(p).steps for p in (1, 2, 3)],
                          "timings": timings, "routing_by_phase": routing}
    sections = [overview_section(checks, timings, cfg), S.data_section(a.out / "prepared"),
                S.routing_by_phase_section(routing)]
    paths = write_outputs(ev, a.out, extra_sections=sections, title="VampDiffusion demo report",
                          columns=cfg.eval.grid_columns)
    return DemoResult(results=ev.results, checks=checks, report=paths["report.html"], timings=timings)


__all__ = ["DemoArgs", "DemoResult", "demo_config", "learning_checks", "run_demo"]
