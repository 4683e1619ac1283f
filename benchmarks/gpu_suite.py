"""The GPU suite: four parts in a fixed order, each in its own process under its own time budget,
one JSON per part, a summary table at the end.

    python3 benchmarks/gpu_suite.py --out-dir $OUT --vae-path out/taesdxl      # one H100 / H200
    python3 benchmarks/gpu_suite.py --dry-run                                  # CPU: every part's code, tiny sizes
    python3 benchmarks/gpu_suite.py --parts loader,demo --out-dir $OUT ...     # some parts again

  throughput  v1 phase-1 step at 1024² (128² latents, micro-batch 19, bf16, grad_accum 1), one trainer per lever,
              timed by train_throughput.measure (trainer and bare loop, interleaved): torch.compile per block
              (the baseline), torch.compile of the whole model, and FP8 (torchao float8, rowwise) where torchao
              imports. Levers the code does not have are listed as such.
  memory      the largest micro-batch whose full training step fits, per memory lever (train_throughput's
              find_max_micro_batch), the measured memory model, the planner's estimate beside it.
  loader      samples/s from 128² fp16 latent shards, cold and warm, 0 / 4 / 8 workers (loader.py's measure),
              over the measured training rate per GPU (target >= 10x).
  demo        `vamp demo --config small --size 256`: synth, prepare, encode, phases 1-3, evaluation with the
              oracle, the claims; its sample grids are copied beside the JSON.

Before a part starts, the suite checks that the budget left covers the part's budget; if not, the part is
skipped and the reason printed. A part that runs past its budget is stopped (what it wrote so far stays).
Budgets guard the GPU rental's time limit; they never size the work: every part does the fixed work written below.
Writes OUT_DIR/gpu_suite_<part>.json per part and OUT_DIR/gpu_suite.json (the summary).
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
DOCS_TRAINING_RATE = 23.85   # images/s, v1 phase-1 step, compile per block, micro-batch 19 (docs/benchmarks.md)
LOADER_TARGET = 10.0         # the loader must deliver >= 10x the training rate per GPU


def bench(name: str):
    """A sibling benchmark script as a module (benchmarks/ is not a package)."""
    if f"bench_{name}" in sys.modules:
        return sys.modules[f"bench_{name}"]
    spec = importlib.util.spec_from_file_location(f"bench_{name}", HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------------
# Sizes: the GPU run and the CPU dry run (same code, tiny work)
# ----------------------------------------------------------------------------

@dataclass
class Sizes:
    config: str = "v1"                    # the model of the throughput and memory parts
    latent: int = 128                     # latent side: 1024² images
    rows: int = 64                        # rows of the random latent dataset the trainer reads
    micro_batch: int = 19                 # throughput: the largest eager micro-batch on the H200
    steps: int = 3                        # timed steps per loop and round (train_throughput.measure)
    warmup: int = 1                       # after the first (compiling) step, which is timed on its own
    search_start: int = 32                # memory: the search starts here (v1's train.micro_batch)
    search_cap: int = 160                 # and stops here (checkpointing: ~0.77 GiB per image, 139 GiB card)
    loader_rows: int = 2048               # loader: 128² latents, as the 2-core row of docs/benchmarks.md
    loader_shard: int = 256
    loader_batch: int = 32
    loader_workers: tuple[int, ...] = (0, 4, 8)
    demo_config: str = "small"
    demo_size: int = 256
    demo_n: int = 4000
    demo_overrides: list[str] = field(default_factory=list)


GPU_SIZES = Sizes()
DRY_SIZES = Sizes(config="tiny", latent=8, rows=16, micro_batch=4, steps=1, warmup=1, search_start=1, search_cap=4,
                  loader_rows=64, loader_shard=32, loader_batch=8, loader_workers=(0, 1),
                  demo_size=64, demo_n=100, demo_overrides=[
                      "model.hidden_size=64", "model.num_heads=2", "train.micro_batch=8",
                      "train.phase1.steps=2", "train.phase1.warmup_steps=1", "train.phase2.steps=1",
                      "train.phase2.warmup_steps=1", "train.phase3.steps=1", "train.phase3.warmup_steps=1",
                      "train.phase3.curate_top_k=100", "train.ckpt_every=2", "train.ema_every=2", "train.sample_every=0",
                      "sample.steps=2", "eval.n_per_tier=2", "eval.style_samples=1", "eval.batch_size=8"])

# Throughput levers that this code base does not have: recorded in the JSON, so the table says so.
NOT_IN_CODE = {
    "selective activation checkpointing": "model.gradient_checkpointing recomputes whole blocks only (dit.py _run_block)",
    "CUDA graphs": "the trainer has no CUDA-graph capture of the step (train.compile uses the default mode)",
    "EMA on the CPU": "the EMA lives on the training device (training/ema.py); only the planner's FSDP2 estimate "
                      "keeps it on the CPU",
    "fused vs foreach AdamW": "fused on every plain parameter, foreach under FSDP2 (training/optim.py): no switch",
}


@dataclass
class Lever:
    name: str
    overrides: list[str]
    fp8: bool = False


THROUGHPUT_LEVERS = [
    Lever("compile per block", ["train.compile=true", "train.compile_scope=blocks"]),
    Lever("compile whole model", ["train.compile=true", "train.compile_scope=model"]),
    Lever("fp8 rowwise + compile per block", ["train.compile=true", "train.compile_scope=blocks"], fp8=True),
]
MEMORY_LEVERS = [
    Lever("no checkpointing", ["model.gradient_checkpointing=false"]),
    Lever("per-block checkpointing", ["model.gradient_checkpointing=true"]),
]
BASE_OVERRIDES = ["train.grad_accum=1"]


def torchao_float8():
    """torchao's float8 training conversion, or None when torchao does not import."""
    try:
        from torchao.float8 import Float8LinearConfig, convert_to_float8_training
    except ImportError:
        return None
    return Float8LinearConfig, convert_to_float8_training


