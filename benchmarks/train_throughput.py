"""Training throughput: the trainer's optimizer step vs a bare loop, with and without gradient checkpointing.

    python benchmarks/train_throughput.py                          # CPU: tiny config, small sizes
    python benchmarks/train_throughput.py --config v1 --latent 128 --set train.grad_accum=1 \
        --find-max-batch --micro-batch max --modes plain,ckpt          # CUDA: v1 at 1024² (128² latents), bf16

Both loops run in this process on the same model, data and optimizer settings:
  bare     training_loss -> backward -> clip -> AdamW step (what any loop must do)
  trainer  vampdiffusion's Trainer.train_step: the same plus host->device batch copy, EMA update,
           finiteness check (one host sync), LR schedule
Every step uses the loader's first micro-batch tiled to the timed size (any micro-batch, no disk reads).
The ratio bare/trainer is the trainer's overhead. On CUDA it also reports MFU (planner FLOPs, active
parameters only) against the bf16 matmul peak measured in the same run and against the datasheet, and
peak memory; with --find-max-batch the largest micro-batch whose full training step fits, and the
measured memory model peak = fixed + per-image × micro-batch that answers the 24 GB question.
Prints a table and writes JSON (--json).
"""

from __future__ import annotations

import argparse
import copy
import gc
import itertools
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from vampdiffusion.atomic import atomic_write_json
from vampdiffusion.config import Config, load_config
from vampdiffusion.latents.shards import write_shard
from vampdiffusion.data.vocab import TagVocab
from vampdiffusion.diffusion.loss import training_loss
from vampdiffusion.training import distributed as D
from vampdiffusion.training import train as T
from vampdiffusion.training.metrics import device_peak_flops, measure_matmul_peak, mfu


