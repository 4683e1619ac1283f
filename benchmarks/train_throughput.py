"""Training throughput: the trainer's optimizer step vs a bare loop, with and without gradient checkpointing.

    python benchmarks/train_throughput.py                          # CPU: tiny config, small sizes
    python benchmarks/train_throughput.py --config configs/v1.yaml --latent 128 --precision bf16 --find-max-batch
                                                                    # CUDA: v1 at 1024² (128² latents)

Both loops run in this process on the same model, data and optimizer settings:
  bare     training_loss -> backward -> clip -> AdamW step (what any loop must do)
  trainer  vampdiffusion's Trainer.train_step: the same plus loader, EMA update, finiteness check, LR schedule
The ratio bare/trainer is the trainer's overhead. On CUDA it also reports MFU (planner FLOPs, active
parameters only) and peak memory, and with --find-max-batch the largest micro-batch that fits.
Prints a table and writes JSON (--json).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
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
from vampdiffusion.data.shards import write_shard
from vampdiffusion.data.vocab import TagVocab
from vampdiffusion.diffusion.loss import training_loss
from vampdiffusion.training import distributed as D
from vampdiffusion.training import train as T
from vampdiffusion.training.metrics import device_peak_flops, mfu
from vampdiffusion.training.optim import make_optimizer


def write_dataset(root: Path, n: int, hw: int, max_tags: int) -> Path:
    """Random latents in the `vamp data encode` layout (one shard, one bucket)."""
    rng = np.random.default_rng(0)
    latents = rng.standard_normal((n, 4, hw, hw)).astype(np.float16)
    record = write_shard(root, 0, latents, {"bucket": [hw * 8, hw * 8], "skipped": []})
    tags = [f"tag{i}" for i in range(200)]
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


def time_bare(trainer: T.Trainer, steps: int, warmup: int) -> float:
    """images/s of the minimal loop on the trainer's model (a fresh optimizer, no EMA / checks)."""
    cfg, device = trainer.cfg, trainer.device
    model = trainer.wrapped
    opt = make_optimizer(trainer.trainable, cfg.train, lr=1e-5)
    params = [p for _, p in trainer.trainable]
    batch = {k: v.to(device) for k, v in next(trainer.batches).items()}
    gen = torch.Generator().manual_seed(0)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" and cfg.train.precision == "bf16"
                else contextlib.nullcontext())

    def step():
        for _ in range(cfg.train.grad_accum):
            with autocast:
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
    return steps * cfg.train.micro_batch * cfg.train.grad_accum / (time.perf_counter() - t0)


def time_trainer(trainer: T.Trainer, steps: int, warmup: int) -> float:
    from vampdiffusion.training.signals import StopRequest
    trainer.stop = StopRequest()
    for _ in range(warmup):
        trainer.train_step(want_stats=False)
    sync(trainer.device)
    t0 = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(want_stats=False)
    sync(trainer.device)
    return steps * trainer.cfg.train.micro_batch * trainer.cfg.train.grad_accum / (time.perf_counter() - t0)


def build(cfg: Config, data: Path, run: Path) -> T.Trainer:
    T.read_data_description(cfg, data)
    trainer = T.Trainer(cfg, 1, data, run, D.init_distributed())
    trainer.build(None, None)
    return trainer


