"""The image stage of prepare: locate, read and fully decode every post's image once (in worker processes),
check its size against the metadata and compute its pHash. Results are cached by the file's md5 in
OUT/phash_cache.parquet, so a second run decodes only new files; what a file cannot be (empty, corrupt,
too large) is cached too, a size mismatch is compared with the metadata on every run."""

from __future__ import annotations

import hashlib
import itertools
import multiprocessing
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vampdiffusion.atomic import atomic_write
from vampdiffusion.data.images import ImageError, ImageRef, decode, open_source, read_bytes
from vampdiffusion.data.ingest import PostColumns
from vampdiffusion.data.phash import phash

CACHE_FILE = "phash_cache.parquet"
PROGRESS_EVERY = 100_000  # images between progress lines
JOB_BLOCK = 65_536         # decode jobs handed to the workers at a time
CACHED_REASONS = ("empty_image", "corrupt_image", "too_large")  # properties of the bytes, safe to remember by md5


_CACHE: dict[str, tuple[int, int, int, str]] = {}  # md5 -> (phash, width, height, reason or ''); inherited by forked workers


def inspect_image(job: tuple[int, ImageRef, str, int, int]) -> tuple[int, str, str, int, int, int]:
    """(row, ref, metadata md5, metadata w, h) -> (row, reason or '', md5, width, height, phash)."""
    row, ref, meta_md5, mw, mh = job
    try:
        data = read_bytes(ref)
    except ImageError as e:
        return row, e.reason, meta_md5, 0, 0, 0
    md5 = hashlib.md5(data).hexdigest()
    if md5 in _CACHE:
        h, w, hh, reason = _CACHE[md5]
        if reason:
            return row, reason, md5, 0, 0, 0
    else:
        try:
            h, w, hh = _hash_bytes(data)
        except ImageError as e:
            return row, e.reason, md5, 0, 0, 0
    if (mw and mw != w) or (mh and mh != hh):
        return row, "size_mismatch", md5, w, hh, h
    return row, "", md5, w, hh, h


def _hash_bytes(data: bytes) -> tuple[int, int, int]:
    """(pHash, width, height) from a full decode (draft decoding would change the hash, see phash.py)."""
    im = decode(data)
    return phash(im), im.width, im.height


def _load_cache(out: Path) -> None:
    _CACHE.clear()
    p = out / CACHE_FILE
    if not p.is_file():
        return
    import pyarrow.parquet as pq
    try:
        t = pq.read_table(p).to_pydict()
    except Exception:  # a damaged cache is only a cache
        print(f"warning: ignoring unreadable {p}", file=sys.stderr)
        return
    for m, h, w, hh, r in zip(t["md5"], t["phash"], t["width"], t["height"], t.get("reason", [""] * len(t["md5"]))):
        _CACHE[m] = (int(h), int(w), int(hh), r or "")


def _save_cache(out: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    items = sorted(_CACHE.items())
    table = pa.table({"md5": pa.array([k for k, _ in items], pa.string()),
                      "phash": pa.array([v[0] for _, v in items], pa.uint64()),
                      "width": pa.array([v[1] for _, v in items], pa.int32()),
                      "height": pa.array([v[2] for _, v in items], pa.int32()),
                      "reason": pa.array([v[3] for _, v in items], pa.string())})
    atomic_write(out / CACHE_FILE, lambda tmp: pq.write_table(table, tmp))


@dataclass
class ImageColumns:
    ok: np.ndarray          # (N,) bool
    path: list              # manifest path strings ('' when missing)
    md5: list
    width: np.ndarray       # decoded size
    height: np.ndarray
    phash: np.ndarray       # (N,) uint64
    cache_hits: int = 0
    decoded: int = 0


def _image_jobs(cols: PostColumns, source, res: "ImageColumns", bad: Counter):
    """Decode jobs for the posts whose file is not in the pHash cache (cache hits are filled in directly)."""
    for i in range(len(cols)):
        ref = source.locate(cols.id[i], cols.ext[i])
        if ref is None:
            bad["missing_image"] += 1
            continue
        res.path[i] = ref.path
        m = cols.md5[i]
        if m and m in _CACHE:  # known file: no read, no decode
            h, w, hh, reason = _CACHE[m]
            if reason:
                bad[reason] += 1
            elif (cols.width[i] and cols.width[i] != w) or (cols.height[i] and cols.height[i] != hh):
                bad["size_mismatch"] += 1
            else:
                res.ok[i], res.width[i], res.height[i], res.phash[i] = True, w, hh, h
                res.cache_hits += 1
            continue
        yield (i, ref, m, cols.width[i], cols.height[i])


def inspect_images(cols: PostColumns, images: str | Path, workers: int, bad: Counter) -> ImageColumns:
    """Locate, read, decode and pHash every post's image (in `workers` processes), in blocks of JOB_BLOCK
    so that pending work never holds more than one block."""
    n = len(cols)
    source = open_source(images)
    res = ImageColumns(ok=np.zeros(n, bool), path=[""] * n, md5=list(cols.md5), width=np.zeros(n, np.int32),
                       height=np.zeros(n, np.int32), phash=np.zeros(n, np.uint64))
    t0 = time.time()

    def consume(results) -> None:
        for i, reason, md5, w, hh, h in results:
            res.decoded += 1
            if reason:
                bad[reason] += 1
                if reason in CACHED_REASONS:
                    _CACHE[md5] = (0, 0, 0, reason)
                elif reason == "size_mismatch":  # the bytes are fine; the metadata is compared on every run
                    _CACHE[md5] = (h, w, hh, "")
            else:
                res.ok[i], res.width[i], res.height[i], res.phash[i], res.md5[i] = True, w, hh, h, md5
                _CACHE[md5] = (h, w, hh, "")
            if res.decoded % PROGRESS_EVERY == 0:
                print(f"  images: {res.decoded:,} decoded ({res.decoded / (time.time() - t0):.0f}/s)", flush=True)

    jobs = _image_jobs(cols, source, res, bad)
    pool = multiprocessing.get_context("fork").Pool(workers) if workers > 1 and n > 256 else None
    try:
        while block := list(itertools.islice(jobs, JOB_BLOCK)):
            consume(pool.imap_unordered(inspect_image, block, chunksize=64) if pool else map(inspect_image, block))
    finally:
        if pool:
            pool.terminate()
    return res


def scan_images(cols: PostColumns, images: str | Path, out: Path, workers: int, bad: Counter) -> ImageColumns:
    """inspect_images with the pHash cache of `out` loaded before and saved after."""
    _load_cache(out)
    result = inspect_images(cols, images, workers, bad)
    _save_cache(out)
    return result
