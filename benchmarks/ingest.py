"""Streaming ingest of Danbooru post metadata: records/s and peak RSS.

    python benchmarks/ingest.py                     # 250k (JSON lines and zstd) and 1M (JSON lines) records
    python benchmarks/ingest.py --sizes 100000

Each measurement runs `prepare.ingest_posts` (parse + columns) in a fresh process and reads its peak RSS
(ru_maxrss), so the growth between sizes is what the columns cost per post. Writes benchmarks/ingest.json.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

GENERAL = [f"tag_{k}" for k in range(3000)]


def write_posts(path: Path, n: int, seed: int = 0) -> None:
    """n records in the current Danbooru API schema, ~25 general tags each, 0.1% malformed lines."""
    r = random.Random(seed)
    with open(path, "w") as f:
        for i in range(1, n + 1):
            if r.random() < 0.001:
                f.write('{"id": 1, "score": \n')
                continue
            general = " ".join(r.sample(GENERAL, r.randint(5, 45)))
            rec = {"id": i, "created_at": f"{r.randint(2005, 2024)}-05-06T07:08:09.000-04:00", "score": r.randint(-5, 300),
                   "up_score": 0, "down_score": 0, "fav_count": 0, "rating": r.choice("gsqe"), "md5": f"{r.getrandbits(128):032x}",
                   "file_ext": "jpg", "image_width": 1200, "image_height": 1600, "tag_string": general,
                   "tag_string_general": general, "tag_string_character": "", "tag_string_copyright": "original",
                   "tag_string_artist": f"artist_{r.randint(0, 50000)}", "tag_string_meta": "highres",
                   "is_deleted": False, "is_banned": False, "parent_id": None, "has_children": False,
                   "pixiv_id": None, "source": "https://example.com/x.jpg", "file_size": 123456}
            f.write(json.dumps(rec, separators=(",", ":")) + "\n")


CHILD = """
import json, resource, sys, time
from collections import Counter
from vampdiffusion.data.prepare import ingest_posts
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
bad, ratings = Counter(), Counter()
t = time.perf_counter()
cols = ingest_posts(sys.argv[1], bad, ratings)
dt = time.perf_counter() - t
print(json.dumps({"posts": len(cols), "bad": dict(bad), "seconds": dt, "base_rss_mb": base / 1024,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def measure(path: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[250_000, 1_000_000])
    ap.add_argument("--out", default=str(Path(__file__).with_suffix(".json")))
    a = ap.parse_args()
    rows = []
    print(f"{'records':>10} {'format':>8} {'records/s':>10} {'peak RSS MB':>12} {'RSS above import MB':>20}")
    with tempfile.TemporaryDirectory() as tmp:
        for n in a.sizes:
            p = Path(tmp) / f"posts_{n}.jsonl"
            write_posts(p, n)
            variants = [("jsonl", p)]
            z = p.with_suffix(".jsonl.zst")
            if n == a.sizes[0]:  # the compressed reader once, at the smallest size
                import zstandard
                with open(p, "rb") as src, open(z, "wb") as dst:
                    zstandard.ZstdCompressor(level=3).copy_stream(src, dst)
                variants.append(("zst", z))
            for fmt, f in variants:
                m = measure(f)
                row = {"records": n, "format": fmt, "posts": m["posts"], "malformed": m["bad"].get("malformed_json", 0),
                       "records_per_s": round(n / m["seconds"]), "peak_rss_mb": round(m["peak_rss_mb"], 1),
                       "rss_above_import_mb": round(m["peak_rss_mb"] - m["base_rss_mb"], 1),
                       "file_mb": round(f.stat().st_size / 2**20, 1)}
                rows.append(row)
                print(f"{n:>10,} {fmt:>8} {row['records_per_s']:>10,} {row['peak_rss_mb']:>12} {row['rss_above_import_mb']:>20}", flush=True)
            p.unlink()
            z.unlink(missing_ok=True)
    js = [r for r in rows if r["format"] == "jsonl"]
    per_post = None
    if len(js) >= 2:
        per_post = round((js[-1]["rss_above_import_mb"] - js[0]["rss_above_import_mb"]) * 2**20
                         / (js[-1]["records"] - js[0]["records"]), 1)
        print(f"RSS growth per post: {per_post} bytes (the manifest columns: id, md5, tags string, sizes, score, year, ...)")
    Path(a.out).write_text(json.dumps({"rows": rows, "rss_bytes_per_post": per_post,
                                       "hardware": "2-core CPU dev machine", "date": "2026-11-26"}, indent=2) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
