"""Manifest -> latent shards (docs/latents.md): `encode(manifest, out, cfg)`, or `vamp data encode --manifest M --out DIR`.

The plan is a pure function of the manifest and the config: every row goes to its aspect bucket,
the rows of each bucket (in manifest order) are cut into shards of `shard_size`, shards are numbered
bucket by bucket. Rank r of a torchrun job owns the shards k with k % world_size == r. Images are
decoded in DataLoader worker processes; the VAE runs batched (fp32 on CPU, autocast on GPU).

Resume: a shard whose record exists and whose sha256 matches is skipped; any other shard of the
plan is (re-)encoded. Encoding is deterministic, so a killed and restarted run writes the same bytes.
A missing or unreadable image is counted, listed in encode_report.json and skipped; a non-finite
latent stops the run.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from vampdiffusion.atomic import atomic_write, atomic_write_bytes, atomic_write_json, sha256_file
from vampdiffusion.config import LatentConfig
from vampdiffusion.data.vocab import VOCAB_NAME
from vampdiffusion.latents.buckets import assign_buckets, bucket_set, resize_and_crop
from vampdiffusion.data.images import ImageError, ImageRef, load_image
from vampdiffusion.latents.latent_space import channel_stats
from vampdiffusion.latents.shards import (LATENT_CHANNELS, LATENT_DTYPE, SHARD_DIR, read_record, record_file,
                                       shard_file, shard_problem, write_shard, write_shards_json)
from vampdiffusion.latents.vae import SDXL_HUB_ID, VAE, VAE_FACTOR, load_vae

REQUIRED_COLUMNS = ("id", "path", "width", "height")
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}
WAIT_SECONDS = 5.0         # rank 0 polls for the other ranks' shards this often
_MEMORY_ADDRESS = re.compile(r" ?<[^<>]* at 0x[0-9a-fA-F]+>")  # PIL names the BytesIO it read; reports must not vary by run


class NonFiniteLatentError(RuntimeError):
    """The VAE produced NaN / inf (or values beyond fp16) for some image."""


# ----------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------

def load_bucket_image(ref: ImageRef, size: tuple[int, int]) -> np.ndarray:
    """(3, h, w) uint8: the image (file or tar member, RGBA on white, GIF frame 0) resized to cover
    bucket `size` = (w, h) and centre-cropped."""
    return np.asarray(resize_and_crop(load_image(ref), size)).transpose(2, 0, 1).copy()


class BucketImages(torch.utils.data.Dataset):
    """Manifest row i -> (i, (3, h, w) uint8 or None, failure reason). Runs in DataLoader workers."""

    def __init__(self, refs: list[ImageRef], sizes: np.ndarray):
        self.refs, self.sizes = refs, sizes  # sizes: (N, 2) bucket (w, h) per manifest row

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, i: int):
        try:
            return i, load_bucket_image(self.refs[i], (int(self.sizes[i, 0]), int(self.sizes[i, 1]))), ""
        except ImageError as e:  # missing / truncated / not an image / too large: counted and skipped
            return i, None, _MEMORY_ADDRESS.sub("", str(e))
        except Exception as e:  # anything else PIL raises while resizing a damaged image
            return i, None, _MEMORY_ADDRESS.sub("", f"{type(e).__name__}: {e}")


def collate_images(items: list) -> tuple[list[int], torch.Tensor | None, list[tuple[int, str]]]:
    rows = [i for i, a, _ in items if a is not None]
    images = torch.from_numpy(np.stack([a for _, a, _ in items if a is not None])) if rows else None  # (B, 3, h, w)
    failures = [(i, reason) for i, a, reason in items if a is None]
    return rows, images, failures


# ----------------------------------------------------------------------------
# Plan
# ----------------------------------------------------------------------------

@dataclass
class ShardPlan:
    shard: int                 # global shard number k
    bucket: tuple[int, int]    # (w, h) in pixels
    rows: np.ndarray           # manifest row indices, in manifest order


def plan_shards(widths: np.ndarray, heights: np.ndarray, buckets: list[tuple[int, int]], shard_size: int) -> list[ShardPlan]:
    bucket_of_row = assign_buckets(widths, heights, buckets)
    plan: list[ShardPlan] = []
    for b, size in enumerate(buckets):
        rows = np.flatnonzero(bucket_of_row == b)
        for start in range(0, len(rows), shard_size):
            plan.append(ShardPlan(len(plan), size, rows[start:start + shard_size]))
    return plan


def missing_manifest(path: Path) -> str:
    """Why there is no manifest: a prepare that kept no post leaves its report.json but no manifest."""
    try:
        kept = json.loads((path.parent / "report.json").read_text())["kept"]
    except (OSError, ValueError, KeyError, TypeError):
        kept = None
    if kept == 0:
        return (f"{path.parent} holds no manifest.parquet: `vamp data prepare` kept no post there (its stages.json "
                f"marks the stage that removed every row); loosen that stage's setting and prepare again")
    return (f"manifest {path} not found; run `vamp data prepare` first, or pass --manifest "
            f"<folder with manifest.parquet | file.parquet>")


def read_manifest(manifest: str | Path) -> tuple[pa.Table, Path]:
    """The manifest table (a parquet file, or the `vamp data prepare` folder holding manifest.parquet)."""
    path = Path(manifest)
    if path.is_dir():
        path = path / "manifest.parquet"
    if not path.is_file():
        raise FileNotFoundError(missing_manifest(path))
    table = pq.read_table(path)
    missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
    if missing:
        raise ValueError(f"manifest {path} lacks column(s) {missing}; expected the `vamp data prepare` manifest "
                         f"(columns {list(REQUIRED_COLUMNS)} at least)")
    nulls = [c for c in REQUIRED_COLUMNS if table[c].null_count]
    if nulls:
        raise ValueError(f"manifest {path}: column(s) {nulls} have empty values; re-run `vamp data prepare`")
    ids = table["id"].to_numpy()
    unique, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"manifest {path}: duplicate ids {unique[counts > 1][:5].tolist()}; each image must appear once")
    return table, path


def manifest_refs(table: pa.Table, manifest_dir: Path) -> list[ImageRef]:
    """Each row's ImageRef (path, and for a tar member its member, offset, size, sha256). Relative paths are
    relative to the manifest's folder when the first one exists there, else to the cwd."""
    paths = table["path"].to_pylist()
    if paths and not Path(paths[0]).is_absolute() and (manifest_dir / paths[0]).exists():
        paths = [str(manifest_dir / p) for p in paths]
    if "member" not in table.column_names:  # a manifest of whole files
        return [ImageRef(p) for p in paths]
    cols = [table[c].to_pylist() for c in ("member", "offset", "size", "sha256")]
    return [ImageRef(p, m or "", int(o), int(n), h or "") for p, m, o, n, h in zip(paths, *cols)]