def to_float8(model, ao) -> int:
    """Swap the dense nn.Linear layers whose shapes FP8 matmuls take (both sides multiples of 16) for torchao's
    Float8Linear, rowwise scaling; the expert GEMMs (stacked weights, grouped matmul) stay bf16. Returns the count."""
    import torch
    config_cls, convert = ao
    chosen = [0]

    def keep(module, name: str) -> bool:
        ok = isinstance(module, torch.nn.Linear) and module.in_features % 16 == 0 and module.out_features % 16 == 0
        chosen[0] += ok
        return ok
    convert(model, config=config_cls.from_recipe_name("rowwise"), module_filter_fn=keep)
    return chosen[0]


# ----------------------------------------------------------------------------
# The parts: each runs in its own process and writes its JSON as it goes
# ----------------------------------------------------------------------------

def device_info() -> dict:
    import torch
    cuda = torch.cuda.is_available()
    return {"device": torch.cuda.get_device_name() if cuda else "cpu", "torch": torch.__version__,
            "cuda": torch.version.cuda if cuda else None, "date": time.strftime("%Y-%m-%d", time.gmtime())}


def free_device() -> None:
    import torch
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def train_config(sz: Sizes, lever: Lever):
    from vampdiffusion.config import load_config
    cfg = load_config(sz.config, BASE_OVERRIDES + lever.overrides)
    cfg.train.workers = 0
    cfg.train.sample_every = 0
    return cfg


def planner_gpu(device_name: str):
    from vampdiffusion.models.planner import GPUS
    return GPUS["h100"] if "h100" in device_name.lower() else GPUS["h200"]


