"""The data pipeline (docs/data.md) end to end: posts + images -> manifest.parquet, as a short composition of its steps.

  ingest     stream the posts file into columns (bad records counted by reason and skipped)   ingest.py
  images     locate and decode every post's image once, check its size, pHash it (cached)     images.py, image_scan.py
  score_tag  per-year deciles of the raw score over all usable posts                           labels.py
  stages     1 resolution, 2 score, 3 aesthetic, 4 tag density, 5 near-duplicates             filters.py, dedup.py
  labels     quality tier, style label; tag vocabulary; train / eval split                    labels.py, vocab.py
  outputs    manifest.parquet, vocab.json, stages.json, tiers.json, styles.json, report.json (a run that keeps
             nothing where an earlier prepare's manifest is writes its tables as <name>.failed.json)

A step that leaves nothing (no post parsed, no image decoded, no row through the stages) raises `EmptyResult`,
naming the likely cause and the fix; a stage that removes every row says so in the stage table too.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vampdiffusion.atomic import atomic_write, atomic_write_json
from vampdiffusion.config import Config, DataConfig
from vampdiffusion.data import dedup, filters, labels
from vampdiffusion.data.image_scan import ImageColumns, scan_images
from vampdiffusion.data.images import LAYOUTS, ImageSources, open_sources
from vampdiffusion.data.ingest import PostColumns, ingest_posts
from vampdiffusion.data.vocab import VOCAB_NAME, TagVocab


TABLES = ("stages", "tiers", "styles", "report")       # <name>.json, or <name>.failed.json (output_files)
FAILED_REPORT = "report.failed.json"
# the settings that decide each stage, for the message when one removes everything
STAGE_SETTINGS = {"1 resolution": "data.min_side and data.min_pixels", "2 score": "data.min_score_tag",
                  "3 aesthetic": "data.min_aesthetic", "4 tag density": "data.min_general_tags",
                  "5 near-duplicates": "data.phash_distance"}


class EmptyResult(ValueError):
    """A step of prepare left nothing to go on with; the message names the likely cause and the fix."""


@dataclass
class Filtered:
    """What the five stages leave: the kept rows, the stage table and what the stages measured on the way."""
    kept: np.ndarray            # row indices of the posts that passed every stage
    table: filters.StageTable
    score_tag: np.ndarray       # (N,) int8 per-year score decile (0 for unusable posts)
    aesthetic: np.ndarray       # (N,) float32, scored by the predictor when it ran
    aesthetic_source: str
    dedup: dedup.DedupResult
    removed_by_dedup: int


def names(paths: list[Path]) -> str:
    """Paths as a user typed them, comma-separated (not a Python list of PosixPath)."""
    return ", ".join(str(p) for p in paths)


def check_posts(cols: PostColumns, n_records: int, bad: Counter, posts) -> None:
    if len(cols) == 0:
        reasons = ", ".join(f"{k} {v:,}" for k, v in bad.most_common(3)) or "the file holds no record"
        raise EmptyResult(f"no post could be parsed from {names(posts)} ({n_records:,} records; {reasons}): --posts "
                          f"must be Danbooru posts as JSON lines, a JSON array or parquet (optionally .gz / .zst), or the "
                          f"metadata database's SQLite, with at least id, created_at and score (or up_score/down_score)")


def check_images(img: ImageColumns, bad: Counter, images, source) -> None:
    if not img.ok.any():
        reasons = ", ".join(f"{k} {v:,}" for k, v in bad.most_common(3))
        raise EmptyResult(f"no image of the posts could be used from {names(images)} ({reasons}), read as a "
                          f"{source.layout}: check that --images is the folder of these posts' images; the layouts read "
                          f"are: {'; '.join(LAYOUTS)}")


def check_kept(f: Filtered, log, files: dict[str, Path]) -> None:
    if f.kept.size:
        return
    emptied = next((r for r in f.table.rows if r.n_in and not r.n_out), None)
    where = (f"stage {emptied.stage} removed all {emptied.n_in:,} rows; loosen {STAGE_SETTINGS[emptied.stage]}"
             if emptied is not None and emptied.stage in STAGE_SETTINGS else "no row reached the stages")
    log(f"ERROR: no post survived the filters: {where}")
    kept = ("; the earlier prepare's manifest.parquet, vocab.json and report.json there are left as they were"
            if files["report"].name == FAILED_REPORT else "")
    raise EmptyResult(f"no post survived the filters: {where} (the stage table is in {files['stages'].name}, the "
                      f"report in {files['report']}{kept})")


def as_paths(p: str | Path | list) -> list[Path]:
    return [Path(x) for x in p] if isinstance(p, (list, tuple)) else [Path(p)]


def worker_count(cfg: DataConfig) -> int:
    """data.workers, where 0 means one per core."""
    return cfg.workers or os.cpu_count() or 1


def check_inputs(cfg: DataConfig, posts: list[Path], images: list[Path], captioned: list[Path]) -> None:
    if not posts and not captioned:
        raise ValueError("nothing to prepare: give --posts FILE with --images DIR, or --captioned DIR")
    if bool(posts) != bool(images):
        raise ValueError("--posts and --images go together (posts files and their images); a captioned folder is --captioned DIR")
    for path in captioned:
        if not path.is_dir():
            raise FileNotFoundError(f"captioned folder {path} not found; pass --captioned DIR (<name>.<ext> + <name>.txt)")
    for path in posts:
        if not path.is_file():
            state = "is a folder" if path.is_dir() else "not found"
            raise FileNotFoundError(f"posts file {path} {state}; pass --posts FILE (JSON lines / JSON array / parquet / "
                                    f"SQLite, .gz / .zst)")
    for path in images:
        if not path.is_dir():
            state = "is a file" if path.exists() else "not found"
            raise FileNotFoundError(f"image folder {path} {state}; pass --images DIR ({'; '.join(LAYOUTS)})")
    if cfg.aesthetic_weights and not Path(cfg.aesthetic_weights).is_file():
        raise FileNotFoundError(f"data.aesthetic_weights file {cfg.aesthetic_weights} not found "
                                "(sac+logos+ava1-l14-linearMSE.pth; set it to '' to use the aesthetic column or skip)")
    labels.load_style_clusters(cfg.style_clusters)  # a missing or malformed data.style_clusters file, before any image


# ----------------------------------------------------------------------------
# Stages
# ----------------------------------------------------------------------------

def aesthetic_stage(cfg: DataConfig, valid: np.ndarray, k2: np.ndarray, aesthetic: np.ndarray, refs: list,
                    log) -> tuple[str, np.ndarray]:
    """(source, keep mask): the LAION predictor when weights are given, else the column, else SKIPPED."""
    if cfg.aesthetic_weights:
        rows = np.flatnonzero(k2)
        log(f"aesthetic: scoring {rows.size:,} images with the LAION predictor ({cfg.aesthetic_clip_model})")
        aesthetic[rows] = filters.laion_aesthetic_scores([refs[i] for i in rows], cfg.aesthetic_weights,
                                                         cfg.aesthetic_clip_model, cfg.aesthetic_clip_pretrained)
        return "LAION predictor", k2 & filters.keep_aesthetic(aesthetic, cfg.min_aesthetic)
    if np.isfinite(aesthetic[valid]).any():
        return "precomputed column", k2 & filters.keep_aesthetic(aesthetic, cfg.min_aesthetic)
    return filters.SKIPPED, k2.copy()


def add_aesthetic_row(table: filters.StageTable, k2: np.ndarray, k3: np.ndarray, source: str, aesthetic: np.ndarray,
                      cfg: DataConfig, log) -> None:
    if source == filters.SKIPPED:
        table.add("3 aesthetic", k2, k3, status=filters.SKIPPED, note="SKIPPED: no aesthetic column and no data.aesthetic_weights")
        log("WARNING: stage 3 (aesthetic) SKIPPED: the posts have no aesthetic column and data.aesthetic_weights is ''")
        return
    unscored = int((k2 & np.isnan(aesthetic)).sum())
    table.add("3 aesthetic", k2, k3, note=f">= {cfg.min_aesthetic} ({source}"
              + (f"; {unscored:,} rows without a value passed)" if unscored else ")"))


def sources_note(post_names: list[str], cols: PostColumns, image_names: list[str], source) -> str:
    """How many posts each posts source and each image source supplied (for the ingest row of the stage table)."""
    if len(post_names) == 1 and len(image_names) == 1:
        return ""
    per_file = np.bincount(np.frombuffer(cols.source, np.int16), minlength=len(post_names))
    text = "; posts: " + ", ".join(f"{p} {n:,}" for p, n in zip(post_names, per_file))
    if cols.replaced:
        text += f" ({cols.replaced:,} replaced by a later file)"
    return text + "; images: " + ", ".join(f"{p} {n:,}" for p, n in zip(image_names, source.counts))


def stand_in_score_tags(score_tag: np.ndarray, rows: np.ndarray, aesthetic: np.ndarray, cfg: DataConfig) -> None:
    """Kept posts without a score get a score_tag for their tier and the phase-3 curation: from the rank of their
    aesthetic value among them (spread over min_score_tag..9), else the lowest score_tag of data.unscored_tier."""
    if rows.size:
        ranked = labels.aesthetic_score_tags(aesthetic[rows], cfg.min_score_tag)
        score_tag[rows] = np.where(ranked >= 0, ranked, cfg.quality_tier_starts[cfg.unscored_tier])


def add_score_row(table: filters.StageTable, k1: np.ndarray, k2: np.ndarray, scored: np.ndarray, cfg: DataConfig) -> None:
    """Stage 2's row: SKIPPED when no post has a score; posts without one pass and are counted."""
    if not (k1 & scored).any():
        table.add("2 score", k1, k2, status=filters.SKIPPED, note="SKIPPED: no post has a score (quality tiers from "
                  f"aesthetic ranks, else tier {cfg.unscored_tier})")
        return
    unscored = int((k1 & ~scored).sum())
    table.add("2 score", k1, k2, note=f"score_tag >= {cfg.min_score_tag}"
              + (f"; {unscored:,} posts without a score passed" if unscored else ""))


