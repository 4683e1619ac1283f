"""Near-duplicate search: exact pigeonhole sort-join vs brute force (and faiss if installed); pHash draft decoding.

    python benchmarks/dedup.py                      # 1M and 6M hashes, brute force on a 20k subset
    python benchmarks/dedup.py --sizes 200000 --subset 10000 --draft-images 20

Random 64-bit hashes with 5% planted near-duplicates (copies with 0..7 flipped bits). The brute-force
and faiss timings are measured on a subset in the same process and scaled quadratically / linearly, so
the speed-up is a measured ratio. Writes benchmarks/dedup.json.
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import time
from pathlib import Path

import numpy as np

from vampdiffusion.data import dedup, phash, synth


def _cpu() -> float:
    """CPU seconds of this process and its finished children: load-independent, unlike wall time on a shared machine."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def planted_hashes(n: int, frac: float, rng: np.random.Generator) -> np.ndarray:
    n_dup = int(n * frac)
    base = rng.integers(0, 2**64, size=n - n_dup, dtype=np.uint64)
    src = base[rng.integers(0, base.size, size=n_dup)]
    k = rng.integers(0, 8, size=n_dup)                                   # bits to flip, 0..7
    pos = np.argsort(rng.random((n_dup, 64)), axis=1)[:, :7]            # 7 distinct bit positions per copy
    bits = np.where(np.arange(7)[None, :] < k[:, None], np.uint64(1) << pos.astype(np.uint64), np.uint64(0))
    flips = np.bitwise_or.reduce(bits, axis=1)
    return rng.permutation(np.concatenate([base, src ^ flips]))


def bench_search(n: int, subset: int, rng: np.random.Generator, blocks: int, workers: int) -> dict:
    h = planted_hashes(n, 0.05, rng)
    t, cpu0 = time.perf_counter(), _cpu()
    r = dedup.duplicate_clusters(h, np.ones(n), np.zeros(n), np.arange(n), 7, blocks, workers)
    t_ours, cpu = time.perf_counter() - t, _cpu() - cpu0
    sub = h[:subset]
    t = time.perf_counter()
    bf = dedup.brute_force_pairs(sub, 7)
    t_bf = time.perf_counter() - t
    ours_sub = dedup.near_duplicate_pairs(sub, 7, blocks)
    row = {"n": n, "blocks": blocks, "workers": workers, "sorts": len(list(__import__("itertools").combinations(range(blocks), blocks - 7))),
           "pigeonhole_s": round(t_ours, 2), "pigeonhole_cpu_s": round(cpu, 1),
           "pigeonhole_cpu_per_worker_s": round(cpu / max(workers, 1), 1), "pairs": r.n_pairs, "identical": r.n_identical,
           "removed": int((~r.keep).sum()), "subset": subset, "subset_pairs_equal_brute_force": bool(np.array_equal(bf, ours_sub)),
           "brute_force_subset_s": round(t_bf, 3), "brute_force_scaled_s": round(t_bf * (n / subset) ** 2, 1)}
    row["speedup_vs_brute_force"] = round(row["brute_force_scaled_s"] / t_ours, 1)
    try:
        import faiss  # noqa: F401
    except ImportError:
        row["faiss"] = "not installed"
    else:
        row["faiss"] = bench_faiss(sub, n)
    return row


def bench_faiss(sub: np.ndarray, n: int) -> dict:
    import faiss
    codes = sub.view(np.uint8).reshape(-1, 8)
    index = faiss.IndexBinaryMultiHash(64, 8, 8)
    index.add(codes)
    t = time.perf_counter()
    index.range_search(codes, 8)
    dt = time.perf_counter() - t
    return {"multihash_subset_s": round(dt, 3), "multihash_scaled_s": round(dt * (n / sub.size) ** 2, 1)}


def bench_draft(n_images: int, side: int) -> dict:
    """Full decode vs PIL draft decode at 1/2 and 1/4 scale: time per image and how often the hash changes."""
    from PIL import Image
    posts, _ = synth.plan_posts(synth.SynthArgs(n=max(100, 2 * n_images), size=64))
    files = []
    for p in [p for p in posts if p["duplicate_of"] is None][:n_images]:
        buf = io.BytesIO()
        synth.render_degraded(p, side).save(buf, format="JPEG", quality=90)
        files.append(buf.getvalue())

    def full(data):
        return phash.phash(Image.open(io.BytesIO(data)).convert("RGB"))

    def draft(data, scale):
        im = Image.open(io.BytesIO(data))
        im.draft("RGB", (im.width // scale, im.height // scale))
        return phash.phash(im.convert("RGB"))

    t = time.perf_counter()
    ref = [full(d) for d in files]
    t_full = (time.perf_counter() - t) / len(files)
    out = {"images": len(files), "side": side, "full_decode_ms": round(1000 * t_full, 2)}
    for scale in (2, 4):
        t = time.perf_counter()
        hs = [draft(d, scale) for d in files]
        dt = (time.perf_counter() - t) / len(files)
        out[f"draft_1/{scale}"] = {"ms": round(1000 * dt, 2), "speedup": round(t_full / dt, 2),
                                   "hash_changed_pct": round(100.0 * np.mean([a != b for a, b in zip(hs, ref)]), 1)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 6_000_000])
    ap.add_argument("--subset", type=int, default=20_000)
    ap.add_argument("--blocks", type=int, default=10)
    ap.add_argument("--workers", type=int, default=2, help="processes sharing the block choices")
    ap.add_argument("--draft-images", type=int, default=40)
    ap.add_argument("--draft-side", type=int, default=1024)
    ap.add_argument("--out", default=str(Path(__file__).with_suffix(".json")))
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    print(f"{'n':>10} {'pigeonhole s':>13} {'CPU s/worker':>13} {'brute force s (scaled)':>23} {'speed-up':>9} {'pairs':>9} {'exact on subset':>16}")
    for n in a.sizes:
        r = bench_search(n, a.subset, rng, a.blocks, a.workers)
        rows.append(r)
        print(f"{r['n']:>10,} {r['pigeonhole_s']:>13} {r['pigeonhole_cpu_per_worker_s']:>13} {r['brute_force_scaled_s']:>23} {r['speedup_vs_brute_force']:>9} "
              f"{r['pairs']:>9,} {str(r['subset_pairs_equal_brute_force']):>16}", flush=True)
    draft = bench_draft(a.draft_images, a.draft_side) if a.draft_images else None
    if draft:
        print(f"pHash decode ({draft['images']} JPEGs, {draft['side']} px): full {draft['full_decode_ms']} ms/image; "
              + "; ".join(f"{k}: {v['ms']} ms, x{v['speedup']}, hash changed on {v['hash_changed_pct']}%"
                          for k, v in draft.items() if k.startswith("draft")))
    result = {"search": rows, "draft": draft, "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
              "hardware": "2-core CPU dev machine", "date": "2026-11-26"}
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