def throughput_part(sz: Sizes, out: Path, work: Path) -> dict:
    """One trainer per lever at a fixed micro-batch: images/s, MFU, peak memory, the ratio to the baseline."""
    import torch
    from torch._dynamo.utils import counters
    from vampdiffusion.models.planner import GIB, memory_budget, parameter_counts
    from vampdiffusion.training import train as T
    from vampdiffusion.training.metrics import device_peak_flops, measure_matmul_peak, mfu
    TT = bench("train_throughput")
    cfg0 = train_config(sz, THROUGHPUT_LEVERS[0])
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device.type == "cuda"
    peak = measure_matmul_peak(device) if cuda else 0.0
    datasheet = device_peak_flops(device, cfg0.train.peak_tflops * 1e12)
    flops = T.flops_per_image(cfg0, cfg0.train.phase1, (sz.latent, sz.latent))
    ao = torchao_float8()
    result = {**device_info(), "config": sz.config, "latent": sz.latent, "micro_batch": sz.micro_batch,
              "overrides": BASE_OVERRIDES, "precision": cfg0.train.precision if cuda else "fp32",
              "flops_per_image": flops, "matmul_peak_tflops": peak / 1e12, "datasheet_peak_tflops": datasheet / 1e12,
              "planner_gib": sum(memory_budget(cfg0.model, (sz.latent,) * 2, sz.micro_batch, False,
                                               parameter_counts(cfg0.model)["total"]).values()) / GIB,
              "fp8": "torchao float8 rowwise" if ao else "unavailable: torchao does not import",
              "not_in_code": NOT_IN_CODE, "levers": []}
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        tmp = Path(tmp)
        data = TT.write_dataset(tmp / "latents", max(sz.rows, 2 * cfg0.train.micro_batch), sz.latent,
                                cfg0.model.max_tags, cfg0.model.vocab_size)
        for i, lever in enumerate(THROUGHPUT_LEVERS):
            if lever.fp8 and ao is None:
                result["levers"].append({"lever": lever.name, "status": result["fp8"]})
                continue
            row = {"lever": lever.name, "overrides": lever.overrides, "status": "started"}
            result["levers"].append(row)
            atomic_json(out, result)                 # a part stopped at its budget still names the lever it was in
            counters.clear()
            trainer = None
            try:
                trainer = TT.build(train_config(sz, lever), data, tmp / f"run_{i}")
                if lever.fp8:
                    row["fp8_linears"] = to_float8(trainer.model, ao)
                TT.use_micro_batch(trainer, sz.micro_batch)
                t0 = time.perf_counter()
                trainer.train_step(want_stats=False)  # the compile happens here
                TT.sync(device)
                row["first_step_s"] = time.perf_counter() - t0
                row.update(TT.measure(trainer, sz.micro_batch, sz.steps, sz.warmup, peak or datasheet))
                row["status"] = "ok"
                row["mfu_vs_datasheet"] = mfu(flops, row["trainer_images_per_s"], datasheet) if datasheet else None
            except torch.OutOfMemoryError:
                row["status"] = f"out of memory at micro-batch {sz.micro_batch}"
            except Exception as e:                   # one broken lever must not cost the others
                row["status"] = f"error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            row["dynamo_graphs"] = int(counters["stats"].get("unique_graphs", 0))
            row["graph_breaks"] = int(sum(counters["graph_break"].values()))
            row["graph_break_reasons"] = [k.splitlines()[0] for k in list(counters["graph_break"])[:5]]
            del trainer
            free_device()
            torch._dynamo.reset()                    # the next lever compiles from a clean cache
            atomic_json(out, result)
    ok = [r for r in result["levers"] if r.get("status") == "ok"]
    if ok and ok[0]["lever"] == THROUGHPUT_LEVERS[0].name:
        for r in ok:
            r["speed_over_baseline"] = r["trainer_images_per_s"] / ok[0]["trainer_images_per_s"]
    return result


