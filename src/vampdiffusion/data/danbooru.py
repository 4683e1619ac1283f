"""Danbooru post records: JSON lines, a JSON array or parquet, optionally gzip- or zstd-compressed.

Streaming: records are read one at a time, parsed into a small `Post`, and never held as a whole.
Bad input never stops a run: every record that cannot be used is counted under its reason and skipped.
Both rating schemes are read: current g/s/q/e (general, sensitive, questionable, explicit) and the
pre-2022 s/q/e (safe, questionable, explicit). Older dumps (Danbooru2021) that carry `tags` as a list
of {name, category} objects, ids and scores as strings, or `created_at` as epoch seconds are read too.
"""

from __future__ import annotations

import gzip
import io
import json
import math
import re
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Iterator, TextIO

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
PARQUET_MAGIC = b"PAR1"
CHUNK_CHARS = 1 << 20            # JSON-array reader: characters read at a time
MAX_RECORD_CHARS = 64 << 20      # JSON-array reader: a single record larger than this is malformed
PARQUET_BATCH_ROWS = 65536

# the SPEC §1 fields read from a record (all others are ignored)
POST_FIELDS = ("id", "md5", "file_ext", "image_width", "image_height", "score", "up_score", "down_score",
               "fav_count", "rating", "created_at", "tag_string", "tag_string_general", "tag_string_character",
               "tag_string_copyright", "tag_string_artist", "tag_string_meta", "is_deleted", "is_banned",
               "parent_id", "aesthetic", "tags")
TAG_CATEGORIES = ("general", "character", "copyright", "artist", "meta")
CATEGORY_KEYS = tuple(f"tag_string_{c}" for c in TAG_CATEGORIES)
# Danbooru category numbers (Danbooru2021 `tags: [{name, category}]`)
CATEGORY_NUMBERS = {"0": "general", "1": "artist", "3": "copyright", "4": "character", "5": "meta"}
# rating words of both schemes -> letter (old "safe" and new "sensitive" share the letter s)
RATING_WORDS = {"general": "g", "safe": "s", "sensitive": "s", "questionable": "q", "explicit": "e"}
_YEAR = re.compile(r"\s*(\d{4})-")
_MD5 = re.compile(r"[0-9a-f]{32}")
INT64_MAX = (1 << 63) - 1


@dataclass
class Post:
    id: int
    md5: str                 # lower-case hex, "" when absent (the file's md5 is used then)
    file_ext: str            # "jpg", "png", ... ("" when absent)
    width: int               # metadata size, 0 when absent
    height: int
    score: int
    year: int
    rating: str              # g / s / q / e, "?" when absent or unknown
    tags: list[str] = field(default_factory=list)        # all five categories
    n_general: int = 0       # number of general tags
    aesthetic: float = math.nan                          # precomputed aesthetic column, NaN when absent
    parent_id: int = -1


# ----------------------------------------------------------------------------
# Field coercion (values come as int, float, str or garbage)
# ----------------------------------------------------------------------------

def _int(v: Any) -> int | None:
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, int):
        return v if -INT64_MAX <= v <= INT64_MAX else None
    if isinstance(v, float):
        return int(v) if math.isfinite(v) and v == int(v) and abs(v) <= INT64_MAX else None
    if isinstance(v, str):
        s = v.strip()
        if s.lstrip("-").isdigit() and len(s) < 19:
            return int(s)
    return None


def _float(v: Any) -> float:
    if isinstance(v, bool) or v is None:
        return math.nan
    if isinstance(v, (int, float)):
        f = float(v)
        return f if math.isfinite(f) else math.nan
    if isinstance(v, str):
        try:
            f = float(v)
        except ValueError:
            return math.nan
        return f if math.isfinite(f) else math.nan
    return math.nan


def _truthy(v: Any) -> bool:
    if isinstance(v, str):
        return v.strip().lower() in ("true", "t", "1", "yes")
    return bool(v) if isinstance(v, (bool, int, float)) else False


