"""Posts -> columns: every parsed post of one or more posts files, kept as the manifest's columns (memory:
nothing per record beyond them). A record that cannot be used is counted in `bad` under its reason and skipped.

Several files (Danbooru2023 and Danbooru2024 metadata, say) are read in the order given. An id seen twice
in one file keeps its first record (the rest count as duplicate_id); an id that a later file holds again is
taken from the later file (the newer dump: its score, tags and md5), counted in `PostColumns.replaced`.
"""

from __future__ import annotations

import sys
from array import array
from collections import Counter
from dataclasses import dataclass, field

from vampdiffusion.data.danbooru import read_posts


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
    has_score: array = field(default_factory=lambda: array("b"))   # 0: the post has no score (a captioned image)
    source: array = field(default_factory=lambda: array("h"))      # which posts file the row came from
    replaced: int = 0                                              # rows a later posts file replaced

    def __len__(self) -> int:
        return len(self.id)

    def append(self, p, source: int) -> None:
        self.id.append(p.id)
        for name in ("md5", "ext", "width", "height", "score", "year", "aesthetic", "n_general", "tags"):
            getattr(self, name).append(_value(p, name))
        self.has_score.append(int(p.has_score))
        self.source.append(source)

    def replace(self, row: int, p, source: int) -> None:
        for name in ("md5", "ext", "width", "height", "score", "year", "aesthetic", "n_general", "tags"):
            getattr(self, name)[row] = _value(p, name)
        self.has_score[row] = int(p.has_score)
        self.source[row] = source


def _value(p, name: str):
    """The column value of a parsed Post (clamped into the column's type)."""
    if name == "ext":
        return sys.intern(p.file_ext)
    if name == "tags":
        return " ".join(p.tags)
    if name == "year":
        return max(-32768, min(p.year, 32767))
    if name in ("width", "height", "n_general"):
        return min(getattr(p, name), 2**31 - 1)
    return getattr(p, name)


def post_stream(source, bad: Counter, notes: list[str]):
    """The posts of one source: a posts file, or anything with a `posts(bad)` method (a captioned folder)."""
    return source.posts(bad) if hasattr(source, "posts") else read_posts(source, bad, notes)


def ingest_posts(sources, bad: Counter, ratings: Counter, notes: list[str] | None = None) -> PostColumns:
    """Stream the posts of every source (posts files, captioned folders) into columns; skipped records are
    counted in `bad` by reason, how each file was read goes to `notes`."""
    cols = PostColumns()
    notes = [] if notes is None else notes
    row_of: dict[int, int] = {}
    for source, src in enumerate(sources if isinstance(sources, (list, tuple)) else [sources]):
        seen_here: set[int] = set()
        for p in post_stream(src, bad, notes):
            if p.id in seen_here:
                bad["duplicate_id"] += 1
                continue
            seen_here.add(p.id)
            if p.id in row_of:
                cols.replaced += 1
                cols.replace(row_of[p.id], p, source)
            else:
                ratings[p.rating] += 1
                row_of[p.id] = len(cols)
                cols.append(p, source)
    return cols