def memory_part(sz: Sizes, out: Path, work: Path) -> dict:
    """Per memory lever: the largest micro-batch whose full training step fits, and peak = a + b x micro-batch."""
    from vampdiffusion.models.planner import largest_micro_batch, parameter_counts
    TT = bench("train_throughput")
    cfg0 = train_config(sz, MEMORY_LEVERS[0])
    n_params = parameter_counts(cfg0.model)["total"]
    info = device_info()
    gpu = planner_gpu(info["device"])
    result = {**info, "config": sz.config, "latent": sz.latent, "overrides": BASE_OVERRIDES,
              "search": {"start": sz.search_start, "cap": sz.search_cap, "resolution": "1/16 of the largest fit"},
              "not_in_code": NOT_IN_CODE, "levers": [],
              "estimate_24gb_claim": TT.memory_claim_estimate()}   # planner, not measured: world size 1 here
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        tmp = Path(tmp)
        data = TT.write_dataset(tmp / "latents", max(sz.rows, 2 * cfg0.train.micro_batch), sz.latent,
                                cfg0.model.max_tags, cfg0.model.vocab_size)
        for i, lever in enumerate(MEMORY_LEVERS):
            cfg = train_config(sz, lever)
            row = {"lever": lever.name, "overrides": lever.overrides, "status": "started",
                   "planner_largest_micro_batch": largest_micro_batch(cfg.model, (sz.latent,) * 2, gpu,
                                                                      cfg.model.gradient_checkpointing, n_params),
                   "planner_gpu": gpu.name}
            result["levers"].append(row)
            atomic_json(out, result)
            trainer = None
            try:
                trainer = TT.build(cfg, data, tmp / f"run_{i}")
                static = TT.static_memory_gib(trainer)
                found, peaks = TT.find_max_micro_batch(trainer, sz.search_start, sz.search_cap)
                row.update({"status": "ok", "largest_micro_batch": found, "capped": found >= sz.search_cap,
                            "static_gib": static, "peak_gib": {str(k): v for k, v in sorted(peaks.items())},
                            "memory_model": TT.memory_model(peaks, static)})
            except Exception as e:                   # one broken lever must not cost the other
                row["status"] = f"error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            del trainer
            free_device()
            atomic_json(out, result)
    return result


def training_rate(out_dir: Path) -> tuple[float, str]:
    """The measured training rate per GPU: this suite's best lever, else the docs' row."""
    try:
        levers = json.loads((out_dir / "gpu_suite_throughput.json").read_text())["levers"]
        best = max(r["trainer_images_per_s"] for r in levers if r.get("status") == "ok")
        return best, "gpu_suite_throughput.json (best lever)"
    except (OSError, ValueError, KeyError):
        return DOCS_TRAINING_RATE, "docs/benchmarks.md (compile per block, micro-batch 19)"


def loader_part(sz: Sizes, out: Path, work: Path) -> dict:
    """One epoch cold (page cache evicted) and one warm per worker count, against the training rate."""
    import os
    LB = bench("loader")
    rate, source = training_rate(out.parent)
    result = {**device_info(), "cores": os.cpu_count(), "latent": "128x128", "rows": sz.loader_rows,
              "shard_size": sz.loader_shard, "batch": sz.loader_batch, "training_images_per_s": rate,
              "training_rate_from": source, "target": f">= {LOADER_TARGET:g}x the training rate", "rows_by_workers": []}
    with tempfile.TemporaryDirectory(dir=work) as tmp:   # on disk: eviction means nothing on a tmpfs
        root = LB.write_dataset(Path(tmp) / "lat128", sz.loader_rows, 128, sz.loader_shard)
        for workers in sz.loader_workers:
            r = LB.measure(root, 128, sz.loader_rows, sz.loader_shard, sz.loader_batch, workers)
            r["cold_over_training"] = r["cold_samples_per_s"] / rate
            r["meets_target"] = r["cold_over_training"] >= LOADER_TARGET
            result["rows_by_workers"].append(r)
            atomic_json(out, result)
    return result


