import numpy as np
import pytest

from vampdiffusion.data.dedup import (UnionFind, block_layout, brute_force_pairs, duplicate_clusters,
                                      near_duplicate_pairs, near_pairs_unique)


def _flip(h: np.ndarray, rng, max_bits: int) -> np.ndarray:
    out = h.copy()
    for k in range(out.size):
        for b in rng.choice(64, size=int(rng.integers(0, max_bits + 1)), replace=False):
            out[k] ^= np.uint64(1) << np.uint64(int(b))
    return out


def test_block_layout_covers_64_bits():
    lay = block_layout(10)
    assert sum(w for _, w in lay) == 64 and lay[0] == (0, 7) and lay[-1] == (58, 6)


def test_same_pairs_as_brute_force_on_20k_random_hashes_with_planted_duplicates():
    rng = np.random.default_rng(0)
    h = rng.integers(0, 2**64, size=19_000, dtype=np.uint64)
    src = rng.integers(0, h.size, size=1000)
    h = np.concatenate([h, _flip(h[src], rng, 9)])  # distances 0..9 around the threshold
    got = near_duplicate_pairs(h, max_distance=7, blocks=10)
    want = brute_force_pairs(h, max_distance=7)
    assert len(want) > 700
    assert np.array_equal(got, want)


def test_same_pairs_as_brute_force_on_clustered_hashes():
    rng = np.random.default_rng(1)
    centres = rng.integers(0, 2**64, size=40, dtype=np.uint64)
    h = _flip(centres[rng.integers(0, 40, size=3000)], rng, 6)
    assert np.array_equal(near_duplicate_pairs(h, 7, 10), brute_force_pairs(h, 7))


def test_blocks_must_exceed_the_distance():
    with pytest.raises(ValueError, match="must exceed"):
        near_pairs_unique(np.array([1, 2], np.uint64), 7, 7)


def test_union_find_joins_chains():
    uf = UnionFind(5)
    uf.union(3, 4)
    uf.union(1, 4)
    assert uf.roots().tolist() == [0, 1, 2, 1, 1]


def test_cluster_keeps_highest_resolution_then_score_then_lowest_id():
    far, other = 0xFFFF_FFFF_0000_0000, 0x0000_0000_FFFF_FFFF  # 32 bits from 0 and 64 from each other
    h = np.array([0b0, 0b1, 0b11, far, far | 1, other], dtype=np.uint64)
    pixels = np.array([100, 400, 400, 50, 50, 10])
    score = np.array([9, 1, 5, 3, 3, 0])
    ids = np.array([10, 11, 12, 20, 19, 30])
    r = duplicate_clusters(h, pixels, score, ids, max_distance=7, blocks=10)
    assert r.keep.tolist() == [False, False, True, False, True, True]
    assert r.size_histogram == {2: 1, 3: 1}


def test_identical_hashes_form_one_cluster():
    h = np.array([5, 5, 5, 7], dtype=np.uint64)
    r = duplicate_clusters(h, np.ones(4), np.zeros(4), np.arange(4), 7, 10)
    assert r.n_identical == 2 and r.keep.sum() == 1


def test_worker_processes_find_the_same_pairs(monkeypatch):
    import vampdiffusion.data.dedup as d
    monkeypatch.setattr(d, "PARALLEL_MIN_HASHES", 0)
    rng = np.random.default_rng(2)
    h = rng.integers(0, 2**64, size=3000, dtype=np.uint64)
    h = np.unique(np.concatenate([h, _flip(h[:300], rng, 7)]))
    assert np.array_equal(near_pairs_unique(h, 7, 10, workers=2), near_pairs_unique(h, 7, 10, workers=1))
