"""The image stage of prepare: locate, read and fully decode every post's image once (in worker processes),
check its size against the metadata and compute its pHash.

Results are cached in OUT/phash_cache/ by where the bytes are (file, tar member) and reused only while that
file is unchanged (its size and mtime, and the member's offset and size); the cache is written after every
block of images, so a killed prepare continues without re-reading the images it finished. What the bytes are
not (empty, corrupt, too large, unsupported) is cached too; the size check against the metadata runs every time.
"""

from __future__ import annotations

import hashlib
import itertools
import multiprocessing
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vampdiffusion.atomic import atomic_write
from vampdiffusion.data.images import ImageError, ImageRef, decode, read_bytes
from vampdiffusion.data.ingest import PostColumns
from vampdiffusion.data.phash import phash

CACHE_DIR = "phash_cache"
PROGRESS_EVERY = 100_000  # images between progress lines
JOB_BLOCK = 65_536         # decode jobs handed to the workers at a time (and cached together)
CACHED_REASONS = ("empty_image", "corrupt_image", "too_large", "unsupported_image")  # properties of the bytes

Key = tuple[str, str]                          # (file, tar member or "")
Stamp = tuple[int, int, int, int]              # file size, file mtime_ns, member offset, member size


@dataclass
class Entry:
    stamp: Stamp
    phash: int
    width: int
    height: int
    reason: str            # "" = a usable image
    md5: str


@dataclass
class ImageCache:
    """The cache in memory: what each file (or tar member) decoded to while it had this stamp."""
    folder: Path
    entries: dict[Key, Entry] = field(default_factory=dict)
    new: dict[Key, Entry] = field(default_factory=dict)   # not yet written
    parts: int = 0

    def get(self, key: Key, stamp: Stamp) -> Entry | None:
        e = self.entries.get(key)
        return e if e is not None and e.stamp == stamp else None

    def put(self, key: Key, entry: Entry) -> None:
        self.entries[key] = self.new[key] = entry


def load_cache(folder: Path) -> ImageCache:
    import pyarrow.parquet as pq
    cache = ImageCache(folder)
    for part in sorted(folder.glob("part-*.parquet")) if folder.is_dir() else []:
        try:
            t = pq.read_table(part).to_pydict()
        except Exception:  # a damaged part is only lost cache: those images are decoded again
            print(f"warning: ignoring unreadable {part}", file=sys.stderr)
            continue
        for row in zip(*(t[c] for c in ("file", "member", "size", "mtime_ns", "offset", "length", "phash", "width",
                                          "height", "reason", "md5"))):
            f, m, size, mtime, off, length, h, w, hh, reason, md5 = row
            cache.entries[(f, m)] = Entry((size, mtime, off, length), int(h), int(w), int(hh), reason or "", md5 or "")
        cache.parts += 1
    return cache