def demo_part(sz: Sizes, out: Path, work: Path, vae_path: str) -> dict:
    """The whole demo pipeline on the small preset; its folder under WORK (one per sizes) is reused by a rerun:
    finished stages are skipped, training resumes from its last checkpoint."""
    from vampdiffusion.config import load_config
    from vampdiffusion.demo import DemoArgs, run_demo
    from vampdiffusion.training import train as T
    key = hashlib.sha256(json.dumps([sz.demo_config, sz.demo_size, sz.demo_n, sz.demo_overrides]).encode()).hexdigest()
    a = DemoArgs(out=work / f"demo_{sz.demo_config}_{sz.demo_size}_{key[:8]}", n=sz.demo_n, size=sz.demo_size,
                 seed=0, vae_path=vae_path, config=sz.demo_config)
    result = {**device_info(), "command": f"vamp demo --config {sz.demo_config} --size {sz.demo_size} --n {sz.demo_n}"
              + "".join(f" --set {o}" for o in sz.demo_overrides), "status": "started"}
    atomic_json(out, result)
    # a rerun that reuses or resumes a phase times only part of the training: no rate from it
    partial = any((a.out / f"phase{p}").exists() for p in (1, 2, 3))
    r = run_demo(a, sz.demo_overrides)
    cfg = load_config(sz.demo_config, sz.demo_overrides)
    hw = sz.demo_size // 8
    flops = sum(cfg.train.phase(p).steps * cfg.train.micro_batch * T.flops_per_image(cfg, cfg.train.phase(p), (hw, hw))
                for p in (1, 2, 3))
    train_s = sum(v for k, v in r.timings.items() if "train phase" in k)
    oracle = r.results.get("oracle", {})
    result.update({"status": "ok", "passed": r.passed, "checks": r.checks, "steps": r.results["demo"]["steps"],
                   "micro_batch": cfg.train.micro_batch, "timings_s": r.timings, "training_s": train_s,
                   "training_flops": flops, "training_reused_or_resumed": partial,
                   "training_model_tflops_per_s": None if partial or not train_s else flops / train_s / 1e12,
                   "oracle": {k: oracle.get(k) for k in ("status", "attributes", "sharpness", "style")},
                   "routing_by_phase": r.results["demo"]["routing_by_phase"]})
    for name in ("samples_tiers.png", "samples_styles.png"):
        if (a.out / name).is_file():
            shutil.copyfile(a.out / name, out.parent / f"gpu_suite_demo_{name}")
    return result


@dataclass
class Part:
    name: str
    budget_s: float       # GPU run: checked before the part starts (skipped when less is left), its time limit
    dry_budget_s: float   # the same for --dry-run on a 2-core CPU
    what: str


# expected GPU seconds: throughput ~200 (2 builds of ~15 s, per-block compile ~60 s, whole-model compile ~90 s,
# 2 x 15 steps of ~0.8 s), memory ~75 (2 builds, 11 probes, ~40 s of steps), loader ~25, demo ~230 (synth and
# prepare ~40, encode ~20, training ~120 by configs/small.yaml's estimate, evaluation ~50)
PARTS = [
    Part("throughput", 270, 90, "v1 phase-1 step at 1024²: compile per block vs whole model (FP8 where torchao imports)"),
    Part("memory", 90, 60, "largest micro-batch at 1024² per memory lever, measured memory model, planner beside it"),
    Part("loader", 40, 60, "128² fp16 latent shards, 0 / 4 / 8 workers, cold and warm, over the training rate"),
    Part("demo", 240, 150, "vamp demo --config small --size 256: phases 1-3 and the oracle's claims"),
]