def write_dataset(root: Path, n: int, hw: int, max_tags: int, vocab_size: int) -> Path:
    """Random latents in the `vamp data encode` layout (one shard, one bucket), with a vocabulary of the
    config's size (the trainer sizes the tag embedding from vocab.json: v1's 120k tags are 76.8M parameters)."""
    rng = np.random.default_rng(0)
    latents = rng.standard_normal((n, 4, hw, hw)).astype(np.float16)
    record = write_shard(root, 0, latents, {"bucket": [hw * 8, hw * 8], "skipped": []})
    tags = [f"tag{i}" for i in range(max(200, vocab_size - len(TagVocab([]))))]
    ids = [[2, *sorted(rng.choice(np.arange(4, 204), size=min(20, max_tags - 2), replace=False).tolist()), 3]
           for _ in range(n)]
    pq.write_table(pa.table({
        "id": pa.array(np.arange(n), pa.int64()), "shard": pa.array(np.zeros(n), pa.int64()),
        "row": pa.array(np.arange(n), pa.int64()), "latent_h": pa.array(np.full(n, hw), pa.int32()),
        "latent_w": pa.array(np.full(n, hw), pa.int32()), "tag_ids": pa.array(ids, pa.list_(pa.int32())),
        "quality": pa.array(rng.integers(0, 4, n), pa.int8()), "style": pa.array(rng.integers(-1, 8, n), pa.int8()),
        "split": pa.array(["train"] * n)}), root / "index.parquet")
    atomic_write_json(root / "shards.json", {"shards": [{k: record[k] for k in ("shard", "file", "rows", "shape",
                                                                                 "sha256", "bucket")}], "num_rows": n})
    atomic_write_json(root / "dataset.json", {"vae": "taesdxl", "vae_path": "-", "scaling_factor": 1.0})
    TagVocab(tags).save(root / "vocab.json")
    return root


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def tile(batch: dict[str, torch.Tensor], size: int) -> dict[str, torch.Tensor]:
    """The loader's micro-batch repeated along dim 0 to `size` rows (probing and timing any micro-batch)."""
    def rep(v: torch.Tensor) -> torch.Tensor:
        return v.repeat((-(-size // v.shape[0]),) + (1,) * (v.dim() - 1))[:size].clone()
    return {k: rep(v) for k, v in batch.items()}


def time_bare(trainer: T.Trainer, steps: int, warmup: int) -> float:
    """images/s of the minimal loop on the trainer's model (a fresh optimizer, no EMA / checks)."""
    cfg, device = trainer.cfg, trainer.device
    model = trainer.wrapped
    opt = trainer.optimizer  # the trainer's AdamW: a second one would double the optimizer memory
    params = [p for _, p in trainer.trainable]
    batch = {k: v.to(device) for k, v in next(trainer.batches).items()}
    images = batch["latent"].shape[0] * cfg.train.grad_accum
    gen = torch.Generator().manual_seed(0)

    def step():
        for _ in range(cfg.train.grad_accum):
            with T.autocast_context(cfg, device):
                loss, _ = training_loss(model, batch, trainer.schedule, cfg.diffusion, 0.0, gen)
            (loss / cfg.train.grad_accum).backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.train.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return steps * images / (time.perf_counter() - t0)


def time_trainer(trainer: T.Trainer, steps: int, warmup: int, images_per_step: int) -> float:
    from vampdiffusion.training.signals import StopRequest
    trainer.stop = StopRequest()
    for _ in range(warmup):
        trainer.train_step(want_stats=False)
    sync(trainer.device)
    t0 = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(want_stats=False)
    sync(trainer.device)
    return steps * images_per_step / (time.perf_counter() - t0)


def build(cfg: Config, data: Path, run: Path) -> T.Trainer:
    T.read_data_description(cfg, data)
    trainer = T.Trainer(cfg, 1, data, run, D.init_distributed())
    trainer.build(None, None)
    from vampdiffusion.training.signals import StopRequest
    trainer.stop = StopRequest()
    return trainer


def use_micro_batch(trainer: T.Trainer, size: int) -> None:
    """From now on every micro-batch of the trainer is the loader's first batch tiled to `size` rows."""
    trainer.batches = itertools.repeat(tile(next(iter(trainer.loader)), size))


def probe_step(trainer: T.Trainer, size: int) -> float | None:
    """One full training step (forward, backward, clip, AdamW, EMA) at micro-batch `size`:
    its peak allocated GiB, or None when it does not fit (CUDA out of memory)."""
    device = trainer.device
    cuda = device.type == "cuda"
    use_micro_batch(trainer, size)
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    try:
        trainer.train_step(want_stats=False)
        sync(device)
        ok = True
    except torch.OutOfMemoryError:
        ok = False
    trainer.optimizer.zero_grad(set_to_none=True)
    gc.collect()
    if not cuda:
        return 0.0  # a CPU run only exercises this code (--find-max-batch --max-batch-cap small)
    torch.cuda.empty_cache()
    return torch.cuda.max_memory_allocated(device) / 2**30 if ok else None


def static_memory_gib(trainer: T.Trainer) -> float:
    """One step at micro-batch 1 so the AdamW states exist, gradients freed: the GiB every step starts from
    (weights, AdamW, EMA; 0 on the CPU)."""
    use_micro_batch(trainer, 1)
    trainer.train_step(want_stats=False)
    trainer.optimizer.zero_grad(set_to_none=True)
    sync(trainer.device)
    return torch.cuda.memory_allocated(trainer.device) / 2**30 if trainer.device.type == "cuda" else 0.0


def find_max_micro_batch(trainer: T.Trainer, start: int, cap: int) -> tuple[int, dict[int, float | None]]:
    """Largest micro-batch (≤ cap) whose full training step fits: doubling, then bisection to 1/16 of it."""
    peaks: dict[int, float | None] = {}

    def fits(b: int) -> bool:
        peaks[b] = probe_step(trainer, b)
        print(f"  micro-batch {b:4d}: " + (f"peak {peaks[b]:.1f} GiB" if peaks[b] is not None else "out of memory"),
              file=sys.stderr, flush=True)
        return peaks[b] is not None

    lo, hi = 0, max(1, start)
    while hi <= cap and fits(hi):
        lo, hi = hi, hi * 2
    hi = min(hi, cap + 1)
    while hi - lo > max(1, lo // 16):
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo, peaks


def memory_model(peaks: dict[int, float | None], static_gib: float) -> dict:
    """Peak GiB = a + b·micro_batch, least squares over the probes that fitted (measured, then extrapolated)."""
    pts = sorted((m, p) for m, p in peaks.items() if p is not None)
    if len(pts) < 2:
        return {}
    x, y = np.array([m for m, _ in pts], float), np.array([p for _, p in pts])
    slope, intercept = np.polyfit(x, y, 1)
    if slope <= 0:  # CPU runs record no memory
        return {}
    return {"static_gib": static_gib, "fixed_gib": float(intercept), "gib_per_image": float(slope),
            "points": [[int(m), float(p)] for m, p in pts],
            "gib_at_micro_batch_32": float(intercept + 32 * slope),
            "largest_micro_batch_in_24gib": int(max(0, (24.0 - intercept) // slope))}


def measure(trainer: T.Trainer, micro_batch: int, steps: int, warmup: int, peak_flops: float) -> dict:
    """bare vs trainer images/s at `micro_batch`, interleaved twice so drifting load hits both alike."""
    cfg, device = trainer.cfg, trainer.device
    use_micro_batch(trainer, micro_batch)
    if device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    images = micro_batch * cfg.train.grad_accum
    ours = [time_trainer(trainer, steps, warmup, images)]
    bare = [time_bare(trainer, steps, warmup)]
    ours.append(time_trainer(trainer, steps, 0, images))
    bare.append(time_bare(trainer, steps, 0))
    hw = int(trainer.latent_hw()[0])
    flops = T.flops_per_image(cfg, cfg.train.phase1, (hw, hw))
    row = {"checkpointing": cfg.model.gradient_checkpointing, "compile": cfg.train.compile,
           "micro_batch": micro_batch, "grad_accum": cfg.train.grad_accum,
           "bare_images_per_s": float(np.median(bare)), "trainer_images_per_s": float(np.median(ours)),
           "bare_runs": bare, "trainer_runs": ours}
    row["trainer_over_bare"] = row["trainer_images_per_s"] / row["bare_images_per_s"]
    row["model_tflops_per_s"] = flops * row["trainer_images_per_s"] / 1e12
    row["mfu"] = mfu(flops, row["trainer_images_per_s"], peak_flops) if peak_flops > 0 else None
    row["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return row


def memory_claim_estimate() -> dict:
    """The research document's memory claim: micro-batch 32 of v1 at 1024² fits in 24 GB per GPU.
    Analytic, from the planner's memory model (an ESTIMATE until measured on a 24 GB card)."""
    from vampdiffusion.models.planner import GIB, GPUS, largest_micro_batch, memory_budget, parameter_counts
    cfg = load_config("v1").model
    hw = (128, 128)
    n_params = parameter_counts(cfg)["total"]
    gpu = GPUS["rtx4090"]
    out = {"n_params": n_params, "gpu": gpu.name, "gpu_memory_gib": gpu.memory_gib}
    for layout, shards in (("DDP replica", 1), ("FSDP2 over 2 GPUs, EMA on CPU", 2)):
        for checkpointing in (True, False):
            key = f"{layout}, checkpointing={checkpointing}"
            out[key] = {"gib_at_micro_batch_32": sum(memory_budget(cfg, hw, 32, checkpointing, n_params, shards).values()) / GIB,
                        "largest_micro_batch": largest_micro_batch(cfg, hw, gpu, checkpointing, n_params, shards)}
    return out


MODES = {"plain": (False, False), "ckpt": (True, False), "compile": (False, True), "ckpt+compile": (True, True)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="tiny")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--latent", type=int, default=8, help="latent side (1024² images: 128)")
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--modes", default="plain,ckpt", help=f"comma list of {', '.join(MODES)}")
    ap.add_argument("--compile", action="store_true", help="also measure torch.compile (adds the compile modes)")
    ap.add_argument("--micro-batch", default=None,
                    help="micro-batch of the timed rows: a number, or 'max' (CUDA: the largest that fits, "
                         "found per checkpointing setting; needs --find-max-batch); default: the config's")
    ap.add_argument("--find-max-batch", action="store_true", help="CUDA: largest micro-batch that fits")
    ap.add_argument("--max-batch-cap", type=int, default=256, help="stop the search at this micro-batch")
    ap.add_argument("--probe", default="",
                    help="comma list of micro-batches: the peak memory of one full training step at each "
                         "(CUDA), per non-compiled mode; no timing")
    ap.add_argument("--threads", type=int, default=1,
                    help="CPU threads (1: on a shared 2-core machine more threads mostly spin)")
    ap.add_argument("--json", default="benchmarks/train_throughput.json")
    args = ap.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if args.compile:
        modes += [m for m in ("compile", "ckpt+compile") if m not in modes]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        ap.error(f"unknown mode(s) {unknown}; choose from {list(MODES)}")
    cfg = load_config(args.config, args.overrides)
    cfg.train.workers = 0
    cfg.train.sample_every = 0
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device.type == "cuda"
    if not cuda:
        torch.set_num_threads(args.threads)
    if args.find_max_batch and not cuda:
        print("--find-max-batch on the CPU only exercises the search up to --max-batch-cap", file=sys.stderr)
    peak = measure_matmul_peak(device) if cuda else 0.0
    datasheet = device_peak_flops(device, cfg.train.peak_tflops * 1e12)
    result = {"device": torch.cuda.get_device_name() if cuda else "cpu", "torch": torch.__version__,
              "config": args.config, "overrides": args.overrides, "latent": args.latent,
              "precision": cfg.train.precision if cuda else "fp32",
              "matmul_peak_tflops": peak / 1e12, "datasheet_peak_tflops": datasheet / 1e12,
              "rows": [], "max_micro_batch": {}, "memory_model": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = write_dataset(tmp / "latents", max(args.rows, cfg.train.micro_batch * 2), args.latent, cfg.model.max_tags,
                             cfg.model.vocab_size)
        for i, mode in enumerate(modes):
            checkpointing, compile_ = MODES[mode]
            mcfg = copy.deepcopy(cfg)
            mcfg.model.gradient_checkpointing = checkpointing
            mcfg.train.compile = compile_
            trainer = build(mcfg, data, tmp / f"run_{i}")
            micro_batch = cfg.train.micro_batch
            key = f"checkpointing={checkpointing}"
            if args.find_max_batch and not compile_ and key not in result["max_micro_batch"]:
                static = static_memory_gib(trainer)
                found, peaks = find_max_micro_batch(trainer, cfg.train.micro_batch, args.max_batch_cap)
                result["max_micro_batch"][key] = found
                result["memory_model"][key] = memory_model(peaks, static)
            if args.probe and not compile_:
                static = static_memory_gib(trainer)
                peaks = {int(b): probe_step(trainer, int(b)) for b in args.probe.split(",")}
                result.setdefault("probes", {})[key] = {"static_gib": static, "peak_gib": peaks}
                print(f"{mode}: static {static:.2f} GiB; peak GiB per micro-batch {peaks}", flush=True)
                del trainer
                gc.collect()
                atomic_write_json(args.json, result)
                continue
            if args.micro_batch == "max":
                micro_batch = result["max_micro_batch"].get(key, micro_batch)
            elif args.micro_batch:
                micro_batch = int(args.micro_batch)
            print(f"timing {mode} at micro-batch {micro_batch}", file=sys.stderr, flush=True)
            while True:
                try:
                    row = measure(trainer, micro_batch, args.steps, args.warmup, peak or datasheet)
                    break
                except torch.OutOfMemoryError:                # allocator fragmentation after the probes
                    trainer.optimizer.zero_grad(set_to_none=True)
                    gc.collect()
                    torch.cuda.empty_cache()
                    micro_batch = micro_batch * 7 // 8
                    print(f"out of memory; timing {mode} at micro-batch {micro_batch}", file=sys.stderr, flush=True)
                    if micro_batch < 1:
                        raise
            row["mode"] = mode
            row["mfu_vs_datasheet"] = mfu(T.flops_per_image(cfg, cfg.train.phase1, (args.latent,) * 2),
                                          row["trainer_images_per_s"], datasheet) if datasheet > 0 else None
            result["rows"].append(row)
            del trainer
            gc.collect()
            if cuda:
                torch.cuda.empty_cache()
            atomic_write_json(args.json, result)              # what is measured so far survives a timeout
    rows = result["rows"]
    print(f"device {result['device']}, config {args.config}, latent {args.latent}², grad_accum {cfg.train.grad_accum}"
          + (f", measured bf16 matmul peak {peak / 1e12:.0f} TFLOP/s" if cuda else ""))
    print("| mode | micro-batch | bare img/s | trainer img/s | trainer/bare | model TFLOP/s | MFU (measured peak) "
          "| MFU (datasheet) | peak GiB |")
    print("|---|---|---|---|---|---|---|---|---|")
    pct = lambda v: f"{v:.1%}" if v is not None else "n/a"
    for r in rows:
        mem = f"{r['peak_memory_gib']:.1f}" if r["peak_memory_gib"] is not None else "n/a"
        print(f"| {r['mode']} | {r['micro_batch']} | {r['bare_images_per_s']:.2f} | {r['trainer_images_per_s']:.2f} | "
              f"{r['trainer_over_bare']:.3f} | {r['model_tflops_per_s']:.3f} | {pct(r['mfu'])} | "
              f"{pct(r['mfu_vs_datasheet'])} | {mem} |")
    if result["max_micro_batch"]:
        print("largest micro-batch that fits (measured, full training step):", result["max_micro_batch"])
        for key, mm in result["memory_model"].items():
            if mm:
                print(f"  {key}: peak GiB = {mm['fixed_gib']:.1f} + {mm['gib_per_image']:.2f} x micro-batch "
                      f"(static after a step {mm['static_gib']:.1f} GiB) -> micro-batch 32 needs "
                      f"{mm['gib_at_micro_batch_32']:.1f} GiB; largest in 24 GiB: {mm['largest_micro_batch_in_24gib']}")
    result["memory_claim_estimate"] = claim = memory_claim_estimate()
    print(f"\nESTIMATE (planner, not measured): v1 at 1024², {claim['n_params'] / 1e9:.2f}B parameters, "
          f"bf16 autocast + fp32 master weights + AdamW, on a {claim['gpu_memory_gib']:.0f} GiB {claim['gpu']}")
    print(f"{'layout':>45} {'GiB at micro-batch 32':>22} {'largest micro-batch':>20}")
    for key, v in claim.items():
        if isinstance(v, dict):
            print(f"{key:>45} {v['gib_at_micro_batch_32']:22.1f} {v['largest_micro_batch']:20d}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
