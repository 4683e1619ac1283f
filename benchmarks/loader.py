"""Loader throughput: samples/s from latent shards on local disk, next to the rate training consumes.

    python benchmarks/loader.py                      # 16x16 and 128x128 latents, 0 / 2 / 4 workers
    python benchmarks/loader.py --json PATH

The rate training needs comes from the research document's training plan: 256 samples per optimizer step
(32 per GPU x 4 accumulation x 2 GPUs) and 800k phase-1 steps in 1333-1600 hours, i.e. at most
one step every 6.0 s -> 42.7 samples/s for the job, 21.3 per rank. The loader must deliver >= 10x that.

Each configuration reads a fresh dataset written with `write_shard` (the `vamp data encode` layout),
evicts the shard files from the page cache first (posix_fadvise DONTNEED: a cold read from disk),
then times one full epoch of micro-batches through make_loader's objects (LatentDataset +
BucketBatchSampler + LatentLoader), worker start-up included. A second, warm epoch is timed too.
The tiny demo's case (8x8 latents, batch 128, no workers) is measured as well.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vampdiffusion.atomic import atomic_write_json
from vampdiffusion.latents.loader import BucketBatchSampler, LatentDataset, LatentLoader
from vampdiffusion.latents.shards import shard_file, write_shard

SAMPLES_PER_STEP = 256          # the document's plan: 32 per GPU x 4 accumulation x 2 GPUs
SECONDS_PER_STEP = 1333 * 3600 / 800_000  # the document's plan: 800k steps in >= 1333 h -> 6.0 s per step
NUM_RANKS = 2


def write_dataset(root: Path, n: int, hw: int, shard_size: int, max_tags: int = 128) -> Path:
    """n random fp16 latents (n, 4, hw, hw) in shards of shard_size, with an index like `vamp data encode` writes."""
    rng = np.random.default_rng(0)
    records, shard, row = [], [], []
    for k, start in enumerate(range(0, n, shard_size)):
        rows = min(shard_size, n - start)
        latents = rng.standard_normal((rows, 4, hw, hw), dtype=np.float32).astype(np.float16)
        records.append(write_shard(root, k, latents, {"bucket": [hw * 8, hw * 8], "ids": [], "skipped": []}))
        shard += [k] * rows
        row += range(rows)
    lengths = rng.integers(8, max_tags - 2, n)
    tag_ids = [[2, *range(4, 4 + int(m)), 3] for m in lengths]
    pq.write_table(pa.table({
        "id": pa.array(np.arange(n), pa.int64()), "shard": pa.array(shard, pa.int32()), "row": pa.array(row, pa.int32()),
        "latent_h": pa.array(np.full(n, hw), pa.int16()), "latent_w": pa.array(np.full(n, hw), pa.int16()),
        "tag_ids": pa.array(tag_ids, pa.list_(pa.int32())), "quality": pa.array(rng.integers(0, 4, n), pa.int8()),
        "style": pa.array(rng.integers(-1, 8, n), pa.int8()), "split": pa.array(["train"] * n)}), root / "index.parquet")
    keys = ("shard", "file", "rows", "shape", "bucket", "sha256")
    atomic_write_json(root / "shards.json", {"shards": [{k: r[k] for k in keys} for r in records], "num_rows": n})
    return root


def evict(root: Path, num_shards: int) -> None:
    for k in range(num_shards):
        fd = os.open(shard_file(root, k), os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)


def epoch_rate(loader: LatentLoader) -> float:
    """samples/s over one full epoch of this loader (workers start-up included)."""
    n_batches = loader.batches_per_epoch()
    start = time.perf_counter()
    samples = 0
    for i, batch in enumerate(loader):
        samples += batch["latent"].shape[0]
        if i + 1 == n_batches:
            break
    return samples / (time.perf_counter() - start)


def measure(root: Path, hw: int, n: int, shard_size: int, batch: int, workers: int) -> dict:
    dataset = LatentDataset(root, "train", max_tags=128)
    sampler = BucketBatchSampler(dataset.bucket, batch, seed=0)
    evict(root, -(-n // shard_size))
    cold = epoch_rate(LatentLoader(dataset, sampler, workers))
    warm = epoch_rate(LatentLoader(dataset, sampler, workers))
    need = SAMPLES_PER_STEP / SECONDS_PER_STEP / NUM_RANKS
    return dict(latent=f"{hw}x{hw}", rows=n, batch=batch, workers=workers, cold_samples_per_s=round(cold, 1),
                warm_samples_per_s=round(warm, 1), needed_per_rank=round(need, 1), cold_over_needed=round(cold / need, 1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--json", default="benchmarks/loader.json")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2, 4])
    args = p.parse_args()
    cases = [(16, 16384, 1000, 32), (128, 2048, 256, 32)]  # (latent side, rows, shard_size, micro-batch)
    results = []
    print(f"{'latent':>8} {'rows':>6} {'batch':>5} {'workers':>7} {'cold/s':>9} {'warm/s':>9} {'need/s':>7} {'cold/need':>9}")
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        for hw, n, shard_size, batch in cases:
            root = write_dataset(Path(tmp) / f"lat{hw}", n, hw, shard_size)
            for workers in args.workers:
                results.append(measure(root, hw, n, shard_size, batch, workers))
                r = results[-1]
                print(f"{r['latent']:>8} {r['rows']:>6} {r['batch']:>5} {r['workers']:>7} {r['cold_samples_per_s']:>9.0f} "
                      f"{r['warm_samples_per_s']:>9.0f} {r['needed_per_rank']:>7.1f} {r['cold_over_needed']:>8.0f}x", flush=True)
        root = write_dataset(Path(tmp) / "tiny", 3000, 8, 1000, max_tags=32)  # the demo: 8x8, batch 128
        results.append(measure(root, 8, 3000, 1000, 128, 0))
        r = results[-1]
        print(f"{r['latent']:>8} {r['rows']:>6} {r['batch']:>5} {r['workers']:>7} {r['cold_samples_per_s']:>9.0f} "
              f"{r['warm_samples_per_s']:>9.0f}   (tiny demo)")
    out = {"hardware": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores", "results": results,
           "samples_per_step": SAMPLES_PER_STEP, "seconds_per_step": SECONDS_PER_STEP, "ranks": NUM_RANKS}
    Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
