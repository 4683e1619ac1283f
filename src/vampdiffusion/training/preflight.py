"""What a training run checks before it builds the model: the latent dataset is whole, the model fits.

- `verify_data`: shards.json (and its checksum), every shard's file, shape and sha256, index.parquet against
  shards.json. Ranks split the shards between them. What was hashed is remembered in `verified.json` (the
  dataset folder's, or the run folder's when the dataset folder is read-only), keyed by each shard file's size,
  mtime_ns and recorded sha256, so a resume or the next phase reads only shards that changed.
  `vamp data verify` keeps no such cache: it always reads every byte.
- `check_memory`: the planner's memory estimate for this config, phase and data against the device's memory
  (the GPU's, or the machine's RAM on the CPU); refused only when the estimate exceeds it.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch

from vampdiffusion.atomic import atomic_write_json
from vampdiffusion.config import Config, PhaseConfig
from vampdiffusion.latents.shards import (damaged_message, index_problems, load_shards_json, read_shards_json,
                                         verify_shards)
from vampdiffusion.training import distributed as D

log = logging.getLogger("vampdiffusion.train")

VERIFIED_NAME = "verified.json"
GIB = 1024 ** 3


# ----------------------------------------------------------------------------
# The latent dataset
# ----------------------------------------------------------------------------

def verified_cache_path(data_dir: Path, run_dir: Path) -> Path:
    """The dataset's own record of verified shards, or the run's when the dataset folder is read-only."""
    return data_dir / VERIFIED_NAME if os.access(data_dir, os.W_OK) else run_dir / f"data_{VERIFIED_NAME}"


def read_cache(path: Path) -> dict[str, dict]:
    """{shard file: file_key} of an earlier check; a missing or damaged cache is empty (everything is hashed)."""
    try:
        shards = json.loads(path.read_text())["shards"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return shards if isinstance(shards, dict) else {}


def write_cache(path: Path, old: dict[str, dict], verified: dict[str, dict]) -> None:
    if verified == old:
        return
    try:
        atomic_write_json(path, {"shards": verified})
    except OSError as e:  # only costs a re-hash next time
        log.warning("could not record the verified shards in %s (%s); the next start hashes them again", path, e)


def verify_data(data_dir: Path, run_dir: Path, info: D.DistInfo) -> None:
    """Raise a ValueError naming the first problem of the dataset (and the fix); every rank raises alike."""
    records, num_rows, problems = load_shards_json(data_dir)
    cache_path = verified_cache_path(data_dir, run_dir)
    cache = read_cache(cache_path)
    mine, verified = verify_shards(data_dir, records[info.rank::info.world_size], cache)
    if info.is_main and (records or not problems):
        mine += index_problems(data_dir, records, num_rows)
    for part, done in D.gather_objects((mine, verified)):
        problems += part
        verified.update(done)
    if problems:
        raise ValueError(damaged_message(data_dir, problems))
    if info.is_main:
        write_cache(cache_path, cache, verified)
    unchanged = sum(cache.get(f) == key for f, key in verified.items())
    log.info("data: %d shard(s) verified (%d hashed, %d unchanged since the check recorded in %s), index.parquet "
             "matches shards.json", len(records), len(records) - unchanged, unchanged, cache_path)


# ----------------------------------------------------------------------------
# Memory
# ----------------------------------------------------------------------------

def device_memory_bytes(device: torch.device) -> tuple[int, str]:
    """(bytes, what they are) of the memory the run's model lives in."""
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return int(props.total_memory), f"{props.name} memory"
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "machine's RAM"


def largest_latent(data_dir: Path) -> tuple[int, int]:
    """(h, w) of the dataset's largest latent bucket: the micro-batches that need the most memory."""
    shapes = [tuple(r["shape"][2:]) for r in read_shards_json(data_dir)]
    return max(shapes, key=lambda hw: hw[0] * hw[1]) if shapes else (1, 1)


def memory_estimate(cfg: Config, phase: PhaseConfig, latent_hw: tuple[int, int], world_size: int,
                    device: torch.device) -> tuple[float, int]:
    """(bytes per device from models/planner.py, parameters) for this config, phase and data."""
    from vampdiffusion.models.planner import memory_budget, parameter_counts
    counts = parameter_counts(cfg.model)
    n = counts["total"]
    shards = world_size if cfg.train.distributed == "fsdp" and world_size > 1 else 1
    budget = memory_budget(cfg.model, latent_hw, cfg.train.micro_batch, cfg.model.gradient_checkpointing, n, shards)
    # only trained parameters have gradients, AdamW states and an EMA copy (phase 2 trains the experts)
    trained = n if phase.trainable == "all" else counts["style experts"] + counts["quality experts"]
    for key in ("optimizer states", "gradients", "EMA copy"):
        budget[key] *= trained / max(n, 1)
    if device.type != "cuda":
        budget.pop("CUDA context + overhead")
    return float(sum(budget.values())), n


def check_memory(cfg: Config, phase: PhaseConfig, data_dir: Path, info: D.DistInfo) -> None:
    """Log the model size and memory estimate; a ValueError naming both and the fixes when it cannot fit."""
    hw = largest_latent(data_dir)
    need, n_params = memory_estimate(cfg, phase, hw, info.world_size, info.device)
    processes = info.world_size if info.device.type != "cuda" else 1   # CPU ranks share one machine's RAM
    have, what = device_memory_bytes(info.device)
    t, m = cfg.train, cfg.model
    detail = (f"{n_params / 1e6:.1f}M parameters, micro_batch {t.micro_batch}, latents {hw[0]}x{hw[1]}, "
              f"gradient checkpointing {'on' if m.gradient_checkpointing else 'off'}, train.distributed={t.distributed}"
              + (f", {processes} processes" if processes > 1 else ""))
    if need * processes > have:
        raise ValueError(f"the model will not fit: the planner estimates {need * processes / GIB:.1f} GiB ({detail}), "
                         f"the {what} is {have / GIB:.1f} GiB; use a smaller preset (--config tiny), --set "
                         f"model.gradient_checkpointing=true, a smaller --set train.micro_batch=N, or --set "
                         f"train.distributed=fsdp over several GPUs")
    log.info("model size: %s; the planner estimates %.2f GiB, the %s is %.1f GiB", detail, need * processes / GIB,
             what, have / GIB)