def filter_stages(cfg: DataConfig, cols: PostColumns, img: ImageColumns, n_records: int, bad: Counter, log,
                  note: str = "") -> Filtered:
    """score_tag over the usable posts, then stages 1-5, each a row of the stage table."""
    ids, score, year = (np.frombuffer(a, t) for a, t in ((cols.id, np.int64), (cols.score, np.int64), (cols.year, np.int16)))
    aesthetic = np.frombuffer(cols.aesthetic, np.float32).copy()
    valid = img.ok
    scored = np.frombuffer(cols.has_score, np.int8).astype(bool)
    score_tag = np.zeros(len(cols), np.int8)
    s = valid & scored
    score_tag[s] = labels.score_tags(score[s], year[s])  # deciles among all usable scored posts of the year
    table = filters.StageTable()
    table.rows.append(filters.StageRow("0 ingest", n_records, int(valid.sum()),
                                       note=f"bad input: {sum(bad.values()):,} (by reason in report.json){note}"))
    k1 = valid & filters.keep_resolution(img.width, img.height, cfg.min_side, cfg.min_pixels)
    table.add("1 resolution", valid, k1, note=f"min side {cfg.min_side}, min pixels {cfg.min_pixels:,}")
    k2 = k1 & (filters.keep_score(score_tag, cfg.min_score_tag) | ~scored)
    add_score_row(table, k1, k2, scored, cfg)
    source, k3 = aesthetic_stage(cfg, valid, k2, aesthetic, img.refs, log)
    add_aesthetic_row(table, k2, k3, source, aesthetic, cfg, log)
    k4 = k3 & filters.keep_tag_density(np.frombuffer(cols.n_general, np.int32), cfg.min_general_tags)
    table.add("4 tag density", k3, k4, note=f">= {cfg.min_general_tags} general tags")
    rows4 = np.flatnonzero(k4)
    pixels = img.width.astype(np.int64) * img.height.astype(np.int64)
    dd = dedup.duplicate_clusters(img.phash[rows4], pixels[rows4], score[rows4], ids[rows4],
                                  cfg.phash_distance - 1, cfg.phash_blocks, worker_count(cfg))
    k5 = np.zeros(len(cols), bool)
    k5[rows4[dd.keep]] = True
    table.add("5 near-duplicates", k4, k5, note=f"pHash distance < {cfg.phash_distance}: {dd.n_pairs:,} pairs, "
              f"{dd.n_identical:,} identical, {sum(dd.size_histogram.values()):,} clusters")
    for row in table.rows:
        if row.n_in and not row.n_out:
            row.note += " -- REMOVED EVERY ROW"
    kept = np.flatnonzero(k5)
    stand_in_score_tags(score_tag, kept[~scored[kept]], aesthetic, cfg)
    return Filtered(kept, table, score_tag, aesthetic, source, dd, int(k4.sum() - k5.sum()))