def plan_fingerprint(cfg: LatentConfig, manifest_path: Path, plan: list[ShardPlan]) -> dict:
    """What must match for a resumed run to continue an earlier one."""
    return dict(manifest_sha256=sha256_file(manifest_path), vae=cfg.vae, vae_path=cfg.vae_path,
                scaling_factor=cfg.scaling_factor, resolution=cfg.resolution, buckets=cfg.buckets,
                bucket_step=cfg.bucket_step, max_aspect=cfg.max_aspect, shard_size=cfg.shard_size,
                batch_size=cfg.batch_size, precision=cfg.precision, num_shards=len(plan),
                num_rows=int(sum(len(s.rows) for s in plan)))


def check_plan(out: Path, fingerprint: dict) -> None:
    path = out / "plan.json"
    if path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:                     # not UTF-8, or not JSON
            old = None
        if not isinstance(old, dict):
            raise ValueError(f"{path} is damaged (not the JSON the encoder writes), so it cannot say which manifest "
                             f"and config {out} holds; use a new --out folder, or delete {out} to re-encode")
        diff = sorted(k for k in set(old) | set(fingerprint) if old.get(k) != fingerprint.get(k))
        if diff:
            raise ValueError(f"{out} holds latents of a different manifest or config (differs in {diff}); "
                             f"use a new --out folder, or delete {out} to re-encode from scratch")
    else:
        atomic_write_json(path, fingerprint)


def shard_finished(out: Path, shard: ShardPlan, ids: np.ndarray) -> bool:
    """True when shard k's record exists, covers exactly the planned ids and its checksum matches."""
    record = read_record(out, shard.shard)
    if record is None:
        return False
    covered = sorted(record.get("ids", []) + [s["id"] for s in record.get("skipped", [])])
    if covered != sorted(ids[shard.rows].tolist()):
        print(f"shard {shard.shard}: record does not match the plan; re-encoding", file=sys.stderr)
        return False
    problem = shard_problem(out, record)
    if problem:
        print(f"{problem.split(';')[0]}; re-encoding", file=sys.stderr)
        return False
    return True


def clear_shard(out: Path, k: int) -> None:
    """Remove what a killed run may have left of shard k (record first, so no stale record outlives its file)."""
    record_file(out, k).unlink(missing_ok=True)
    shard_file(out, k).unlink(missing_ok=True)
    for tmp in (out / SHARD_DIR).glob(f".{k:06d}.*.tmp"):
        tmp.unlink(missing_ok=True)


# ----------------------------------------------------------------------------
# Encoding
# ----------------------------------------------------------------------------