def run_part(name: str, sz: Sizes, out_dir: Path, work: Path, vae_path: str = "") -> dict:
    """Run one part in this process; its JSON is OUT_DIR/gpu_suite_<name>.json."""
    out = out_dir / f"gpu_suite_{name}.json"
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    if name == "demo":
        result = demo_part(sz, out, work, vae_path)
    else:
        result = {"throughput": throughput_part, "memory": memory_part, "loader": loader_part}[name](sz, out, work)
    result["part_s"] = round(time.time() - t0, 1)
    atomic_json(out, result)
    return result


def atomic_json(path: Path, obj: dict) -> None:
    from vampdiffusion.atomic import atomic_write_json
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, obj)


# ----------------------------------------------------------------------------
# The suite: parts in order, each in a child process under its budget
# ----------------------------------------------------------------------------

def child_command(name: str, args: argparse.Namespace) -> list[str]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--part", name, "--out-dir", str(args.out_dir),
           "--work-dir", str(args.work_dir), "--vae-path", args.vae_path]
    return cmd + (["--dry-run"] if args.dry_run else [])


def run_suite(args: argparse.Namespace, parts: list[Part]) -> dict:
    """Each part unless the budget left is below its own; a child process per part, stopped at its budget."""
    t0 = time.monotonic()
    summary = {"budget_s": args.budget, "dry_run": args.dry_run, "parts": []}
    for part in parts:
        left = args.budget - (time.monotonic() - t0)
        budget = args.part_budget.get(part.name, part.dry_budget_s if args.dry_run else part.budget_s)
        entry = {"part": part.name, "budget_s": budget, "what": part.what}
        summary["parts"].append(entry)
        if left < budget:
            entry.update(status="skipped", reason=f"{left:.0f} s of the suite's budget left, the part's budget is "
                                                  f"{budget:.0f} s")
            print(f"== {part.name}: SKIPPED ({entry['reason']})", flush=True)
            continue
        print(f"== {part.name} (budget {budget:.0f} s, {left:.0f} s left): {part.what}", flush=True)
        start = time.monotonic()
        try:
            rc = subprocess.run(child_command(part.name, args), timeout=budget).returncode
            entry["status"] = "ok" if rc == 0 else f"failed (exit code {rc})"
        except subprocess.TimeoutExpired:
            entry["status"] = f"stopped at its budget ({budget:.0f} s)"
        entry["seconds"] = round(time.monotonic() - start, 1)
        print(f"== {part.name}: {entry['status']} in {entry['seconds']:.0f} s", flush=True)
    summary["seconds"] = round(time.monotonic() - t0, 1)
    atomic_json(Path(args.out_dir) / "gpu_suite.json", summary)
    return summary


def fmt(v, spec: str = ".2f") -> str:
    return "n/a" if v is None else format(v, spec)


def value_text(v) -> str:
    """A claim's measured value: numbers to 3 decimals, a list of them joined by '<' (sharpness per tier)."""
    if isinstance(v, list):
        return " < ".join(value_text(x) for x in v)
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def summary_table(summary: dict, out_dir: Path) -> str:
    """The parts' status and their headline numbers, read back from the parts' JSON files."""
    lines = ["| part | status | seconds | result |", "|---|---|---|---|"]
    for e in summary["parts"]:
        path = out_dir / f"gpu_suite_{e['part']}.json"
        data = json.loads(path.read_text()) if path.is_file() and e["status"] != "skipped" else None
        results = headline(e["part"], data) if data else [e.get("reason", "")]
        for k, text in enumerate(results or [""]):
            head = (e["part"], e["status"], fmt(e.get("seconds"), ".0f")) if k == 0 else ("", "", "")
            lines.append(f"| {' | '.join(head)} | {text} |")
    return "\n".join(lines)