# ----------------------------------------------------------------------------
# Labels and outputs
# ----------------------------------------------------------------------------

def label_rows(cfg: Config, cols: PostColumns, img: ImageColumns, f: Filtered) -> tuple[dict, TagVocab]:
    """The manifest's columns for the kept rows (tier, style, tag ids, split) and the vocabulary."""
    kept, d = f.kept, cfg.data
    ids = np.frombuffer(cols.id, np.int64)
    tag_lists = [cols.tags[i].split() for i in kept]
    vocab = TagVocab.build(tag_lists, d.vocab_min_count)
    manifest = {
        "id": ids[kept], "md5": [img.md5[i] for i in kept], **ref_columns([img.refs[i] for i in kept]),
        "width": img.width[kept], "height": img.height[kept],
        "score": np.frombuffer(cols.score, np.int64)[kept].astype(np.int32),
        "year": np.frombuffer(cols.year, np.int16)[kept], "score_tag": f.score_tag[kept],
        "quality": labels.quality_tiers(f.score_tag[kept], d.quality_tier_starts),
        "style": labels.style_labels(tag_lists, labels.load_style_clusters(d.style_clusters), d.min_style_matches),
        "aesthetic": f.aesthetic[kept], "phash": img.phash[kept], "tags": [cols.tags[i] for i in kept],
        "tag_ids": [vocab.encode(t, cfg.model.max_tags) for t in tag_lists],
        "split": labels.split_of(ids[kept], d.eval_fraction),
    }
    return manifest, vocab


