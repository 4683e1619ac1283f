"""Shared pieces of the training tests: a tiny latent dataset on disk and a tiny config (no tests here)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vampdiffusion.atomic import atomic_write_json
from vampdiffusion.config import Config, load_config
from vampdiffusion.latents.shards import SHARDS_JSON_KEYS, write_shard, write_shards_json
from vampdiffusion.data.vocab import TagVocab

REPO = Path(__file__).resolve().parents[1]
VOCAB = ["gothic", "dark", "masterpiece", "red", "blue", "circle", "square",
         "star", "monochrome", "lineart"]


def write_latent_dataset(root: Path, n: int = 48, hw: int = 4, seed: int = 0, shards: int = 1,
                         checksum: bool = True) -> Path:
    """A latent folder as `vamp data encode` writes it: fp16 shards of (n / shards, 4, hw, hw), index, shards.json
    with its shards.json.sha256 (without it when not `checksum`: a folder whose shards.json was edited by hand),
    vocab, dataset.json."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    latents = rng.standard_normal((n, 4, hw, hw)).astype(np.float16)
    bounds = np.linspace(0, n, shards + 1).astype(int)
    records = [write_shard(root, k, latents[a:b], {"bucket": [hw * 8, hw * 8], "skipped": []})
               for k, (a, b) in enumerate(zip(bounds[:-1], bounds[1:]))]
    tag_ids = [[2, *sorted(rng.choice(np.arange(4, 4 + len(VOCAB)), size=3, replace=False).tolist()), 3] for _ in range(n)]
    table = pa.table({
        "id": pa.array(np.arange(n), pa.int64()),
        "shard": pa.array(np.repeat(np.arange(shards), np.diff(bounds)), pa.int64()),
        "row": pa.array(np.concatenate([np.arange(b - a) for a, b in zip(bounds[:-1], bounds[1:])]), pa.int64()),
        "latent_h": pa.array(np.full(n, hw), pa.int32()),
        "latent_w": pa.array(np.full(n, hw), pa.int32()),
        "tag_ids": pa.array(tag_ids, pa.list_(pa.int32())),
        "quality": pa.array(rng.integers(0, 4, n), pa.int8()),
        "style": pa.array(rng.integers(-1, 8, n), pa.int8()),
        "aesthetic": pa.array(rng.normal(5, 1, n), pa.float32()),
        "score_tag": pa.array(rng.integers(3, 10, n), pa.int8()),
        "split": pa.array(["train"] * n),
    })
    pq.write_table(table, root / "index.parquet")
    if checksum:
        write_shards_json(root, records, n)
    else:
        atomic_write_json(root / "shards.json", {"shards": [{k: r[k] for k in SHARDS_JSON_KEYS} for r in records],
                                                 "num_rows": n})
    atomic_write_json(root / "dataset.json", {"vae": "taesdxl", "vae_path": "/nonexistent/taesdxl",
                                              "scaling_factor": 1.0})
    TagVocab(VOCAB).save(root / "vocab.json")
    return root


TINY = [
    "model.hidden_size=32", "model.depth=4", "model.num_heads=2", "model.enc_dim=16", "model.enc_depth=1",
    "model.enc_heads=2", "model.max_tags=8", "model.patch_size=1", "model.max_grid=8",
    "diffusion.num_timesteps=100", "sample.steps=2", "sample.sampler=ddim",
    "train.micro_batch=8", "train.grad_accum=2", "train.log_every=1", "train.ckpt_every=10", "train.ema_every=10",
    "train.sample_every=0", "train.keep_last=2", "train.workers=0", "train.precision=fp32",
    "train.sample_prompts=[\"gothic, dark, masterpiece\", \"red, circle\"]",
    "train.phase1.steps=12", "train.phase1.warmup_steps=3", "train.phase1.lr=0.001",
    "train.phase2.steps=4", "train.phase2.warmup_steps=1",
    "train.phase3.steps=4", "train.phase3.warmup_steps=1", "train.phase3.curate_top_k=24",
]


def tiny_config(*overrides: str) -> Config:
    return load_config("tiny", [*TINY, *overrides])