def _year(v: Any) -> int | None:
    if isinstance(v, str):
        m = _YEAR.match(v)
        return int(m.group(1)) if m else None
    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and 0 <= v < 1e11:
        return time.gmtime(int(v)).tm_year  # epoch seconds
    return None


def _split(v: Any) -> list[str]:
    return v.lower().split() if isinstance(v, str) else []


def _rating(v: Any) -> str:
    if not isinstance(v, str):
        return "?"
    s = v.strip().lower()
    if s in ("g", "s", "q", "e"):
        return s
    return RATING_WORDS.get(s, "?")


def _tags(rec: dict) -> tuple[list[str], int] | None:
    """(all tags, number of general tags); None when the record carries no tag field at all."""
    if any(k in rec for k in CATEGORY_KEYS):
        # a Danbooru tag has exactly one category: the category strings partition tag_string
        general = _split(rec.get(CATEGORY_KEYS[0]))
        tags = general + [t for k in CATEGORY_KEYS[1:] for t in _split(rec.get(k))]
        return tags, len(general)
    raw = rec.get("tags")
    if isinstance(raw, list):  # Danbooru2021: [{"name": ..., "category": "0"}]
        tags, n_general = [], 0
        for t in raw:
            if isinstance(t, dict) and isinstance(t.get("name"), str):
                name = t["name"].lower()
                tags.append(name)
                n_general += CATEGORY_NUMBERS.get(str(t.get("category")), "general") == "general"
        return list(dict.fromkeys(tags)), n_general
    if "tag_string" in rec or isinstance(raw, str):
        # categories unknown: every tag counts as general (documented in docs/data.md)
        tags = list(dict.fromkeys(_split(rec.get("tag_string", raw))))
        return tags, len(tags)
    return None


def parse_post(rec: Any) -> Post | str:
    """A Post, or the reason the record is skipped."""
    if not isinstance(rec, dict):
        return "not_an_object"
    pid = _int(rec.get("id"))
    if pid is None:
        return "missing_id" if rec.get("id") is None else "bad_id"
    if pid <= 0:
        return "bad_id"
    if _truthy(rec.get("is_deleted")):
        return "deleted"
    if _truthy(rec.get("is_banned")):
        return "banned"
    score = _int(rec.get("score"))
    if score is None:
        up, down = _int(rec.get("up_score")), _int(rec.get("down_score"))
        if up is None or down is None:
            return "missing_score"
        score = up - abs(down)
    year = _year(rec.get("created_at"))
    if year is None:
        return "missing_created_at"
    tags = _tags(rec)
    md5 = rec.get("md5")
    md5 = md5.lower() if isinstance(md5, str) and _MD5.fullmatch(md5.lower()) else ""
    ext = rec.get("file_ext")
    ext = ext.lower().lstrip(".") if isinstance(ext, str) and 0 < len(ext) <= 5 else ""
    w, h = _int(rec.get("image_width")), _int(rec.get("image_height"))
    parent = _int(rec.get("parent_id"))
    return Post(
        id=pid, md5=md5, file_ext=ext, width=max(w or 0, 0), height=max(h or 0, 0), score=score, year=year,
        rating=_rating(rec.get("rating")), tags=tags[0] if tags else [], n_general=tags[1] if tags else 0,
        aesthetic=_float(rec.get("aesthetic")), parent_id=parent if parent is not None else -1,
    )


# ----------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------

def _open_binary(path: Path) -> BinaryIO:
    """The decompressed byte stream of a posts file (gzip / zstd detected from the magic bytes)."""
    f = open(path, "rb")
    magic = f.read(4)
    f.seek(0)
    if magic[:2] == GZIP_MAGIC:
        return gzip.GzipFile(fileobj=f)  # type: ignore[return-value]
    if magic == ZSTD_MAGIC:
        import zstandard
        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(f, closefd=True))  # type: ignore[arg-type]
    return f


def _iter_json_lines(text: TextIO, bad: Counter) -> Iterator[Any]:
    for line in text:
        line = line.strip()
        if not line:
            continue
        try:
            yield json.loads(line)
        except (ValueError, RecursionError):
            bad["malformed_json"] += 1