def save_new(cache: ImageCache) -> None:
    """Write the entries added since the last save as one more part file (atomically)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    if not cache.new:
        return
    items = list(cache.new.items())
    cols = {"file": [k[0] for k, _ in items], "member": [k[1] for k, _ in items],
            "size": [e.stamp[0] for _, e in items], "mtime_ns": [e.stamp[1] for _, e in items],
            "offset": [e.stamp[2] for _, e in items], "length": [e.stamp[3] for _, e in items],
            "phash": pa.array([e.phash for _, e in items], pa.uint64()), "width": [e.width for _, e in items],
            "height": [e.height for _, e in items], "reason": [e.reason for _, e in items], "md5": [e.md5 for _, e in items]}
    table = pa.table(cols)
    atomic_write(cache.folder / f"part-{cache.parts:06d}.parquet", lambda tmp: pq.write_table(table, tmp))
    cache.parts += 1
    cache.new = {}


# ----------------------------------------------------------------------------
# One image
# ----------------------------------------------------------------------------

def inspect_image(job: tuple[int, ImageRef]) -> tuple[int, Entry | str]:
    """(row, ref) -> (row, the decoded entry without its stamp), or (row, reason) when the bytes cannot be read."""
    row, ref = job
    try:
        data = read_bytes(ref)
    except ImageError as e:
        return row, e.reason
    md5 = hashlib.md5(data).hexdigest()
    try:
        im = decode(data)  # a full decode: draft decoding would change the hash (phash.py)
    except ImageError as e:
        return row, Entry((0, 0, 0, 0), 0, 0, 0, e.reason, md5)
    return row, Entry((0, 0, 0, 0), phash(im), im.width, im.height, "", md5)


def size_matches(meta_w: int, meta_h: int, w: int, h: int) -> bool:
    """The metadata size (0 = absent) is the decoded size, either way round (an EXIF rotation swaps them)."""
    if not meta_w and not meta_h:
        return True
    return (meta_w in (0, w) and meta_h in (0, h)) or (meta_w in (0, h) and meta_h in (0, w))


# ----------------------------------------------------------------------------
# Every post's image
# ----------------------------------------------------------------------------

@dataclass
class ImageColumns:
    ok: np.ndarray          # (N,) bool
    refs: list              # ImageRef per post (None when missing)
    md5: list
    width: np.ndarray       # decoded size
    height: np.ndarray
    phash: np.ndarray       # (N,) uint64
    cache_hits: int = 0
    decoded: int = 0


class Stamps:
    """os.stat once per file (a tar shard holds thousands of members)."""

    def __init__(self):
        self._files: dict[str, tuple[int, int]] = {}

    def of(self, ref: ImageRef) -> Stamp:
        if ref.file not in self._files:
            st = os.stat(ref.file)
            self._files[ref.file] = (st.st_size, st.st_mtime_ns)
        return (*self._files[ref.file], ref.offset, ref.size)


def record(res: ImageColumns, i: int, e: Entry, cols: PostColumns, bad: Counter) -> None:
    """Fill row i from its entry, or count why it is not usable."""
    if e.reason:
        bad[e.reason] += 1
    elif not size_matches(cols.width[i], cols.height[i], e.width, e.height):
        bad["size_mismatch"] += 1
    else:
        res.ok[i], res.width[i], res.height[i], res.phash[i], res.md5[i] = True, e.width, e.height, e.phash, e.md5


def image_jobs(cols: PostColumns, source, res: ImageColumns, cache: ImageCache, bad: Counter):
    """Decode jobs for the posts whose bytes are not in the cache (cache hits are filled in directly)."""
    stamps = Stamps()
    for i in range(len(cols)):
        ref = source.locate(cols.id[i], cols.ext[i])
        if ref is None:
            bad["missing_image"] += 1
            continue
        res.refs[i] = ref
        hit = cache.get((ref.file, ref.member), stamps.of(ref))
        if hit is not None:
            record(res, i, hit, cols, bad)
            res.cache_hits += 1
            continue
        yield i, ref


def consume(results, res: ImageColumns, cols: PostColumns, cache: ImageCache, bad: Counter, t0: float) -> None:
    stamps = Stamps()
    for i, found in results:
        res.decoded += 1
        if isinstance(found, str):         # not read: missing, not a file, unreadable, short, not the index's bytes
            bad[found] += 1
        else:
            ref = res.refs[i]
            found.stamp = stamps.of(ref)
            if not found.reason or found.reason in CACHED_REASONS:
                cache.put((ref.file, ref.member), found)
            record(res, i, found, cols, bad)
        if res.decoded % PROGRESS_EVERY == 0:
            print(f"  images: {res.decoded:,} decoded ({res.decoded / (time.time() - t0):.0f}/s)", flush=True)


def scan_images(cols: PostColumns, source, out: Path, workers: int, bad: Counter) -> ImageColumns:
    """Locate, read, decode and pHash every post's image (in `workers` processes) in blocks of JOB_BLOCK,
    saving the cache after each block."""
    n = len(cols)
    cache = load_cache(out / CACHE_DIR)
    res = ImageColumns(ok=np.zeros(n, bool), refs=[None] * n, md5=list(cols.md5), width=np.zeros(n, np.int32),
                       height=np.zeros(n, np.int32), phash=np.zeros(n, np.uint64))
    t0 = time.time()
    jobs = image_jobs(cols, source, res, cache, bad)
    pool = multiprocessing.get_context("fork").Pool(workers) if workers > 1 and n > 256 else None
    try:
        while block := list(itertools.islice(jobs, JOB_BLOCK)):
            consume(pool.imap_unordered(inspect_image, block, chunksize=64) if pool else map(inspect_image, block),
                    res, cols, cache, bad, t0)
            save_new(cache)
    finally:
        if pool:
            pool.terminate()
    return res