def ref_columns(refs: list) -> dict:
    """Where each kept image's bytes are, as manifest columns: path (the file), member, offset, size, sha256."""
    return {"path": [r.file for r in refs], "member": [r.member for r in refs], "offset": [r.offset for r in refs],
            "size": [r.size for r in refs], "sha256": [r.sha256 for r in refs]}


def _span(lo: int, hi: int) -> str:
    return str(lo) if lo == hi else f"{lo}-{hi}"


def tier_table(quality: np.ndarray, starts: list[int]) -> list[dict]:
    """The quality tiers (highest first): their score_tag span, count and share."""
    return [{"tier": q, "name": labels.QUALITY_NAMES[q],
             "score_tags": _span(starts[q], (starts[q + 1] - 1) if q + 1 < len(starts) else 9),
             "count": int((quality == q).sum()), "pct": round(100.0 * (quality == q).mean(), 2) if quality.size else 0.0}
            for q in range(len(labels.QUALITY_NAMES) - 1, -1, -1)]


def style_table(style: np.ndarray, clusters: list[labels.StyleCluster]) -> list[dict]:
    """Unlabeled first, then each style cluster: its count and share of the labeled rows."""
    n_labeled = int((style >= 0).sum())
    return ([{"style": -1, "name": "unlabeled", "count": int((style < 0).sum()), "pct_of_labeled": None}]
            + [{"style": c.id, "name": c.name, "count": int((style == c.id).sum()),
                "pct_of_labeled": round(100.0 * (style == c.id).sum() / n_labeled, 2) if n_labeled else 0.0}
               for c in clusters])


