"""Builders of the published Danbooru download layouts, small and exact (used by the layout tests; no tests here).

  danbooru2023       nyanko7/danbooru2023: original/data-0NNN.tar, recent/data-1NNN.tar, updates/**/*-D.tar;
                     tar indexes published separately (deepghs/danbooru2023_index) at the same relative paths
  danbooru2023-webp  KBlueLeaf/danbooru2023-webp-4Mpixel: images/data-0NNN.tar, images/data-1NNN.tar, updates;
                     indexes separately (deepghs/danbooru2023-webp-4Mpixel_index)
  danbooru2024       deepghs/danbooru2024(-sfw, -webp-4Mpixel): images/NNNN.tar with images/NNNN.json beside,
                     metadata.parquet at the root
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

RECENT_FROM = 5000          # ids from here on live in recent/ (data-1NNN.tar)


@dataclass
class Built:
    root: Path                       # what --images points at
    posts: Path                      # the posts file (JSON lines, or metadata.parquet)
    index_dir: Path | None           # --image-index, when the indexes are published separately
    ids: list[int]                   # every post
    missing: set[int] = field(default_factory=set)   # posts whose image is in no tar
    corrupt: set[int] = field(default_factory=set)   # members whose bytes differ from their index
    updated: set[int] = field(default_factory=set)   # posts whose image an update shard replaces


def image_bytes(post_id: int, ext: str, shade: int = 0) -> bytes:
    rng = np.random.default_rng(post_id + 7919 * shade)
    im = Image.fromarray((rng.random((64, 64, 3)) * 255).astype(np.uint8))
    buf = io.BytesIO()
    im.save(buf, format={"jpg": "JPEG", "png": "PNG", "webp": "WEBP"}[ext], **({"lossless": True} if ext == "webp" else {}))
    return buf.getvalue()


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> dict:
    """Write the tar; return its deepghs/hfutils index (filesize, hashes, member offsets, sizes, sha256)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    raw = path.read_bytes()
    files = {}
    with tarfile.open(path) as tf:
        for m in tf:
            if m.isreg():
                data = raw[m.offset_data:m.offset_data + m.size]
                files[m.name] = {"offset": m.offset_data, "size": m.size, "sha256": hashlib.sha256(data).hexdigest()}
    git_sha1 = hashlib.sha1(f"blob {len(raw)}\0".encode() + raw).hexdigest()
    return {"filesize": len(raw), "hash": git_sha1, "hash_lfs": hashlib.sha256(raw).hexdigest(), "files": files}


def post_record(post_id: int, ext: str, year: int = 2021) -> dict:
    general = ["1girl", "solo", "smile", "long_hair", "blue_eyes", "outdoors", "sky", "dress", "flower", "hat"]
    return {"id": post_id, "created_at": f"{year}-05-01T12:00:00.000-04:00", "score": 10 + post_id % 50,
            "rating": "g", "file_ext": ext, "image_width": 64, "image_height": 64, "md5": "",
            "tag_string_general": " ".join(general[: 5 + post_id % 6]), "tag_string_artist": f"artist_{post_id % 7}",
            "tag_string_character": "", "tag_string_copyright": "original", "tag_string_meta": ""}


def _shard_name(layout: str, post_id: int) -> str:
    nnn = post_id % 1000
    if layout == "danbooru2024":
        return f"images/{nnn:04d}.tar"
    recent = post_id >= RECENT_FROM
    folder = "images" if layout == "danbooru2023-webp" else ("recent" if recent else "original")
    return f"{folder}/data-{1 if recent else 0}{nnn:03d}.tar"


def build(layout: str, root: Path, ids: list[int], missing=(), corrupt=(), updated=(), wrong_index: str = "") -> Built:
    """Write `layout` under root for these post ids. `missing`: posts without an image; `corrupt`: members whose
    index sha256 is not their bytes'; `updated`: ids an update shard holds again with a new image;
    `wrong_index`: the relative tar path whose index names another file size."""
    ext = "webp" if layout != "danbooru2023" else "jpg"
    shards: dict[str, list[tuple[str, bytes]]] = {}
    for i in ids:
        if i not in missing:
            shards.setdefault(_shard_name(layout, i), []).append((f"{i}.{ext}", image_bytes(i, ext)))
    for i in updated:
        shards.setdefault(f"updates/2024-06/data-{i % 10}.tar" if layout != "danbooru2024" else
                          f"images/{i % 1000:04d}.tar", []).append((f"{i}.{ext}", image_bytes(i, ext, shade=1)))
    separate = layout != "danbooru2024"
    index_dir = root.parent / f"{root.name}_index" if separate else None
    for rel, members in sorted(shards.items()):
        index = write_tar(root / rel, members)
        for name in list(index["files"]):
            if int(Path(name).stem) in corrupt:
                index["files"][name]["sha256"] = "0" * 64
        if rel == wrong_index:
            index["filesize"] += 512
        target = (index_dir if separate else root) / Path(rel).with_suffix(".json")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(index))
    records = [post_record(i, ext) for i in ids]
    if layout == "danbooru2024":
        import pyarrow as pa
        import pyarrow.parquet as pq
        posts = root / "metadata.parquet"
        pq.write_table(pa.Table.from_pylist(records), posts)
    else:
        posts = root / "posts.jsonl"
        posts.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    return Built(root, posts, index_dir, list(ids), set(missing), set(corrupt), set(updated))
