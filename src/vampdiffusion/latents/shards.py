"""Latent shard files, their records and checksums, and the check of a whole latent dataset.

Layout of a latent dataset folder (docs/architecture.md):

    DIR/shards/000012.npy    fp16 (n, 4, h, w), one bucket per shard, np.load(mmap_mode="r")
    DIR/shards/000012.json   the shard's record: rows, shape, bucket, sha256, encoded ids, skipped images
    DIR/shards.json          all records without the per-row lists: what the loader and `verify` read
    DIR/index.parquet        manifest columns + shard, row, latent_h, latent_w, bucket_w, bucket_h
    DIR/dataset.json         VAE backend, path, scaling factor, buckets, plan
    DIR/vocab.json           copied from the manifest's folder

A shard is finished when its record exists and the sha256 of its .npy matches the record; the .npy is
written (atomically) before its record, so a kill leaves either a finished shard or one to redo.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from vampdiffusion.atomic import atomic_write, atomic_write_json, sha256_file

SHARD_DIR = "shards"
LATENT_DTYPE = np.float16
LATENT_CHANNELS = 4


def shard_file(root: str | Path, k: int) -> Path:
    return Path(root) / SHARD_DIR / f"{k:06d}.npy"


def record_file(root: str | Path, k: int) -> Path:
    return Path(root) / SHARD_DIR / f"{k:06d}.json"


def write_shard(root: str | Path, k: int, latents: np.ndarray, record: dict) -> dict:
    """Write latents (n, 4, h, w) fp16 as shard k, then its record with the file's sha256; returns the record."""
    if latents.dtype != LATENT_DTYPE or latents.ndim != 4 or latents.shape[1] != LATENT_CHANNELS:
        raise ValueError(f"shard {k}: expected fp16 latents (n, 4, h, w), got {latents.dtype} {latents.shape}")

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(latents))

    path = atomic_write(shard_file(root, k), write)
    record = dict(record, shard=k, file=f"{SHARD_DIR}/{path.name}", rows=int(latents.shape[0]),
                  shape=list(latents.shape), sha256=sha256_file(path))
    atomic_write_json(record_file(root, k), record)
    return record


def read_record(root: str | Path, k: int) -> dict | None:
    path = record_file(root, k)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None  # unreadable record = unfinished shard


def open_shard(root: str | Path, record: dict) -> np.ndarray:
    """Memory-map one shard, checking that it exists and has the recorded shape and dtype."""
    path = Path(root) / record["file"]
    if not path.is_file():
        raise FileNotFoundError(f"shard {record['shard']}: {path} is missing; re-run `vamp data encode` to re-encode it")
    try:
        array = np.load(path, mmap_mode="r")
    except (ValueError, OSError) as e:
        raise ValueError(f"shard {record['shard']}: {path} is not a readable .npy file ({e}); "
                         f"re-run `vamp data encode` to re-encode it") from None
    if array.dtype != LATENT_DTYPE or list(array.shape) != list(record["shape"]):
        raise ValueError(f"shard {record['shard']}: {path} holds {array.dtype} {list(array.shape)}, the record says "
                         f"float16 {record['shape']}; re-run `vamp data encode` to re-encode it")
    return array


def shard_problem(root: str | Path, record: dict) -> str | None:
    """None when the shard file exists, has the recorded shape and its sha256 matches; else what is wrong."""
    try:
        open_shard(root, record)
    except (FileNotFoundError, ValueError) as e:
        return str(e)
    digest = sha256_file(Path(root) / record["file"])
    if digest != record["sha256"]:
        return (f"shard {record['shard']}: checksum mismatch in {record['file']} (sha256 {digest[:12]}…, recorded "
                f"{record['sha256'][:12]}…); re-run `vamp data encode` to re-encode it")
    return None


def read_shards_json(root: str | Path) -> list[dict]:
    path = Path(root) / "shards.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {root} is not a finished latent dataset; "
                                f"run (or finish) `vamp data encode --out {root}`")
    return json.loads(path.read_text())["shards"]


def verify_dataset(root: str | Path) -> list[str]:
    """Every problem of a finished latent dataset: missing / mis-shaped / corrupted shards, index rows out of range."""
    import pyarrow.parquet as pq
    root = Path(root)
    records = read_shards_json(root)
    problems = [p for r in records if (p := shard_problem(root, r))]
    index_path = root / "index.parquet"
    if not index_path.is_file():
        return problems + [f"{index_path} is missing; re-run `vamp data encode` to rebuild it"]
    index = pq.read_table(index_path, columns=["id", "shard", "row"])
    rows_of = {r["shard"]: r["rows"] for r in records}
    shard, row, ids = (index[c].to_numpy() for c in ("shard", "row", "id"))
    for s in sorted(set(shard.tolist()) - set(rows_of)):
        problems.append(f"index.parquet names shard {s}, which shards.json does not list")
    known = np.isin(shard, list(rows_of))
    limit = np.array([rows_of.get(int(s), 0) for s in shard], np.int64)
    for i in np.flatnonzero(known & ((row < 0) | (row >= limit)))[:10]:
        problems.append(f"index.parquet: id {ids[i]} points at row {row[i]} of shard {shard[i]}, which has {limit[i]} rows")
    return problems


__all__ = ["LATENT_DTYPE", "SHARD_DIR", "open_shard", "read_record", "read_shards_json", "record_file",
           "shard_file", "shard_problem", "verify_dataset", "write_shard"]
