"""The prepare stages at the scale of the real thing, measured in ways a shared machine does not bend.

1. The image stage (read, full decode, pHash) on realistic files: 1-4 MP JPEG and WebP, generated. Reported as
   CPU seconds per image (time.process_time of the worker doing it: load on other cores does not add to it),
   i.e. images per second per core, and the planned hours for 8 M images on 32 cores.
2. Memory: the resident memory that N ingested posts (the manifest columns) and N indexed tar members hold,
   per million.
3. Tar indexes: locating and reading members through a deepghs/hfutils index (JSON read + seek + read) against
   walking the tar's headers (the only other way to find a member), on one shard of >= 10k members; a ratio of
   the two in the same run.

    python benchmarks/ingest_scale.py --images 24 --posts 200000 --members 10000 --json benchmarks/ingest_scale.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent


def realistic_image(rng: np.random.Generator, megapixels: float) -> Image.Image:
    """Smooth colour fields, edges and fine noise: compresses like an illustration, not like white noise."""
    h = int((megapixels * 1e6 / 1.4) ** 0.5)
    w = int(h * 1.4)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.zeros((h, w, 3), np.float32)
    for c in range(3):
        fx, fy, ph = rng.uniform(0.5, 4, 2).tolist() + [rng.uniform(0, 6.28)]
        img[..., c] = 127 + 90 * np.sin(2 * np.pi * (fx * xx / w + fy * yy / h) + ph)
    for _ in range(12):
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.03, 0.2) * h
        mask = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
        img[mask] = rng.uniform(0, 255, 3)
    img += rng.normal(0, 6, img.shape)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def image_stage(n: int, folder: Path) -> dict:
    from vampdiffusion.data.image_scan import inspect_image
    from vampdiffusion.data.images import ImageRef
    rng = np.random.default_rng(0)
    files, pixels = [], []
    for i in range(n):
        im = realistic_image(rng, 1.0 + 3.0 * i / max(n - 1, 1))
        ext = ("jpg", "webp")[i % 2]
        path = folder / f"{i}.{ext}"
        im.save(path, format="JPEG" if ext == "jpg" else "WEBP", quality=90)
        files.append(path)
        pixels.append(im.width * im.height)
    cpu = []
    for path in files:
        t0 = time.process_time()
        row, entry = inspect_image((0, ImageRef(str(path))))
        cpu.append(time.process_time() - t0)
        assert not isinstance(entry, str) and not entry.reason, entry
    per_image = float(np.mean(cpu))
    return {"images": n, "megapixels_mean": float(np.mean(pixels)) / 1e6,
            "mean_file_kb": float(np.mean([p.stat().st_size for p in files])) / 1024,
            "cpu_seconds_per_image": per_image, "images_per_second_per_core": 1.0 / per_image,
            "jpeg_cpu_seconds": float(np.mean(cpu[0::2])), "webp_cpu_seconds": float(np.mean(cpu[1::2])),
            "hours_for_8M_on_32_cores": 8e6 * per_image / 32 / 3600}


MEMORY_CHILD = """
import json, sys
from collections import Counter
from vampdiffusion.data.ingest import ingest_posts
from vampdiffusion.data.images import TarImages

def rss_kib():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])

kind, path, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
base = rss_kib()
kept = ingest_posts([path], Counter(), Counter()) if kind == "posts" else TarImages(path)
assert (len(kept) if kind == "posts" else len(kept.ids)) == n
print(json.dumps({"kib": rss_kib() - base}))   # what the columns / the member index hold
"""


def posts_file(path: Path, n: int) -> None:
    rng = np.random.default_rng(1)
    general = [f"tag_{k}" for k in range(3000)]
    with open(path, "w") as f:
        for i in range(n):
            tags = " ".join(general[j] for j in rng.integers(0, 3000, 30))
            f.write(json.dumps({"id": i + 1, "md5": f"{rng.integers(1 << 62):032x}", "file_ext": "jpg",
                                "image_width": 1200, "image_height": 1600, "score": int(rng.integers(0, 200)),
                                "rating": "g", "created_at": "2022-03-01T10:00:00.000-05:00",
                                "tag_string_general": tags, "tag_string_artist": "someone",
                                "tag_string_character": "", "tag_string_copyright": "original",
                                "tag_string_meta": "highres"}) + "\n")


def member_shards(folder: Path, shards: int, n: int, size: int = 1024) -> Path:
    """`shards` tars of n members named <id>.webp (danbooru2024 layout, ids id % 1000 = shard) and their hfutils
    indexes; returns the first tar."""
    sys.path.insert(0, str(HERE.parent / "tests"))
    from layouts import write_tar
    for s in range(shards):
        payload = [(f"{i * 1000 + s}.webp", os.urandom(size + i % 512)) for i in range(n)]
        tar = folder / "images" / f"{s:04d}.tar"
        tar.with_suffix(".json").parent.mkdir(parents=True, exist_ok=True)
        tar.with_suffix(".json").write_text(json.dumps(write_tar(tar, payload)))
    return folder / "images" / "0000.tar"


def child_memory(kind: str, path: Path, n: int) -> int:
    out = subprocess.run([sys.executable, "-c", MEMORY_CHILD, kind, str(path), str(n)], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["kib"]


def index_vs_headers(tar: Path, lookups: int) -> dict:
    """Wall seconds, in the same process, of: the index read + `lookups` member reads by seek, and the header walk."""
    from vampdiffusion.data.images import read_bytes, read_index, walk_headers, ImageRef
    rng = np.random.default_rng(2)
    t0 = time.perf_counter()
    m = read_index(tar.with_suffix(".json"), tar.stat().st_size)
    picks = rng.integers(0, len(m.names), lookups)
    for k in picks:
        read_bytes(ImageRef(str(tar), m.names[k], m.offsets[k], m.sizes[k], m.sha256[k]))
    t_index = time.perf_counter() - t0
    t0 = time.perf_counter()
    walked = walk_headers(tar)
    t_walk = time.perf_counter() - t0
    assert walked.names == m.names
    return {"members": len(m.names), "lookups": lookups, "index_seconds": t_index, "header_walk_seconds": t_walk,
            "walk_over_index": t_walk / t_index}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=24, help="realistic images to decode (1-4 MP)")
    ap.add_argument("--posts", type=int, default=200_000, help="posts for the memory measurement")
    ap.add_argument("--members", type=int, default=10_000, help="members of the shard read through its index")
    ap.add_argument("--shards", type=int, default=40, help="shards of 2500 members each for the memory of the index")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        row = {"image_stage": image_stage(a.images, tmp)}
        posts_file(tmp / "posts.jsonl", a.posts)
        member_shards(tmp / "release", a.shards, 2500, size=16)
        members = a.shards * 2500
        row["memory"] = {"posts": a.posts, "mib_per_million_posts": child_memory("posts", tmp / "posts.jsonl", a.posts)
                         / 1024 * 1e6 / a.posts,
                         "tar_members": members, "tar_shards": a.shards, "mib_per_million_tar_members":
                         child_memory("members", tmp / "release", members) / 1024 * 1e6 / members}
        row["tar_index"] = index_vs_headers(member_shards(tmp / "big", 1, a.members), lookups=200)
    row["cpu"] = os.cpu_count()
    print(json.dumps(row, indent=2))
    if a.json:
        Path(a.json).write_text(json.dumps(row, indent=2) + "\n")


if __name__ == "__main__":
    main()
