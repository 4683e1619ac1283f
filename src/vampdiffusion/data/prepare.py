"""`vamp data prepare`: the whole of SPEC §1, posts + images -> manifest.parquet.

  ingest     stream the posts file, parse each record (bad ones counted by reason and skipped), locate
             and decode every post's image once (missing / empty / corrupt / mis-sized images counted
             and skipped), computing its pHash (cached by md5 in OUT/phash_cache.parquet)
  score_tag  per-year deciles of the raw score over all usable posts
  stages     1 resolution, 2 score, 3 aesthetic, 4 tag density, 5 near-duplicates
  labels     quality tier, style label; tag vocabulary; train / eval split
  outputs    manifest.parquet, vocab.json, stages.json, tiers.json, styles.json, report.json
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import multiprocessing
import sys
import time
from array import array
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vampdiffusion.atomic import atomic_write, atomic_write_json
from vampdiffusion.config import DataConfig
from vampdiffusion.data import dedup, filters, labels
from vampdiffusion.data.danbooru import read_posts
from vampdiffusion.data.images import ImageError, ImageRef, decode, open_source, read_bytes
from vampdiffusion.data.phash import phash
from vampdiffusion.data.vocab import TagVocab

CACHE_FILE = "phash_cache.parquet"
PROGRESS_EVERY = 100_000  # images between progress lines
JOB_BLOCK = 65_536         # decode jobs handed to the workers at a time
CACHED_REASONS = ("empty_image", "corrupt_image", "too_large")  # properties of the bytes, safe to remember by md5


# ----------------------------------------------------------------------------
# Ingest: posts -> columns (memory: the manifest's columns, nothing per record beyond them)
# ----------------------------------------------------------------------------

@dataclass
class PostColumns:
    id: array = field(default_factory=lambda: array("q"))
    md5: list = field(default_factory=list)
    ext: list = field(default_factory=list)
    width: array = field(default_factory=lambda: array("i"))      # metadata size (0 = absent)
    height: array = field(default_factory=lambda: array("i"))
    score: array = field(default_factory=lambda: array("q"))
    year: array = field(default_factory=lambda: array("h"))
    aesthetic: array = field(default_factory=lambda: array("f"))
    n_general: array = field(default_factory=lambda: array("i"))
    tags: list = field(default_factory=list)                       # space-separated, all categories

    def __len__(self) -> int:
        return len(self.id)


def ingest_posts(path: str | Path, bad: Counter, ratings: Counter) -> PostColumns:
    """Stream the posts file into columns; skipped records are counted in `bad` by reason."""
    cols = PostColumns()
    seen: set[int] = set()
    for p in read_posts(path, bad):
        if p.id in seen:
            bad["duplicate_id"] += 1
            continue
        seen.add(p.id)
        ratings[p.rating] += 1
        cols.id.append(p.id)
        cols.md5.append(p.md5)
        cols.ext.append(sys.intern(p.file_ext))
        cols.width.append(min(p.width, 2**31 - 1))
        cols.height.append(min(p.height, 2**31 - 1))
        cols.score.append(p.score)
        cols.year.append(max(-32768, min(p.year, 32767)))
        cols.aesthetic.append(p.aesthetic)
        cols.n_general.append(min(p.n_general, 2**31 - 1))
        cols.tags.append(" ".join(p.tags))
    return cols


# ----------------------------------------------------------------------------
# Images: one decode per post (in worker processes), pHash, size check
# ----------------------------------------------------------------------------

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


# ----------------------------------------------------------------------------
# Split
# ----------------------------------------------------------------------------

def split_of(ids: np.ndarray, eval_fraction: float) -> np.ndarray:
    """'eval' when splitmix64(id) / 2^64 < eval_fraction: a fixed hash of the id, stable across runs."""
    with np.errstate(over="ignore"):
        z = np.asarray(ids, np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    u = (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    return np.where(u < eval_fraction, "eval", "train")


# ----------------------------------------------------------------------------
# The pipeline
# ----------------------------------------------------------------------------

def _validate(cfg: DataConfig, posts: Path, images: Path) -> None:
    if not posts.is_file():
        raise FileNotFoundError(f"posts file {posts} not found; pass --posts FILE (JSON lines / JSON array / parquet, .gz / .zst)")
    if not images.is_dir():
        raise FileNotFoundError(f"image folder {images} not found; pass --images DIR (original/0NNN/<id>.<ext> or data-0NNN.tar)")
    if cfg.phash_distance < 1:
        raise ValueError(f"data.phash_distance must be >= 1 (pairs with distance < it are duplicates), got {cfg.phash_distance}")
    if cfg.phash_blocks <= cfg.phash_distance - 1:
        raise ValueError(f"data.phash_blocks ({cfg.phash_blocks}) must exceed data.phash_distance - 1 ({cfg.phash_distance - 1})")
    if not 0.0 <= cfg.eval_fraction < 1.0:
        raise ValueError(f"data.eval_fraction must be in [0, 1), got {cfg.eval_fraction}")
    if cfg.max_tags < 2:
        raise ValueError(f"data.max_tags must be >= 2 ([BOS] and [EOS]), got {cfg.max_tags}")
    if cfg.aesthetic_weights and not Path(cfg.aesthetic_weights).is_file():
        raise FileNotFoundError(f"data.aesthetic_weights file {cfg.aesthetic_weights} not found "
                                "(sac+logos+ava1-l14-linearMSE.pth; set it to '' to use the aesthetic column or skip)")


def prepare(cfg: DataConfig, posts: str | Path, images: str | Path, out: str | Path, log=print) -> dict:
    """Run SPEC §1 end to end; write the outputs to `out` and return the report."""
    _validate(cfg, Path(posts), Path(images))
    t0 = time.time()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tier_starts = labels.parse_tier_starts(cfg.quality_tier_starts)
    clusters = labels.load_style_clusters(cfg.style_clusters)

    bad: Counter = Counter()
    ratings: Counter = Counter()
    cols = ingest_posts(posts, bad, ratings)
    n_records = len(cols) + sum(bad.values())
    log(f"ingest: {n_records:,} records, {len(cols):,} parsed posts ({time.time() - t0:.1f} s)")
    _load_cache(out)
    img = inspect_images(cols, images, cfg.workers, bad)
    _save_cache(out)
    log(f"images: {img.decoded:,} decoded, {img.cache_hits:,} from the pHash cache ({time.time() - t0:.1f} s)")

    ids = np.frombuffer(cols.id, np.int64)
    score = np.frombuffer(cols.score, np.int64)
    year = np.frombuffer(cols.year, np.int16)
    aesthetic = np.frombuffer(cols.aesthetic, np.float32).copy()
    n_general = np.frombuffer(cols.n_general, np.int32)
    valid = img.ok
    score_tag = np.zeros(len(cols), np.int8)
    score_tag[valid] = labels.score_tags(score[valid], year[valid])  # deciles among all usable posts of the year

    table = filters.StageTable()
    table.rows.append(filters.StageRow("0 ingest", n_records, int(valid.sum()),
                                       note=f"bad input: {sum(bad.values()):,} (by reason in report.json)"))
    k1 = valid & filters.keep_resolution(img.width, img.height, cfg.min_side, cfg.min_pixels)
    table.add("1 resolution", valid, k1, note=f"min side {cfg.min_side}, min pixels {cfg.min_pixels:,}")
    k2 = k1 & filters.keep_score(score_tag, cfg.min_score_tag)
    table.add("2 score", k1, k2, note=f"score_tag >= {cfg.min_score_tag}")

    aesthetic_source, k3 = _aesthetic_stage(cfg, valid, k2, aesthetic, img.path, log)
    if aesthetic_source == filters.SKIPPED:
        table.add("3 aesthetic", k2, k3, status=filters.SKIPPED,
                  note="SKIPPED: no aesthetic column and no data.aesthetic_weights")
        log("WARNING: stage 3 (aesthetic) SKIPPED: the posts have no aesthetic column and data.aesthetic_weights is ''")
    else:
        unscored = int((k2 & np.isnan(aesthetic)).sum())
        table.add("3 aesthetic", k2, k3, note=f">= {cfg.min_aesthetic} ({aesthetic_source}"
                  + (f"; {unscored:,} rows without a value passed)" if unscored else ")"))
    k4 = k3 & filters.keep_tag_density(n_general, cfg.min_general_tags)
    table.add("4 tag density", k3, k4, note=f">= {cfg.min_general_tags} general tags")

    rows4 = np.flatnonzero(k4)
    pixels = img.width.astype(np.int64) * img.height.astype(np.int64)
    dd = dedup.duplicate_clusters(img.phash[rows4], pixels[rows4], score[rows4], ids[rows4],
                                  cfg.phash_distance - 1, cfg.phash_blocks, cfg.workers)
    k5 = np.zeros(len(cols), bool)
    k5[rows4[dd.keep]] = True
    table.add("5 near-duplicates", k4, k5, note=f"pHash distance < {cfg.phash_distance}: {dd.n_pairs:,} pairs, "
              f"{dd.n_identical:,} identical, {sum(dd.size_histogram.values()):,} clusters")

    kept = np.flatnonzero(k5)
    quality = labels.quality_tiers(score_tag[kept], tier_starts)
    tag_lists = [cols.tags[i].split() for i in kept]
    style = labels.style_labels(tag_lists, clusters, cfg.min_style_matches)
    vocab = TagVocab.build(tag_lists, cfg.vocab_min_count)
    tag_ids = [vocab.encode(t, cfg.max_tags) for t in tag_lists]
    split = split_of(ids[kept], cfg.eval_fraction)

    manifest = {
        "id": ids[kept], "md5": [img.md5[i] for i in kept], "path": [img.path[i] for i in kept],
        "width": img.width[kept], "height": img.height[kept], "score": score[kept].astype(np.int32),
        "year": year[kept], "score_tag": score_tag[kept], "quality": quality, "style": style,
        "aesthetic": aesthetic[kept], "phash": img.phash[kept], "tags": [cols.tags[i] for i in kept],
        "tag_ids": tag_ids, "split": split,
    }
    _write_manifest(out / "manifest.parquet", manifest)
    vocab.save(out / "vocab.json")

    tiers = [{"tier": q, "name": labels.QUALITY_NAMES[q],
              "score_tags": _span(tier_starts[q], (tier_starts[q + 1] - 1) if q + 1 < len(tier_starts) else 9),
              "count": int((quality == q).sum()), "pct": round(100.0 * (quality == q).mean(), 2) if kept.size else 0.0}
             for q in range(len(labels.QUALITY_NAMES) - 1, -1, -1)]
    n_labeled = int((style >= 0).sum())
    styles = [{"style": -1, "name": "unlabeled", "count": int((style < 0).sum()), "pct_of_labeled": None}]
    styles += [{"style": c.id, "name": c.name, "count": int((style == c.id).sum()),
                "pct_of_labeled": round(100.0 * (style == c.id).sum() / n_labeled, 2) if n_labeled else 0.0}
               for c in clusters]
    report = {
        "posts": str(posts), "images": str(images), "records": n_records, "posts_parsed": len(cols),
        "usable": int(valid.sum()), "kept": int(kept.size), "bad_input": dict(sorted(bad.items())),
        "ratings": dict(sorted(ratings.items())),
        "rating_schema": "current (g/s/q/e)" if ratings.get("g") else "old (s/q/e) or no general posts",
        "stages": table.as_list(), "aesthetic_source": aesthetic_source,
        "dedup": {"pairs": dd.n_pairs, "identical": dd.n_identical, "cluster_sizes": dd.size_histogram,
                  "removed": int(k4.sum() - k5.sum())},
        "tiers": tiers, "styles": styles, "vocab_size": len(vocab),
        "splits": {"train": int((split == "train").sum()), "eval": int((split == "eval").sum())},
        "images_decoded": img.decoded, "phash_cache_hits": img.cache_hits,
        "config": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__}, "seconds": round(time.time() - t0, 2),
    }
    atomic_write_json(out / "stages.json", table.as_list())
    atomic_write_json(out / "tiers.json", tiers)
    atomic_write_json(out / "styles.json", styles)
    atomic_write_json(out / "report.json", report)

    log("")
    log(table.format())
    log("")
    log(filters.format_counts("quality tier", [(f"QE-{t['tier']} ({t['name']}) {t['score_tags']}", t["count"]) for t in tiers]))
    log("")
    log(filters.format_counts("style", [(s["name"], s["count"]) for s in styles[1:]], total=n_labeled)
        + f"\n{'unlabeled':<26} {styles[0]['count']:>10,}")
    log("")
    log("bad input (skipped): " + (", ".join(f"{k} {v:,}" for k, v in sorted(bad.items())) or "none"))
    log(f"duplicate clusters by size: {dd.size_histogram}")
    log(f"vocabulary: {len(vocab):,} tokens (min count {cfg.vocab_min_count}); "
        f"split: {report['splits']['train']:,} train / {report['splits']['eval']:,} eval")
    log(f"wrote {out / 'manifest.parquet'} ({kept.size:,} rows) in {report['seconds']} s")
    if kept.size == 0:
        log("WARNING: no post survived the filters; see the stage table for the stage that removed them all")
    return report


def _span(lo: int, hi: int) -> str:
    return str(lo) if lo == hi else f"{lo}-{hi}"


def _aesthetic_stage(cfg: DataConfig, valid: np.ndarray, k2: np.ndarray, aesthetic: np.ndarray, paths: list,
                     log) -> tuple[str, np.ndarray]:
    """(source, keep mask): the LAION predictor when weights are given, else the column, else SKIPPED."""
    if cfg.aesthetic_weights:
        rows = np.flatnonzero(k2)
        log(f"aesthetic: scoring {rows.size:,} images with the LAION predictor ({cfg.aesthetic_clip_model})")
        aesthetic[rows] = filters.laion_aesthetic_scores([paths[i] for i in rows], cfg.aesthetic_weights,
                                                         cfg.aesthetic_clip_model, cfg.aesthetic_clip_pretrained)
        return "LAION predictor", k2 & filters.keep_aesthetic(aesthetic, cfg.min_aesthetic)
    if np.isfinite(aesthetic[valid]).any():
        return "precomputed column", k2 & filters.keep_aesthetic(aesthetic, cfg.min_aesthetic)
    return filters.SKIPPED, k2.copy()


def _write_manifest(path: Path, m: dict) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    table = pa.table({
        "id": pa.array(m["id"], pa.int64()), "md5": pa.array(m["md5"], pa.string()),
        "path": pa.array(m["path"], pa.string()), "width": pa.array(m["width"], pa.int32()),
        "height": pa.array(m["height"], pa.int32()), "score": pa.array(m["score"], pa.int32()),
        "year": pa.array(m["year"], pa.int16()), "score_tag": pa.array(m["score_tag"], pa.int8()),
        "quality": pa.array(m["quality"], pa.int8()), "style": pa.array(m["style"], pa.int8()),
        "aesthetic": pa.array(m["aesthetic"], pa.float32()), "phash": pa.array(m["phash"], pa.uint64()),
        "tags": pa.array(m["tags"], pa.string()), "tag_ids": pa.array(m["tag_ids"], pa.list_(pa.int32())),
        "split": pa.array(m["split"].tolist(), pa.string()),
    })
    atomic_write(path, lambda tmp: pq.write_table(table, tmp))


# ----------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    from vampdiffusion.cli import add_config_arguments
    parser.add_argument("--posts", required=True, help="posts file: JSON lines / JSON array / parquet, optionally .gz / .zst")
    parser.add_argument("--images", required=True, help="image folder: original/0NNN/<id>.<ext> tree or data-0NNN.tar shards")
    parser.add_argument("--out", required=True, help="output folder (manifest.parquet, vocab.json, tables, report)")
    add_config_arguments(parser)


def main(args: argparse.Namespace) -> int:
    from vampdiffusion.cli import config_from_args
    cfg = config_from_args(args)
    try:
        prepare(cfg.data, args.posts, args.images, args.out)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"vamp data prepare: {e}", file=sys.stderr)
        return 2
    return 0
