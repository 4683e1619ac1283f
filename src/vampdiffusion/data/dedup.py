"""Exact near-duplicate search over 64-bit pHashes, and duplicate clusters by union-find.

Two hashes are duplicates when their Hamming distance is < phash_distance (8), i.e. <= D = 7.
Generalised pigeonhole: split the 64 bits into b blocks (b > D); two hashes within distance D differ
in at most D blocks, so they agree exactly on at least b - D of them. For every choice of b - D blocks
we permute the bits so that the chosen blocks come first (a bit permutation keeps Hamming distances),
sort, and compare each hash with its successors while the chosen blocks agree, verifying the distance
by popcount. Every pair within distance D is found by at least one choice: the search is exact, and
with C(b, b-D) sorts of N values it is sub-quadratic. Identical hashes are collapsed first.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

HASH_BITS = 64
PARALLEL_MIN_HASHES = 100_000  # below this, worker start-up costs more than it saves


def block_layout(blocks: int) -> list[tuple[int, int]]:
    """(start bit, width) of each block, widths as equal as possible, covering bits 0..63."""
    widths = [HASH_BITS // blocks + (1 if k < HASH_BITS % blocks else 0) for k in range(blocks)]
    starts = np.cumsum([0] + widths[:-1]).tolist()
    return list(zip(starts, widths))


def _fields(layout: list[tuple[int, int]], order: list[int]) -> list[tuple[int, int, int]]:
    """(source start, width, destination start) of the bit fields that move when blocks are put in `order`
    from the top bit down; neighbouring blocks that stay neighbours move as one field."""
    fields: list[list[int]] = []
    top = HASH_BITS
    for k in order:
        start, width = layout[k]
        top -= width
        if fields and fields[-1][0] == start + width and fields[-1][2] == top + width:
            fields[-1] = [start, fields[-1][1] + width, top]  # extends the previous field downward
        else:
            fields.append([start, width, top])
    return [tuple(f) for f in fields]


def _move_bits(h: np.ndarray, fields: list[tuple[int, int, int]]) -> np.ndarray:
    out = np.zeros_like(h)
    tmp = np.empty_like(h)
    for src, width, dst in fields:  # in place: no temporaries the size of h
        np.right_shift(h, np.uint64(src), out=tmp)
        np.bitwise_and(tmp, np.uint64((1 << width) - 1), out=tmp)
        np.left_shift(tmp, np.uint64(dst), out=tmp)
        np.bitwise_or(out, tmp, out=out)
    return out


def _permute(h: np.ndarray, layout: list[tuple[int, int]], order: list[int]) -> np.ndarray:
    """Move block order[0] to the top bits, then order[1], ...: a bit permutation of every hash."""
    return _move_bits(h, _fields(layout, order))


def _unpermute(v: np.ndarray, layout: list[tuple[int, int]], order: list[int]) -> np.ndarray:
    return _move_bits(v, [(dst, width, src) for src, width, dst in _fields(layout, order)])


def popcount(x: np.ndarray) -> np.ndarray:
    return np.bitwise_count(x)


def _pairs_one_choice(h: np.ndarray, layout, chosen: list[int], max_distance: int) -> tuple[np.ndarray, np.ndarray]:
    """Hash values (a, b), a != b, within max_distance whose `chosen` blocks agree."""
    # high blocks first in both groups, so that neighbouring blocks move together (fewer bit fields)
    order = sorted(chosen, reverse=True) + [k for k in reversed(range(len(layout))) if k not in chosen]
    key_bits = sum(layout[k][1] for k in chosen)
    v = _permute(h, layout, order)
    v.sort()
    key = v >> np.uint64(HASH_BITS - key_bits)
    found_a, found_b = [], []
    idx = np.flatnonzero(key[1:] == key[:-1])       # i with key[i] == key[i+1]
    d = 1
    while idx.size:
        x = v[idx] ^ v[idx + d]
        hit = popcount(x) <= max_distance
        if hit.any():
            found_a.append(v[idx[hit]])
            found_b.append(v[idx[hit] + d])
        d += 1
        idx = idx[idx + d < v.size]
        idx = idx[key[idx + d] == key[idx]]          # runs are contiguous: shrink to those still inside one
    if not found_a:
        empty = np.empty(0, np.uint64)
        return empty, empty
    return _unpermute(np.concatenate(found_a), layout, order), _unpermute(np.concatenate(found_b), layout, order)


_SHARED: dict = {}  # the hashes, handed to forked workers without pickling


def _codes_one_choice(chosen: tuple[int, ...]) -> np.ndarray:
    uniq, layout, max_distance = _SHARED["uniq"], _SHARED["layout"], _SHARED["max_distance"]
    a, b = _pairs_one_choice(uniq, layout, list(chosen), max_distance)
    i, j = np.searchsorted(uniq, a), np.searchsorted(uniq, b)
    return np.minimum(i, j).astype(np.int64) * uniq.size + np.maximum(i, j)  # pair code lo * U + hi


def near_pairs_unique(uniq: np.ndarray, max_distance: int, blocks: int, workers: int = 1) -> np.ndarray:
    """(P, 2) int64 index pairs i < j into the sorted distinct hashes `uniq` with 1 <= distance <= max_distance.

    The C(blocks, blocks - max_distance) block choices are independent: `workers` processes share them."""
    if blocks <= max_distance:
        raise ValueError(f"phash_blocks ({blocks}) must exceed the largest duplicate distance ({max_distance})")
    uniq = np.asarray(uniq, dtype=np.uint64)
    choices = list(itertools.combinations(range(blocks), blocks - max_distance))
    _SHARED.update(uniq=uniq, layout=block_layout(blocks), max_distance=max_distance)
    try:
        if workers > 1 and uniq.size >= PARALLEL_MIN_HASHES:
            import multiprocessing
            with multiprocessing.get_context("fork").Pool(workers) as pool:
                codes = pool.map(_codes_one_choice, choices, chunksize=1)
        else:
            codes = [_codes_one_choice(c) for c in choices]
    finally:
        _SHARED.clear()
    c = np.unique(np.concatenate(codes)) if codes else np.empty(0, np.int64)
    return np.stack([c // uniq.size, c % uniq.size], axis=1)


def near_duplicate_pairs(hashes: np.ndarray, max_distance: int = 7, blocks: int = 10) -> np.ndarray:
    """(P, 2) int64 pairs i < j of positions in `hashes` with Hamming distance <= max_distance (incl. equal
    hashes). Expands identical-hash groups quadratically: for tests and benchmarks; clustering uses
    `duplicate_clusters`, which never expands them."""
    hashes = np.asarray(hashes, dtype=np.uint64)
    uniq, inverse = np.unique(hashes, return_inverse=True)
    members = [[] for _ in range(uniq.size)]
    for pos, u in enumerate(inverse.tolist()):
        members[u].append(pos)
    out = set()
    for m in members:  # identical hashes
        out.update(itertools.combinations(m, 2))
    for i, j in near_pairs_unique(uniq, max_distance, blocks).tolist():
        out.update((min(a, b), max(a, b)) for a in members[i] for b in members[j])
    return np.array(sorted(out), dtype=np.int64).reshape(-1, 2)


def brute_force_pairs(hashes: np.ndarray, max_distance: int = 7, chunk: int = 2048) -> np.ndarray:
    """The reference: every pair i < j, O(N^2)."""
    h = np.asarray(hashes, dtype=np.uint64)
    out = []
    for s in range(0, h.size, chunk):
        block = h[s:s + chunk]
        dist = popcount(block[:, None] ^ h[None, :])
        i, j = np.nonzero(dist <= max_distance)
        i = i + s
        keep = i < j
        out.append(np.stack([i[keep], j[keep]], axis=1))
    return np.concatenate(out).astype(np.int64) if out else np.empty((0, 2), np.int64)


# ----------------------------------------------------------------------------
# Clusters
# ----------------------------------------------------------------------------

class UnionFind:
    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, x: int) -> int:
        p = self.parent
        while p[x] != x:
            p[x] = p[p[x]]  # path halving
            x = p[x]
        return x

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def roots(self) -> np.ndarray:
        """(n,) the root of every element: pointer jumping over the parent array until it is flat."""
        p = np.array(self.parent, dtype=np.int64)
        while True:
            q = p[p]
            if np.array_equal(q, p):
                return p
            p = q


@dataclass
class DedupResult:
    cluster: np.ndarray        # (N,) int64 cluster id of each hash (the smallest distinct-hash index in it)
    keep: np.ndarray           # (N,) bool, one True per cluster
    n_pairs: int               # near pairs between distinct hashes
    n_identical: int           # hashes equal to an earlier one
    size_histogram: dict[int, int]  # cluster size -> number of clusters (sizes >= 2)


def duplicate_clusters(hashes: np.ndarray, pixels: np.ndarray, score: np.ndarray, ids: np.ndarray,
                       max_distance: int, blocks: int, workers: int = 1) -> DedupResult:
    """Union-find over duplicate pairs; per cluster keep the highest pixel count, then score, then lowest id."""
    hashes = np.asarray(hashes, dtype=np.uint64)
    uniq, inverse = np.unique(hashes, return_inverse=True)
    pairs = near_pairs_unique(uniq, max_distance, blocks, workers)
    uf = UnionFind(uniq.size)
    for i, j in pairs.tolist():
        uf.union(i, j)
    cluster = uf.roots()[inverse]  # identical hashes share their distinct-hash node
    # rank: pixels desc, score desc, id asc -> the first row of each cluster in this order is kept
    order = np.lexsort((np.asarray(ids), -np.asarray(score, np.int64), -np.asarray(pixels, np.int64)))
    _, first = np.unique(cluster[order], return_index=True)
    keep = np.zeros(hashes.size, bool)
    keep[order[first]] = True
    sizes = np.bincount(cluster, minlength=uniq.size)
    hist = np.bincount(sizes[sizes >= 2])
    return DedupResult(cluster=cluster, keep=keep, n_pairs=int(len(pairs)), n_identical=int(hashes.size - uniq.size),
                       size_histogram={int(s): int(c) for s, c in enumerate(hist) if c})


__all__ = ["DedupResult", "UnionFind", "block_layout", "brute_force_pairs", "duplicate_clusters",
           "near_duplicate_pairs", "near_pairs_unique"]
