"""Danbooru post records -> `Post`: the fields the pipeline reads (docs/data.md), coerced from whatever a dump holds.

Bad input never stops a run: every record that cannot be used is counted under its reason and skipped.
Both rating schemes are read: current g/s/q/e (general, sensitive, questionable, explicit) and the
pre-2022 s/q/e (safe, questionable, explicit). Older dumps (Danbooru2021) that carry `tags` as a list
of {name, category} objects, ids and scores as strings, or `created_at` as epoch seconds are read too.

Numbers given as strings must be written with ASCII digits: "١٢٣" or fullwidth "１２３" is counted as bad_id
(or missing_score, or an absent aesthetic) rather than read as 123, because Danbooru never writes them and a
string of other scripts' digits is damage or spoofing, not an id to look images up by. Integers outside
int64 are bad the same way; a number too large for a float (JSON allows 400 digits) is an absent aesthetic.
The files the records come from (formats, compression, damage) are read by post_files.py.
"""

from __future__ import annotations

import datetime
import math
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

# the fields read from a record (docs/data.md) (all others are ignored)
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
_YEAR = re.compile(r"\s*([0-9]{4})-")
_INT_STRING = re.compile(r"[+-]?[0-9]{1,19}")
_FLOAT_STRING = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
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
    has_score: bool = True   # False: the source has no score at all (a captioned image); score is then 0


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
    if isinstance(v, str) and _INT_STRING.fullmatch(v.strip()):
        return _int(int(v))
    return None


def _float(v: Any) -> float:
    if isinstance(v, bool) or v is None:
        return math.nan
    if not isinstance(v, (int, float, str)) or (isinstance(v, str) and not _FLOAT_STRING.fullmatch(v.strip())):
        return math.nan
    try:
        f = float(v)
    except (ValueError, OverflowError):  # OverflowError: an int of hundreds of digits
        return math.nan
    return f if math.isfinite(f) else math.nan


def _truthy(v: Any) -> bool:
    if isinstance(v, str):
        return v.strip().lower() in ("true", "t", "1", "yes")
    return bool(v) if isinstance(v, (bool, int, float)) else False


def _year(v: Any) -> int | None:
    if isinstance(v, str):
        m = _YEAR.match(v)
        return int(m.group(1)) if m else None
    if isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1e11:  # false for NaN and huge ints
        return time.gmtime(int(v)).tm_year  # epoch seconds
    if isinstance(v, datetime.date):  # a parquet date column (datetime is a date too)
        return v.year
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
        if abs(score) > INT64_MAX:
            return "missing_score"
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


def read_posts(path: str | Path, bad: Counter, notes: list[str] | None = None) -> Iterator[Post]:
    """Parsed posts of a posts file; every skipped record is counted in `bad` under its reason, and how the file
    was read (a column mapping, say) is appended to `notes`."""
    from vampdiffusion.data.post_files import iter_records
    for rec in iter_records(path, bad, notes):
        p = parse_post(rec)
        if isinstance(p, str):
            bad[p] += 1
        else:
            yield p


__all__ = ["POST_FIELDS", "Post", "parse_post", "read_posts"]