def output_files(out: Path, failed: bool) -> dict[str, Path]:
    """Where the tables and the report go: <name>.json, except for a run that kept nothing in a folder holding an
    earlier prepare's manifest, which writes <name>.failed.json beside that prepare's files and leaves them whole."""
    suffix = ".failed.json" if failed and (out / "manifest.parquet").exists() else ".json"
    return {name: out / f"{name}{suffix}" for name in TABLES}


def write_outputs(out: Path, files: dict[str, Path], tables: dict, manifest: dict, vocab: TagVocab) -> None:
    """The manifest and vocabulary first (for a run that kept rows), then the tables and the report; a run that
    writes <name>.json removes the <name>.failed.json of an earlier failed run."""
    if tables["report"]["kept"]:
        write_manifest(out / "manifest.parquet", manifest)
        vocab.save(out / VOCAB_NAME)
    for name, value in tables.items():
        atomic_write_json(files[name], value)
    if files["report"].name != FAILED_REPORT:
        for name in TABLES:
            (out / f"{name}.failed.json").unlink(missing_ok=True)


def write_manifest(path: Path, m: dict) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    types = {"id": pa.int64(), "md5": pa.string(), "path": pa.string(), "member": pa.string(), "offset": pa.int64(),
             "size": pa.int64(), "sha256": pa.string(), "width": pa.int32(), "height": pa.int32(),
             "score": pa.int32(), "year": pa.int16(), "score_tag": pa.int8(), "quality": pa.int8(), "style": pa.int8(),
             "aesthetic": pa.float32(), "phash": pa.uint64(), "tags": pa.string(), "tag_ids": pa.list_(pa.int32()),
             "split": pa.string()}
    table = pa.table({k: pa.array(m[k].tolist() if k == "split" else m[k], t) for k, t in types.items()})
    atomic_write(path, lambda tmp: pq.write_table(table, tmp))


def prepare_report(cfg: DataConfig, posts, images, n_records: int, cols: PostColumns, img: ImageColumns, f: Filtered,
                   manifest: dict, vocab: TagVocab, tiers: list, styles: list, bad: Counter, ratings: Counter) -> dict:
    split = manifest["split"]
    return {
        "posts": [str(p) for p in posts], "images": [str(p) for p in images], "records": n_records,
        "posts_parsed": len(cols), "posts_replaced_by_later_file": cols.replaced,
        "usable": int(img.ok.sum()), "kept": int(f.kept.size), "bad_input": dict(sorted(bad.items())),
        "ratings": dict(sorted(ratings.items())),
        "rating_schema": "current (g/s/q/e)" if ratings.get("g") else "old (s/q/e) or no general posts",
        "stages": f.table.as_list(), "aesthetic_source": f.aesthetic_source,
        "dedup": {"pairs": f.dedup.n_pairs, "identical": f.dedup.n_identical, "cluster_sizes": f.dedup.size_histogram,
                  "removed": f.removed_by_dedup},
        "tiers": tiers, "styles": styles, "vocab_size": len(vocab),
        "splits": {"train": int((split == "train").sum()), "eval": int((split == "eval").sum())},
        "images_decoded": img.decoded, "phash_cache_hits": img.cache_hits,
        "config": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
    }


