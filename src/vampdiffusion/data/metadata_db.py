"""The KBlueLeaf/danbooru2023-metadata-database (SQLite, the HakuBooru schema) read as Danbooru post records.

It numbers things its own way, not as Danbooru does:
  post.rating  0 general, 1 sensitive, 2 questionable, 3 explicit
  tag.type     0 general, 1 artist, 2 character, 3 copyright, 4 meta   (Danbooru: 0 general, 1 artist,
               3 copyright, 4 character, 5 meta)
A post's tags are the rows of `posttagrelation` (post_id, tag_id); databases without that table keep them in
the post's `tag_list_<category>` columns as `$<tag id in base 36>#…`. Each post is yielded as a dict in the
Danbooru API shape (`tag_string_general`, …, a rating letter), so the one record parser reads every source.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from pathlib import Path
from typing import Iterator

from vampdiffusion.data.danbooru import _int

SQLITE_MAGIC = b"SQLite format 3\x00"
RATINGS = ("g", "s", "q", "e")                                             # post.rating 0..3
TAG_TYPES = ("general", "artist", "character", "copyright", "meta")        # tag.type 0..4
POST_COLUMNS = ("id", "created_at", "md5", "parent_id", "is_deleted", "is_banned", "image_width", "image_height",
                "file_ext", "rating", "score", "up_score", "down_score", "fav_count")


def _tables(con: sqlite3.Connection) -> set[str]:
    return {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")}


def _columns(con: sqlite3.Connection, table: str) -> list[str]:
    return [r[1] for r in con.execute(f"PRAGMA table_info({table})")]


def _tag_table(con: sqlite3.Connection, skipped: Counter) -> dict[int, tuple[str, str]]:
    """tag id -> (name, category); an unknown type number reads as general. A row whose id is no integer or
    whose name is no text is counted in `skipped` (bad_tag_row) and left out."""
    out = {}
    for tid, name, kind in con.execute("SELECT id, name, type FROM tag"):
        tid = _int(tid)
        if tid is None or not isinstance(name, str):
            skipped["bad_tag_row"] += 1
            continue
        category = TAG_TYPES[kind] if isinstance(kind, int) and 0 <= kind < len(TAG_TYPES) else "general"
        out[tid] = (name, category)
    return out


def _tag_strings(tag_ids, tags: dict[int, tuple[str, str]]) -> dict[str, str]:
    """tag_string_<category> fields from a post's tag ids (ids not in the tag table are dropped)."""
    by_category: dict[str, list[str]] = {c: [] for c in TAG_TYPES}
    for t in tag_ids:
        if t in tags:
            name, category = tags[t]
            by_category[category].append(name)
    return {f"tag_string_{c}": " ".join(names) for c, names in by_category.items()}


def _base36_ids(value) -> list[int]:
    """`$1a#$2b#` -> [46, 83]; anything else -> []."""
    if not isinstance(value, str):
        return []
    out = []
    for part in value.strip("$#").split("#$"):
        try:
            out.append(int(part, 36))
        except ValueError:
            continue
    return out


def _record(row: dict, tag_ids, tags: dict[int, tuple[str, str]]) -> dict:
    rating = row.get("rating")
    rec = dict(row, rating=RATINGS[rating] if isinstance(rating, int) and 0 <= rating < 4 else None)
    return {**rec, **_tag_strings(tag_ids, tags)}


def _posts(con: sqlite3.Connection) -> Iterator[dict]:
    cols = [c for c in POST_COLUMNS if c in _columns(con, "post")]
    lists = [c for c in _columns(con, "post") if c.startswith("tag_list_")]
    for values in con.execute(f"SELECT {', '.join(cols + lists)} FROM post ORDER BY id"):
        yield dict(zip(cols + lists, values))


def _relations(con: sqlite3.Connection, skipped: Counter) -> Iterator[tuple[int, list[int]]]:
    """(post id, its tag ids) in post-id order, from posttagrelation; a row whose post id is no integer is
    counted in `skipped` (bad_relation_row) and left out."""
    current, ids = None, []
    for post_id, tag_id in con.execute("SELECT post_id, tag_id FROM posttagrelation ORDER BY post_id"):
        if not _is_int(post_id):  # SQLite orders NULL and text apart from the integers
            skipped["bad_relation_row"] += 1
            continue
        if post_id != current:
            if current is not None:
                yield current, ids
            current, ids = post_id, []
        ids.append(tag_id)
    if current is not None:
        yield current, ids


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _with_relations(con: sqlite3.Connection, tags: dict[int, tuple[str, str]], skipped: Counter) -> Iterator[dict]:
    """The posts merged with their posttagrelation rows (both in post-id order). A post whose id is no integer
    gets no tags; the record parser counts it (missing_id, bad_id)."""
    relations = _relations(con, skipped)
    pending = next(relations, None)
    for row in _posts(con):
        pid = row["id"] if _is_int(row["id"]) else None
        while pid is not None and pending is not None and pending[0] < pid:
            pending = next(relations, None)             # tags of a post the post table lacks
        ids = pending[1] if pid is not None and pending is not None and pending[0] == pid else []
        yield _record({k: v for k, v in row.items() if not k.startswith("tag_list_")}, ids, tags)


def _say_skipped(path: str | Path, skipped: Counter, notes: list[str]) -> None:
    if skipped:
        notes.append(f"{Path(path).name}: skipped " + ", ".join(f"{k} {v:,}" for k, v in sorted(skipped.items()))
                     + " (an id that is no integer, or a tag without a name); the posts keep their other tags")


def iter_db_records(path: str | Path, bad: Counter, notes: list[str] | None = None) -> Iterator[dict]:
    """Every post of the database as a Danbooru-shaped record, in id order. Damaged rows of the tag tables are
    counted by reason in one line of `notes` (they are no post records: `bad` counts the posts)."""
    con = sqlite3.connect(f"file:{Path(path).resolve()}?mode=ro", uri=True)
    skipped: Counter = Counter()
    try:
        if not {"post", "tag"} <= _tables(con):
            raise ValueError(f"{path} is an SQLite file without the metadata database's post and tag tables")
        tags = _tag_table(con, skipped)
        if "posttagrelation" in _tables(con):
            yield from _with_relations(con, tags, skipped)
        else:
            for row in _posts(con):
                ids = [t for k, v in row.items() if k.startswith("tag_list_") and k != "tag_list" for t in _base36_ids(v)]
                yield _record({k: v for k, v in row.items() if not k.startswith("tag_list")}, ids, tags)
    except sqlite3.DatabaseError as e:  # a damaged file ends the read, counted
        bad["corrupt_posts_file"] += 1
        import warnings
        warnings.warn(f"{path}: unreadable SQLite data ({e}); records before it were read")
    finally:
        con.close()
        _say_skipped(path, skipped, [] if notes is None else notes)


__all__ = ["RATINGS", "SQLITE_MAGIC", "TAG_TYPES", "iter_db_records"]