def headline(part: str, d: dict) -> list[str]:
    pct = lambda v: "n/a" if v is None else f"{v:.1%}"
    if part == "throughput":
        return [f"{r['lever']}: " + (f"{r['trainer_images_per_s']:.2f} img/s, MFU {pct(r['mfu'])} (measured peak), "
                                     f"{fmt(r.get('speed_over_baseline'), '.3f')}x baseline, first step "
                                     f"{r['first_step_s']:.0f} s, {r['graph_breaks']} graph breaks, peak "
                                     f"{fmt(r['peak_memory_gib'], '.1f')} GiB" if r.get("status") == "ok"
                                     else r.get("status", "")) for r in d["levers"]]
    if part == "memory":
        return [f"{r['lever']}: " + (f"largest micro-batch {r['largest_micro_batch']}"
                                     f"{' (search cap)' if r['capped'] else ''}, planner "
                                     f"{r['planner_largest_micro_batch']}" if r.get("status") == "ok"
                                     else r.get("status", "")) for r in d["levers"]]
    if part == "loader":
        return [f"workers {r['workers']}: cold {r['cold_samples_per_s']:.0f} samples/s = {r['cold_over_training']:.0f}x "
                f"training, warm {r['warm_samples_per_s']:.0f}" for r in d["rows_by_workers"]]
    if part == "demo":
        if d.get("status") != "ok":
            return [d.get("status", "")]
        return [f"{'PASS' if c['passed'] else 'FAIL'} {c['check']}: {value_text(c['value'])}" for c in d["checks"]] + [
            f"training {d['training_s']:.0f} s for steps {d['steps']} "
            f"({fmt(d['training_model_tflops_per_s'], '.1f')} model TFLOP/s)"]
    return []


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-dir", default="out/gpu_suite", help="folder for the JSON files, grids and log")
    ap.add_argument("--work-dir", default="out/gpu_suite_work", help="datasets and the demo's folder (on disk; "
                    "a rerun reuses the demo's finished stages)")
    ap.add_argument("--vae-path", default="", help="TAESD-XL weights for the demo (default $VAMP_TAESDXL)")
    ap.add_argument("--budget", type=float, default=570, help="seconds for the whole suite (default 570: a 600 s "
                    "command); a part starts only when its own budget is left")
    ap.add_argument("--parts", default=",".join(p.name for p in PARTS), help="comma list, run in the fixed order")
    ap.add_argument("--part-budget", action="append", default=[], metavar="PART=SECONDS",
                    help="replace one part's budget, e.g. demo=400 (repeatable)")
    ap.add_argument("--dry-run", action="store_true", help="tiny sizes (tiny config, 8² latents, 2-step demo at "
                    "64 px): every part's code on the CPU in about two minutes")
    ap.add_argument("--part", default=None, help=argparse.SUPPRESS)  # the child process of one part
    args = ap.parse_args()
    import torch
    sz = DRY_SIZES if args.dry_run else GPU_SIZES
    if not args.dry_run and not torch.cuda.is_available():
        print("gpu_suite needs a CUDA device; --dry-run runs every part at tiny sizes on the CPU", file=sys.stderr)
        return 2
    out_dir, work = Path(args.out_dir), Path(args.work_dir)
    if args.part:
        if not torch.cuda.is_available():
            torch.set_num_threads(1)
            torch._dynamo.config.disable = True   # the CPU run checks this script, not inductor's C++ build
        run_part(args.part, sz, out_dir, work, args.vae_path)
        return 0
    names = [n.strip() for n in args.parts.split(",") if n.strip()]
    try:
        args.part_budget = {k.strip(): float(v) for k, v in (item.split("=", 1) for item in args.part_budget)}
    except ValueError:
        ap.error(f"--part-budget takes PART=SECONDS, got {args.part_budget}")
    unknown = sorted((set(names) | set(args.part_budget)) - {p.name for p in PARTS})
    if unknown:
        ap.error(f"unknown part(s) {unknown}; choose from {[p.name for p in PARTS]}")
    parts = [p for p in PARTS if p.name in names]
    summary = run_suite(args, parts)
    print(summary_table(summary, out_dir))
    return 0 if all(e["status"] == "ok" for e in summary["parts"]) else 1


if __name__ == "__main__":
    sys.exit(main())