def log_summary(report: dict, f: Filtered, cfg: DataConfig, log) -> None:
    tiers, styles = report["tiers"], report["styles"]
    n_labeled = sum(s["count"] for s in styles[1:])
    log("")
    log(f.table.format())
    log("")
    log(filters.format_counts("quality tier", [(f"QE-{t['tier']} ({t['name']}) {t['score_tags']}", t["count"]) for t in tiers]))
    log("")
    log(filters.format_counts("style", [(s["name"], s["count"]) for s in styles[1:]], total=n_labeled)
        + f"\n{'unlabeled':<26} {styles[0]['count']:>10,}")
    log("")
    log("bad input (skipped): " + (", ".join(f"{k} {v:,}" for k, v in report["bad_input"].items()) or "none"))
    log(f"duplicate clusters by size: {f.dedup.size_histogram}")
    log(f"vocabulary: {report['vocab_size']:,} tokens (min count {cfg.vocab_min_count}); "
        f"split: {report['splits']['train']:,} train / {report['splits']['eval']:,} eval")


# ----------------------------------------------------------------------------
# The pipeline
# ----------------------------------------------------------------------------

def prepare(cfg: Config, posts: str | Path | list, images: str | Path | list, out: str | Path,
            image_index: str | Path | None = None, captioned: list | tuple = (), log=print) -> dict:
    """Run the data pipeline (docs/data.md) end to end with cfg.data (and cfg.model.max_tags) on posts files with their image folders (tar
    indexes in `image_index` when they are not beside the tars) and captioned folders (each its own posts and
    images); write the outputs to `out`, return the report."""
    from vampdiffusion.data.captioned import CaptionedFolder
    d = cfg.data
    posts, images = as_paths(posts), as_paths(images)
    check_inputs(d, posts, images, as_paths(list(captioned)))
    folders = [CaptionedFolder(c) for c in captioned]
    t0 = time.time()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    bad, ratings = Counter(), Counter()
    notes: list[str] = []
    cols = ingest_posts(posts + folders, bad, ratings, notes)
    for line in notes:
        log(f"posts: {line}")
    n_records = len(cols) + sum(bad.values())
    log(f"ingest: {n_records:,} records, {len(cols):,} parsed posts ({time.time() - t0:.1f} s)")
    check_posts(cols, n_records, bad, posts)
    source = ImageSources(open_sources(images, image_index, cache_dir=out / "tar_headers").sources + folders)
    img = scan_images(cols, source, out, worker_count(d), bad)
    log(f"images: {img.decoded:,} decoded, {img.cache_hits:,} from the pHash cache ({time.time() - t0:.1f} s)")
    check_images(img, bad, images, source)
    if source.problems:
        log("image sources: " + ", ".join(f"{k} {v:,}" for k, v in sorted(source.problems.items())))
    captions = [f"{c.root.name} (captioned)" for c in folders]
    note = sources_note([p.name for p in posts] + captions, cols, [p.name for p in images] + captions, source)
    f = filter_stages(d, cols, img, n_records, bad, log, note)
    manifest, vocab = label_rows(cfg, cols, img, f)
    tiers = tier_table(manifest["quality"], d.quality_tier_starts)
    styles = style_table(manifest["style"], labels.load_style_clusters(d.style_clusters))
    report = prepare_report(d, posts, images, n_records, cols, img, f, manifest, vocab, tiers, styles, bad, ratings)
    report["posts_read_as"] = notes
    report["image_sources"] = {"layouts": [s.layout for s in source.sources], "posts_from_each": source.counts,
                               "problems": dict(sorted(source.problems.items())),
                               "problem_files": dict(sorted(source.problem_files.items()))}
    report["seconds"] = round(time.time() - t0, 2)
    files = output_files(out, failed=not f.kept.size)
    write_outputs(out, files, {"stages": f.table.as_list(), "tiers": tiers, "styles": styles, "report": report},
                  manifest, vocab)
    log_summary(report, f, d, log)
    check_kept(f, log, files)
    return report