def _iter_json_array(text: TextIO, bad: Counter) -> Iterator[Any]:
    """Elements of a top-level JSON array, decoded one at a time from a stream."""
    dec = json.JSONDecoder()
    buf, pos, eof = text.read(CHUNK_CHARS), 0, False
    pos = buf.index("[") + 1
    while True:
        while True:  # skip separators, refilling the buffer as needed
            while pos < len(buf) and buf[pos] in " \t\r\n,":
                pos += 1
            if pos < len(buf) or eof:
                break
            more = text.read(CHUNK_CHARS)
            buf, pos, eof = buf[pos:] + more, 0, not more
        if pos >= len(buf) or buf[pos] == "]":
            return
        try:
            obj, end = dec.raw_decode(buf, pos)
        except (ValueError, RecursionError):
            if not eof and len(buf) - pos < MAX_RECORD_CHARS:  # perhaps only cut by the chunk boundary
                more = text.read(CHUNK_CHARS)
                buf, pos, eof = buf[pos:] + more, 0, not more
                continue
            bad["malformed_json"] += 1
            nxt = buf.find("{", pos + 1)  # resynchronise at the next object
            if nxt < 0:
                return
            pos = nxt
            continue
        yield obj
        pos = end
        if pos > CHUNK_CHARS:
            buf, pos = buf[pos:], 0


def _iter_parquet(path: Path, bad: Counter) -> Iterator[Any]:
    import pyarrow.parquet as pq
    pf = pq.ParquetFile(path)
    columns = [c for c in POST_FIELDS if c in pf.schema_arrow.names]
    for batch in pf.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=columns):
        yield from batch.to_pylist()


def iter_records(path: str | Path, bad: Counter) -> Iterator[Any]:
    """Raw decoded records (whatever JSON values they are) from a posts file of any supported format."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"posts file {path} not found; pass --posts FILE (JSON lines / JSON array / parquet, .gz / .zst)")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic == PARQUET_MAGIC:
        try:
            yield from _iter_parquet(path, bad)
        except Exception as e:  # pyarrow's many error types: a damaged file ends the read, counted
            bad["corrupt_posts_file"] += 1
            warnings.warn(f"{path}: unreadable parquet data ({e}); records before it were read")
        return
    try:
        with _open_binary(path) as raw:
            text = io.TextIOWrapper(raw, encoding="utf-8", errors="replace", newline="")
            head = text.read(4096)
            chained = _Chain(io.StringIO(head), text)
            if head.lstrip()[:1] == "[":
                yield from _iter_json_array(chained, bad)
            else:
                yield from _iter_json_lines(chained, bad)
    except (EOFError, OSError) as e:  # truncated or corrupt gzip / zstd stream: keep what was read
        bad["corrupt_posts_file"] += 1
        warnings.warn(f"{path}: the compressed stream ends early or is corrupt ({e}); records before it were read")
    except Exception as e:
        if type(e).__name__ != "ZstdError":
            raise
        bad["corrupt_posts_file"] += 1
        warnings.warn(f"{path}: corrupt zstd stream ({e}); records before it were read")


class _Chain(io.TextIOBase):
    """Text stream that yields the already-peeked head, then the rest of the file."""

    def __init__(self, head: io.StringIO, tail: TextIO):
        self.head, self.tail = head, tail

    def read(self, n: int = -1) -> str:
        s = self.head.read(n)
        if n < 0:
            return s + self.tail.read()
        return s + self.tail.read(n - len(s)) if len(s) < n else s

    def __iter__(self):  # lines
        for line in self.head:
            if not line.endswith("\n"):
                line += self.tail.readline()
            yield line
        yield from self.tail


def read_posts(path: str | Path, bad: Counter) -> Iterator[Post]:
    """Parsed posts; every skipped record is counted in `bad` under its reason."""
    for rec in iter_records(path, bad):
        p = parse_post(rec)
        if isinstance(p, str):
            bad[p] += 1
        else:
            yield p


__all__ = ["POST_FIELDS", "Post", "iter_records", "parse_post", "read_posts"]