def autocast_context(device: torch.device, precision: str):
    if device.type != "cuda" or AUTOCAST_DTYPES[precision] is None:
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=AUTOCAST_DTYPES[precision])


def encode_images(vae: VAE, images: torch.Tensor, precision: str) -> np.ndarray:
    """(B, 3, h, w) uint8 -> (B, 4, h/8, w/8) fp16 scaled latents."""
    x = images.to(vae.device, non_blocking=True).float() / 127.5 - 1.0  # [0, 255] -> [-1, 1]
    with autocast_context(vae.device, precision):
        z = vae.encode(x)
    return z.float().cpu().numpy().astype(LATENT_DTYPE)


def encode_shards(out: Path, todo: list[ShardPlan], refs: list[ImageRef], sizes: np.ndarray, ids: np.ndarray,
                  vae: VAE, cfg: LatentConfig, desc: str) -> None:
    from tqdm import tqdm
    batches = [(s, s.rows[i:i + cfg.batch_size]) for s in todo for i in range(0, len(s.rows), cfg.batch_size)]
    loader = torch.utils.data.DataLoader(
        BucketImages(refs, sizes), batch_sampler=[b.tolist() for _, b in batches], num_workers=cfg.workers,
        collate_fn=collate_images, pin_memory=vae.device.type == "cuda")
    left = {s.shard: math.ceil(len(s.rows) / cfg.batch_size) for s in todo}
    parts: list[np.ndarray] = []
    done_ids: list[int] = []
    skipped: list[dict] = []
    progress = tqdm(total=sum(len(s.rows) for s in todo), unit="img", desc=desc, smoothing=0.1,
                    mininterval=0.5 if sys.stderr.isatty() else 30.0)  # a log file gets a line every 30 s
    for (shard, _), (rows, images, failures) in zip(batches, loader):
        if not parts and not done_ids and not skipped:
            clear_shard(out, shard.shard)
        skipped += [{"id": int(ids[i]), "path": str(refs[i]), "reason": reason} for i, reason in failures]
        if rows:
            z = encode_images(vae, images, cfg.precision)                  # (B, 4, h, w) fp16
            finite = np.isfinite(z).all(axis=(1, 2, 3))
            if not finite.all():
                bad = ids[np.asarray(rows)[~finite]].tolist()
                raise NonFiniteLatentError(
                    f"shard {shard.shard}: the VAE returned NaN/inf (or values beyond fp16) for image id(s) {bad[:10]}; "
                    f"for the SDXL VAE use the fp16-fix weights ({SDXL_HUB_ID}) or latents.precision=fp32")
            parts.append(z)
            done_ids += ids[rows].tolist()
        progress.update(len(rows) + len(failures))
        left[shard.shard] -= 1
        if left[shard.shard] == 0:
            w, h = shard.bucket
            empty = np.zeros((0, LATENT_CHANNELS, h // VAE_FACTOR, w // VAE_FACTOR), LATENT_DTYPE)
            latents = np.concatenate(parts) if parts else empty
            write_shard(out, shard.shard, latents, {"bucket": [w, h], "ids": done_ids, "skipped": skipped})
            parts, done_ids, skipped = [], [], []
    progress.close()


def wait_for_records(out: Path, plan: list[ShardPlan]) -> list[dict]:
    """Rank 0: the records of every shard, waiting for the other ranks to finish theirs."""
    announced = False
    while True:
        records = [read_record(out, s.shard) for s in plan]
        missing = [s.shard for s, r in zip(plan, records) if r is None]
        if not missing:
            return records
        if not announced:
            print(f"rank 0: waiting for {len(missing)} shard(s) of other ranks (e.g. {missing[:5]})", file=sys.stderr)
            announced = True
        time.sleep(WAIT_SECONDS)


def write_encode_report(out: Path, records: list[dict], planned: int) -> tuple[int, dict]:
    """encode_report.json: every image that could not be encoded, by reason; an error when none could."""
    skipped = [s for r in records for s in r["skipped"]]
    encoded = sum(r["rows"] for r in records)
    reasons = dict(sorted(Counter(s["reason"].split(":")[0] for s in skipped).items()))  # e.g. missing_image: 3
    atomic_write_json(out / "encode_report.json", {"planned": planned, "encoded": encoded, "skipped": len(skipped),
                                                   "skipped_by_reason": reasons, "skipped_images": skipped})
    if encoded == 0:
        raise ValueError(f"no image of the manifest could be encoded ({', '.join(f'{k} {v}' for k, v in reasons.items())}; "
                         f"each listed in {out / 'encode_report.json'}): check that the images the manifest names are "
                         f"where it says (the paths are relative to the manifest's folder), or run `vamp data prepare` again")
    return len(skipped), reasons


def write_index(out: Path, table: pa.Table, records: list[dict]) -> int:
    """index.parquet: the manifest's rows in shard order, with shard, row, latent and bucket sizes; returns the rows."""
    row_of_id = {int(i): r for r, i in enumerate(table["id"].to_numpy())}
    manifest_rows, extra = [], {k: [] for k in ("shard", "row", "latent_h", "latent_w", "bucket_w", "bucket_h")}
    for record in records:
        n, _, h, w = record["shape"]
        manifest_rows += [row_of_id[i] for i in record["ids"]]
        for key, value in (("shard", record["shard"]), ("latent_h", h), ("latent_w", w),
                           ("bucket_w", record["bucket"][0]), ("bucket_h", record["bucket"][1])):
            extra[key] += [value] * n
        extra["row"] += range(n)
    index = table.take(pa.array(manifest_rows, pa.int64()))
    types = {"shard": pa.int32(), "row": pa.int32(), "latent_h": pa.int16(), "latent_w": pa.int16(),
             "bucket_w": pa.int16(), "bucket_h": pa.int16()}
    for name, typ in types.items():
        index = index.append_column(name, pa.array(extra[name], typ))
    atomic_write(out / "index.parquet", lambda p: pq.write_table(index, p))
    return len(manifest_rows)


def finalize_dataset(out: Path, table: pa.Table, manifest_path: Path, plan: list[ShardPlan], records: list[dict],
                     vae: VAE, cfg: LatentConfig, fingerprint: dict) -> dict:
    """encode_report.json, index.parquet, shards.json, dataset.json and vocab.json from the shard records."""
    skipped, reasons = write_encode_report(out, records, fingerprint["num_rows"])
    rows = write_index(out, table, records)
    write_shards_json(out, records, rows)
    channel_mean, channel_std = channel_stats(out)  # for latents.normalize=channel (latents/latent_space.py)
    atomic_write_json(out / "dataset.json", dict(
        vae=vae.name, vae_path=vae.source, scaling_factor=vae.scaling_factor, channel_mean=channel_mean,
        channel_std=channel_std, resolution=cfg.resolution,
        buckets=cfg.buckets, bucket_sizes=sorted({tuple(r["bucket"]) for r in records}), latent_channels=LATENT_CHANNELS,
        dtype="float16", shard_size=cfg.shard_size, num_shards=len(records), num_rows=rows,
        num_skipped=skipped, manifest=str(manifest_path), manifest_sha256=fingerprint["manifest_sha256"]))
    vocab = manifest_path.parent / VOCAB_NAME
    if vocab.is_file():
        atomic_write_bytes(out / VOCAB_NAME, vocab.read_bytes())
    return {"shards": len(records), "encoded": rows, "skipped": skipped, "skipped_by_reason": reasons}


def encode(manifest: str | Path, out: str | Path, cfg: LatentConfig, device: str | torch.device = "cpu",
           rank: int = 0, world_size: int = 1) -> dict:
    """Encode (or finish encoding) the manifest's images into the latent dataset `out`; rank 0 writes the index."""
    out = Path(out)
    table, manifest_path = read_manifest(manifest)
    if table.num_rows == 0:
        raise ValueError(f"manifest {manifest_path} has no rows: `vamp data prepare` kept no post (see its stages.json)")
    ids = table["id"].to_numpy()
    refs = manifest_refs(table, manifest_path.parent)
    buckets = bucket_set(cfg)
    plan = plan_shards(table["width"].to_numpy(), table["height"].to_numpy(), buckets, cfg.shard_size)
    sizes = np.zeros((len(refs), 2), np.int64)
    for s in plan:
        sizes[s.rows] = s.bucket
    fingerprint = plan_fingerprint(cfg, manifest_path, plan)
    (out / SHARD_DIR).mkdir(parents=True, exist_ok=True)
    check_plan(out, fingerprint)
    vae = load_vae(cfg, device)
    mine = [s for s in plan if s.shard % world_size == rank]
    todo = [s for s in mine if not shard_finished(out, s, ids)]
    print(f"rank {rank}/{world_size}: {len(mine)} shard(s), {len(mine) - len(todo)} already finished, "
          f"{len(todo)} to encode ({sum(len(s.rows) for s in todo)} images)", file=sys.stderr)
    encode_shards(out, todo, refs, sizes, ids, vae, cfg, desc=f"encode rank {rank}")
    if rank != 0:
        return {"shards": len(mine), "encoded": None, "skipped": None}
    return finalize_dataset(out, table, manifest_path, plan, wait_for_records(out, plan), vae, cfg, fingerprint)


__all__ = ["BucketImages", "NonFiniteLatentError", "ShardPlan", "encode", "load_bucket_image",
           "plan_shards", "read_manifest"]
