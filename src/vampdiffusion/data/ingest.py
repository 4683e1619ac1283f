"""Posts -> columns: every parsed post of a posts file, kept as the manifest's columns (memory: nothing per
record beyond them). A record that cannot be used is counted in `bad` under its reason and skipped."""

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