def measure(base: Config, data: Path, tmp: Path, checkpointing: bool, compile_: bool, steps: int, warmup: int) -> dict:
    cfg = copy.deepcopy(base)
    cfg.model.gradient_checkpointing = checkpointing
    cfg.train.compile = compile_
    trainer = build(cfg, data, tmp / f"run_{checkpointing}_{compile_}")
    device = trainer.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    # interleave bare / trainer twice so drifting machine load hits both alike
    bare = [time_bare(trainer, steps, warmup)]
    ours = [time_trainer(trainer, steps, warmup)]
    bare.append(time_bare(trainer, steps, 0))
    ours.append(time_trainer(trainer, steps, 0))
    hw = int(trainer.latent_hw()[0])
    flops = T.flops_per_image(cfg, cfg.train.phase1, (hw, hw))
    peak = device_peak_flops(device, cfg.train.peak_tflops * 1e12)
    row = {"checkpointing": checkpointing, "compile": compile_, "micro_batch": cfg.train.micro_batch,
           "grad_accum": cfg.train.grad_accum, "bare_images_per_s": float(np.median(bare)),
           "trainer_images_per_s": float(np.median(ours))}
    row["trainer_over_bare"] = row["trainer_images_per_s"] / row["bare_images_per_s"]
    row["model_gflops_per_s"] = flops * row["trainer_images_per_s"] / 1e9
    row["mfu"] = mfu(flops, row["trainer_images_per_s"], peak) if peak > 0 else None
    row["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    del trainer
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def fits(cfg: Config, data: Path, tmp: Path, micro_batch: int, checkpointing: bool) -> bool:
    cfg.train.micro_batch = micro_batch
    try:
        measure(cfg, data, tmp, checkpointing, False, steps=1, warmup=1)
        return True
    except torch.OutOfMemoryError:
        torch.cuda.empty_cache()
        return False


def memory_claim_estimate() -> dict:
    """The research document's claim (§6.1): micro-batch 32 of v1 at 1024² fits in 24 GB per GPU.
    Analytic, from the planner's memory model (an ESTIMATE until measured on a 24 GB card)."""
    from vampdiffusion.models.planner import GIB, GPUS, largest_micro_batch, memory_budget, parameter_counts
    cfg = load_config("configs/v1.yaml").model
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/tiny.yaml")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--latent", type=int, default=8, help="latent side (1024² images: 128)")
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--compile", action="store_true", help="also measure torch.compile")
    ap.add_argument("--find-max-batch", action="store_true", help="CUDA: largest micro-batch that fits")
    ap.add_argument("--threads", type=int, default=1,
                    help="CPU threads (1: on a shared 2-core machine more threads mostly spin)")
    ap.add_argument("--json", default="benchmarks/train_throughput.json")
    args = ap.parse_args()
    cfg = load_config(args.config, args.overrides)
    cfg.train.workers = 0
    cfg.train.sample_every = 0
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = write_dataset(tmp / "latents", max(args.rows, cfg.train.micro_batch * 2), args.latent, cfg.model.max_tags)
        rows = []
        for checkpointing in (False, True):
            for compile_ in ((False, True) if args.compile else (False,)):
                rows.append(measure(cfg, data, tmp, checkpointing, compile_, args.steps, args.warmup))
        result = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "config": args.config,
                  "latent": args.latent, "precision": cfg.train.precision if device == "cuda" else "fp32",
                  "rows": rows}
        if args.find_max_batch and device == "cuda":
            result["max_micro_batch"] = {}
            for checkpointing in (False, True):
                lo, hi = 0, 1
                while fits(cfg, data, tmp, hi, checkpointing):
                    lo, hi = hi, hi * 2
                while hi - lo > 1:
                    mid = (lo + hi) // 2
                    lo, hi = (mid, hi) if fits(cfg, data, tmp, mid, checkpointing) else (lo, mid)
                result["max_micro_batch"][f"checkpointing={checkpointing}"] = lo
    print(f"device {result['device']}, config {args.config}, latent {args.latent}², micro-batch "
          f"{cfg.train.micro_batch} × accum {cfg.train.grad_accum}")
    print(f"{'checkpointing':>13} {'compile':>7} {'bare img/s':>11} {'trainer img/s':>14} {'trainer/bare':>12} "
          f"{'GFLOP/s':>8} {'MFU':>6} {'peak GiB':>8}")
    for r in rows:
        mfu_s = f"{r['mfu']:.1%}" if r["mfu"] is not None else "n/a"
        mem = f"{r['peak_memory_gib']:.1f}" if r["peak_memory_gib"] is not None else "n/a"
        print(f"{str(r['checkpointing']):>13} {str(r['compile']):>7} {r['bare_images_per_s']:11.1f} "
              f"{r['trainer_images_per_s']:14.1f} {r['trainer_over_bare']:12.3f} {r['model_gflops_per_s']:8.1f} {mfu_s:>6} "
              f"{mem:>8}")
    if "max_micro_batch" in result:
        print("largest micro-batch that fits (measured):", result["max_micro_batch"])
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
