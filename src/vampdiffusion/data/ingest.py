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
from pathlib import Path

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
    source: array = field(default_factory=lambda: array("h"))      # which posts file the row came from
    replaced: int = 0                                              # rows a later posts file replaced

    def __len__(self) -> int:
        return len(self.id)

    def append(self, p, source: int) -> None:
        self.id.append(p.id)
        for name in ("md5", "ext", "width", "height", "score", "year", "aesthetic", "n_general", "tags"):
            getattr(self, name).append(_value(p, name))
        self.source.append(source)

    def replace(self, row: int, p, source: int) -> None:
        for name in ("md5", "ext", "width", "height", "score", "year", "aesthetic", "n_general", "tags"):
            getattr(self, name)[row] = _value(p, name)
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


def ingest_posts(paths: str | Path | list, bad: Counter, ratings: Counter) -> PostColumns:
    """Stream the posts files into columns; skipped records are counted in `bad` by reason."""
    cols = PostColumns()
    row_of: dict[int, int] = {}
    for source, path in enumerate(paths if isinstance(paths, (list, tuple)) else [paths]):
        seen_here: set[int] = set()
        for p in read_posts(path, bad):
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
