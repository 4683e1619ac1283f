"""Labels: score_tag (per-year score deciles), quality tiers, style labels from the cluster tag sets."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Iterable

import numpy as np
import yaml

from vampdiffusion.config import read_yaml

QUALITY_NAMES = ("Draft", "Standard", "High", "Ultra")  # tiers 0..3


# ----------------------------------------------------------------------------
# score_tag and quality tier
# ----------------------------------------------------------------------------


def score_tags(score: np.ndarray, year: np.ndarray) -> np.ndarray:
    """(N,) int8 in 0..9: the decile of each raw score among the posts of its upload year.

    Mid-rank percentile (ties share a rank): pct = (#less + #equal / 2) / n_year; score_tag = floor(10 pct)."""
    score = np.asarray(score, np.int64)
    year = np.asarray(year)
    out = np.zeros(score.size, np.int8)
    for y in np.unique(year):
        m = year == y
        s = score[m]
        srt = np.sort(s)
        less = np.searchsorted(srt, s, side="left")
        equal = np.searchsorted(srt, s, side="right") - less
        pct = (less + 0.5 * equal) / s.size
        out[m] = np.minimum(np.floor(10 * pct), 9).astype(np.int8)
    return out


def aesthetic_score_tags(aesthetic: np.ndarray, low: int) -> np.ndarray:
    """(N,) int8 stand-in score_tags for posts without a score: the rank of each aesthetic value among the
    given ones, spread evenly over low..9 (the score_tags stage 2 keeps); NaN -> -1 (no value)."""
    a = np.asarray(aesthetic, np.float64)
    out = np.full(a.size, -1, np.int8)
    finite = np.isfinite(a)
    if finite.any():
        srt = np.sort(a[finite])
        pct = (np.searchsorted(srt, a[finite], side="left") + 0.5 * (np.searchsorted(srt, a[finite], side="right")
               - np.searchsorted(srt, a[finite], side="left"))) / finite.sum()
        out[finite] = np.minimum(low + np.floor((10 - low) * pct), 9).astype(np.int8)
    return out


def quality_tiers(score_tag: np.ndarray, starts: list[int]) -> np.ndarray:
    """(N,) int8: 8-9 -> 3 (Ultra), 6-7 -> 2 (High), 4-5 -> 1 (Standard), 3 -> 0 (Draft), below -> -1."""
    return (np.searchsorted(np.asarray(starts), np.asarray(score_tag), side="right") - 1).astype(np.int8)


# ----------------------------------------------------------------------------
# Style clusters
# ----------------------------------------------------------------------------


@dataclass
class StyleCluster:
    id: int
    name: str
    tags: frozenset[str]


def load_style_clusters(path: str | Path = "") -> list[StyleCluster]:
    """The cluster tag sets: `path`, or the style_clusters.yaml shipped in the package when path is ''."""
    if path:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"style cluster file {p} not found (data.style_clusters); '' uses the packaged one")
        d = read_yaml(p, "style cluster file", "fix the file (data.style_clusters; clusters: [{id: 0, name: ..., "
                      "tags: [...]}, ...]), or set data.style_clusters to '' for the packaged one") or {}
    else:
        d = yaml.safe_load(resources.files("vampdiffusion.data").joinpath("style_clusters.yaml").read_text()) or {}
    items = d.get("clusters") if isinstance(d, dict) else None
    if not isinstance(items, list) or not items:
        raise ValueError(f"{path or 'style_clusters.yaml'}: expected 'clusters:' with a list of {{id, name, tags}}")
    clusters = []
    for k, c in enumerate(items):
        if not isinstance(c, dict) or c.get("id") != k or not isinstance(c.get("tags"), list):
            raise ValueError(f"{path or 'style_clusters.yaml'}: cluster {k} must be {{id: {k}, name: ..., tags: [...]}} in id order")
        clusters.append(StyleCluster(k, str(c.get("name", k)), frozenset(str(t).lower() for t in c["tags"])))
    return clusters


def style_names(path: str | Path = "") -> list[str]:
    """The names of the style clusters, in id order (`path` as for load_style_clusters)."""
    return [c.name for c in load_style_clusters(path)]


def style_label(tags: Iterable[str], clusters: list[StyleCluster], min_matches: int) -> int:
    """argmax_i |tags ∩ C_i| when that maximum >= min_matches (ties -> lowest id), else -1."""
    t = set(tags)
    s = [len(t & c.tags) for c in clusters]  # s_i = |T ∩ C_i|
    best = int(np.argmax(s))
    return best if s[best] >= min_matches else -1


def style_labels(tag_lists: Iterable[Iterable[str]], clusters: list[StyleCluster], min_matches: int) -> np.ndarray:
    return np.array([style_label(t, clusters, min_matches) for t in tag_lists], dtype=np.int8)


# ----------------------------------------------------------------------------
# Train / eval split
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



__all__ = ["aesthetic_score_tags", "split_of", "QUALITY_NAMES", "StyleCluster", "load_style_clusters", "quality_tiers", "style_names",
           "score_tags", "style_label", "style_labels"]
