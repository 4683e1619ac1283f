"""Issue 16 end to end: one hostile Danbooru-like dataset holding every input class at once, through the real
`vamp data prepare` (a subprocess): every good record is kept, every bad one is counted under its reason, no
traceback; and an empty result (no post parsed, no image found, every image too small, no latent to encode)
is a non-zero exit with one line naming the problem and the fix.

The set (every folder name holds "::"):
  posts::in/array.json       a JSON array of API-shaped records (media_asset.variants, tags [{name, category}]),
                             one of them broken inside a nested list
  posts::in/tail.jsonl.zst   three zstd frames, the last cut in half
  posts::in/array.json.gz    a gzip JSON array, the file cut in half
  posts::in/bom.jsonl        a UTF-8 byte-order mark
  posts::in/cr.jsonl         lines ended by CR alone (longer than the reader's first 4096 characters)
  posts::in/posts.parquet    created_at a timestamp column (one row in the year 33658)
  posts::in/numbers.jsonl    ids and scores as strings, in non-ASCII digits, beyond int64, 400 digits; a
                             400-digit aesthetic; a float greyscale TIFF; an EXIF-rotated JPEG
  tree::img/original/0NNN/<id>.<ext>   the folder tree, and a FIFO named data-0998.tar
  shards::img/original/data-0NNN.tar   tar shards (a 16-bit greyscale PNG among them), and a FIFO data-0998.tar
"""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from PIL import Image

from layouts import image_bytes, post_record, write_tar

from vampdiffusion.data.phash import phash

SCORE = 10          # one score for every good post: each is then in the same per-year decile (5), so stage 2 keeps all
AESTHETIC = 6.0     # above the tiny preset's min_aesthetic (4.5)
PREPARE_TIMEOUT_S = 120   # a FIFO opened by mistake would block forever: fail instead


def vamp(*args: str) -> subprocess.CompletedProcess:
    """The real command line, in its own process."""
    return subprocess.run([sys.executable, "-m", "vampdiffusion.cli", *args], capture_output=True, text=True,
                          timeout=PREPARE_TIMEOUT_S, env=dict(os.environ, OMP_NUM_THREADS="1"))


def prepare_args(posts: list[Path], images: list[Path], out: Path, *sets: str) -> list[str]:
    args = ["data", "prepare", "--config", "tiny", "--set", "data.workers=1", *[a for s in sets for a in ("--set", s)]]
    for p in posts:
        args += ["--posts", str(p)]
    for d in images:
        args += ["--images", str(d)]
    return args + ["--out", str(out)]


def one_error_line(proc: subprocess.CompletedProcess, command: str) -> str:
    """The single line on stderr of a failed command (`vamp <command>: <what is wrong>; <the fix>`)."""
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"vamp {command}: "), proc.stderr
    return lines[0]


# ----------------------------------------------------------------------------
# The records and images
# ----------------------------------------------------------------------------

def good_record(post_id: int, ext: str, **over) -> dict:
    """A usable post (layouts.post_record: 5-10 general tags, 64 x 64) with the shared score and aesthetic."""
    return {**post_record(post_id, ext), "score": SCORE, "aesthetic": AESTHETIC, **over}


def api_record(post_id: int) -> dict:
    """Shaped like the Danbooru API / Danbooru2021: strings for numbers, nested objects and lists, tag objects."""
    general = ["1girl", "solo", "smile", "long_hair", "blue_eyes", "dress"]
    return {"id": str(post_id), "score": str(SCORE), "created_at": "2021-07-04T12:00:00.000-04:00", "rating": "s",
            "file_ext": "jpg", "image_width": "64", "image_height": "64", "aesthetic": AESTHETIC,
            "md5": f"{post_id:032x}",
            "media_asset": {"id": 10**6 + post_id, "variants": [{"type": "180x180", "url": f"/{post_id}/s.jpg"},
                                                                {"type": "720x720", "url": f"/{post_id}/m.jpg"}]},
            "tags": [{"name": t, "category": "0"} for t in general] + [{"name": "artist_x", "category": "1"}]}


def jsonl(records: list[dict]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


def kept_from_lines(prefix: bytes) -> tuple[list[int], int]:
    """(ids of the records whose JSON line a decompressed prefix holds, 1 if a partial last line is malformed)."""
    *whole, rest = prefix.split(b"\n")
    ids = [int(json.loads(line)["id"]) for line in whole if line.strip()]
    try:
        ids.append(int(json.loads(rest)["id"]))
        return ids, 0
    except ValueError:
        return ids, int(bool(rest.strip()))


def encoded(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def grey_phash(levels: np.ndarray) -> int:
    """The pHash of grey levels 0..255 as an image read as it looks (8-bit grey, as RGB)."""
    return phash(Image.fromarray(np.rint(levels).astype(np.uint8)).convert("RGB"))


@dataclass
class Hostile:
    root: Path
    posts: list[Path]
    images: list[Path]
    good: set[int] = field(default_factory=set)           # every post that must reach the manifest
    bad: dict[str, int] = field(default_factory=dict)     # what the prepare must count, by reason
    tree: dict[int, bytes] = field(default_factory=dict)  # id -> bytes of original/0NNN/<id>.<ext>
    exts: dict[int, str] = field(default_factory=dict)
    shard: dict[int, tuple[str, bytes]] = field(default_factory=dict)   # id -> (member, bytes) of a tar shard
    expected_phash: dict[int, int] = field(default_factory=dict)        # images that must read as they look
    displayed: dict[int, tuple[int, int]] = field(default_factory=dict)

    def count(self, reason: str, n: int = 1) -> None:
        if n:
            self.bad[reason] = self.bad.get(reason, 0) + n

    def in_tree(self, post_id: int, ext: str, data: bytes | None = None) -> None:
        self.good.add(post_id)
        self.tree[post_id], self.exts[post_id] = data if data is not None else image_bytes(post_id, ext), ext

    def in_shard(self, post_id: int, ext: str, data: bytes | None = None) -> None:
        self.good.add(post_id)
        self.shard[post_id] = (f"{post_id}.{ext}", data if data is not None else image_bytes(post_id, ext))


def add_json_array(h: Hostile, folder: Path) -> None:
    """20 API-shaped records; the 5th broken inside its variants list (a string where a comma belongs)."""
    ids = list(range(1000, 1020))
    parts = [json.dumps(api_record(i)) for i in ids]
    parts[4] = parts[4].replace('"type": "720x720"', '"type": "720x720" "oops"')
    assert parts[4] != json.dumps(api_record(ids[4]))
    (folder / "array.json").write_text("[\n" + ",\n".join(parts) + "\n]\n")
    for i in ids[:4] + ids[5:]:
        h.in_tree(i, "jpg")
    h.count("malformed_json")


def add_truncated_zstd(h: Hostile, folder: Path) -> None:
    """Three frames of 10 JSON lines; the file ends in the middle of the third."""
    groups = [[good_record(i, "webp", md5=f"{i:032x}") for i in range(start, start + 10)] for start in (2000, 2010, 2020)]
    cctx = zstandard.ZstdCompressor(write_checksum=True)
    frames = [cctx.compress(jsonl(g)) for g in groups]
    cut = frames[-1][: len(frames[-1]) // 2]
    (folder / "tail.jsonl.zst").write_bytes(b"".join(frames[:-1]) + cut)
    prefix = jsonl(groups[0] + groups[1]) + zstandard.ZstdDecompressor().decompressobj().decompress(cut)
    ids, partial = kept_from_lines(prefix)
    assert 20 <= len(ids) < 30                                      # the cut costs records: there is damage to count
    for i in ids:
        h.in_shard(i, "webp")
    h.count("corrupt_posts_file")
    h.count("malformed_json", partial)


def add_truncated_gzip_array(h: Hostile, folder: Path) -> None:
    """30 API-shaped records in a JSON array, gzip-compressed, the file cut in half."""
    ids = list(range(3000, 3030))
    parts = [json.dumps(api_record(i)) for i in ids]
    text = ("[" + ",\n".join(parts) + "]").encode()
    ends = np.cumsum([len(p) for p in parts]) + 1 + 2 * np.arange(len(parts))   # offset just past each record
    comp = gzip.compress(text, mtime=0)
    cut = comp[: len(comp) // 2]
    (folder / "array.json.gz").write_bytes(cut)
    prefix = zlib.decompressobj(31).decompress(cut)                 # all that the cut stream still decodes to
    kept = [i for i, end in zip(ids, ends) if end <= len(prefix)]
    assert 0 < len(kept) < len(ids)                                 # (how many depends on the compressor)
    for i in kept:
        h.in_shard(i, "jpg")
    h.count("corrupt_posts_file")
    h.count("malformed_json")                                       # the record the cut went through


def add_bom_and_cr(h: Hostile, folder: Path) -> None:
    bom = [good_record(i, "png") for i in range(4000, 4010)]
    (folder / "bom.jsonl").write_bytes(b"\xef\xbb\xbf" + jsonl(bom))
    cr = [good_record(i, "webp") for i in range(5000, 5020)]
    text = b"\r".join(json.dumps(r).encode() for r in cr) + b"\r"
    assert len(text) > 4096                                         # past the head the reader peeks at
    (folder / "cr.jsonl").write_bytes(text)
    for r in bom:
        h.in_tree(r["id"], "png")
    for r in cr:
        h.in_tree(r["id"], "webp")


def add_parquet(h: Hostile, folder: Path, rng: np.random.Generator) -> None:
    """created_at as a timestamp column; one row in the year 33658 (no datetime holds it); a 16-bit grey PNG."""
    ids = list(range(6000, 6014))
    seconds = [1_500_000_000 + 86_400 * k for k in range(len(ids))]
    seconds[12] = 10**12
    rows = [good_record(i, "png") for i in ids]
    table = pa.Table.from_pylist([{k: v for k, v in r.items() if k != "created_at"} for r in rows])
    created = pa.array([s * 10**6 for s in seconds], pa.int64()).cast(pa.timestamp("us", tz="UTC"))
    pq.write_table(table.append_column("created_at", created), folder / "posts.parquet")
    grey16 = rng.integers(0, 65536, (64, 64), dtype=np.uint16)
    for i in ids[:12]:
        h.in_shard(i, "png")
    h.count("missing_created_at")
    h.in_shard(ids[13], "png", encoded(Image.fromarray(grey16), "PNG"))
    h.expected_phash[ids[13]] = grey_phash(grey16 / 257.0)                    # 65535 -> 255


def add_numbers(h: Hostile, folder: Path, rng: np.random.Generator) -> None:
    """Numbers in every form a dump may hold them, and the float and EXIF images (folder tree)."""
    good = [good_record(i, "png", id=str(i), score=str(SCORE)) for i in range(7001, 7006)]
    good.append(good_record(7006, "png", aesthetic=int("9" * 400)))           # no float holds it: no value
    floaty = good_record(7007, "png")
    floaty_line = json.dumps(floaty).replace(f'"aesthetic": {AESTHETIC}', '"aesthetic": 1' + "0" * 400 + ".5")
    unscored = good_record(7008, "png", score=None, up_score=SCORE + 2, down_score=-2)   # score = up - |down|
    tiff = good_record(7009, "tiff")
    exif = good_record(7010, "jpg", image_width=64, image_height=96)          # the size as it is displayed
    bad = [({"id": "٧٠١١"}, "bad_id"), ({"id": "７０１２"}, "bad_id"), ({"id": 2**63}, "bad_id"),
           ({"id": int("9" * 400)}, "bad_id"), ({"id": 7015, "score": "١٠"}, "missing_score"),
           ({"id": 7016, "score": 10**30}, "missing_score")]
    lines = [json.dumps(r) for r in good] + [floaty_line] + [json.dumps(r) for r in (unscored, tiff, exif)]
    lines += [json.dumps(good_record(7000, "png", **over)) for over, _ in bad]
    (folder / "numbers.jsonl").write_text("\n".join(lines) + "\n")
    for r in good + [floaty, unscored]:
        h.in_tree(int(r["id"]), "png")
    for _, reason in bad:
        h.count(reason)
    grey = rng.random((64, 64), dtype=np.float32)
    h.in_tree(7009, "tiff", encoded(Image.fromarray(grey), "TIFF"))
    h.expected_phash[7009] = grey_phash(grey.astype(np.float64) * 255.0)      # 1.0 -> 255
    stored = Image.fromarray(rng.integers(0, 256, (64, 96, 3), dtype=np.uint8))     # 96 wide, 64 high on disk
    orientation = Image.Exif()
    orientation[0x0112] = 6                                                   # "rotate 90° clockwise to display"
    h.in_tree(7010, "jpg", encoded(stored, "JPEG", exif=orientation))
    h.displayed[7010] = (64, 96)


def write_images(h: Hostile, tree: Path, shards: Path) -> None:
    for i, data in h.tree.items():
        path = tree / "original" / f"{i % 1000:04d}" / f"{i}.{h.exts[i]}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    by_shard: dict[str, list[tuple[str, bytes]]] = {}
    for i, member in sorted(h.shard.items()):
        by_shard.setdefault(f"original/data-0{i % 1000:03d}.tar", []).append(member)
    for rel, members in by_shard.items():
        write_tar(shards / rel, members)                           # no index: the headers are walked
    for root in (tree, shards):
        os.mkfifo(root / "original" / "data-0998.tar")             # opening it would block forever


def build_hostile(root: Path) -> Hostile:
    rng = np.random.default_rng(16)
    posts_dir = root / "posts::in"
    posts_dir.mkdir(parents=True)
    h = Hostile(root, [], [root / "tree::img", root / "shards::img"])
    add_json_array(h, posts_dir)
    add_truncated_zstd(h, posts_dir)
    add_truncated_gzip_array(h, posts_dir)
    add_bom_and_cr(h, posts_dir)
    add_parquet(h, posts_dir, rng)
    add_numbers(h, posts_dir, rng)
    h.posts = [posts_dir / n for n in ("array.json", "tail.jsonl.zst", "array.json.gz", "bom.jsonl", "cr.jsonl",
                                       "posts.parquet", "numbers.jsonl")]
    write_images(h, *h.images)
    return h


# ----------------------------------------------------------------------------
# One prepare over every class
# ----------------------------------------------------------------------------

@dataclass
class Run:
    data: Hostile
    proc: subprocess.CompletedProcess
    out: Path

    def json(self, name: str):
        return json.loads((self.out / name).read_text())


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> Run:
    root = tmp_path_factory.mktemp("hostile")
    h = build_hostile(root / "set")
    out = root / "prep::out"
    return Run(h, vamp(*prepare_args(h.posts, h.images, out)), out)


def test_prepare_over_every_class_succeeds_without_a_traceback(hostile):
    assert hostile.proc.returncode == 0, hostile.proc.stderr
    assert "Traceback" not in hostile.proc.stdout + hostile.proc.stderr
    for damaged in ("tail.jsonl.zst", "array.json.gz"):                 # each truncation is said, not silent
        said = [line for line in hostile.proc.stderr.splitlines() if f"{damaged}: the compressed stream" in line]
        assert len(said) == 1 and said[0].startswith("vamp data prepare: warning: "), hostile.proc.stderr
    assert "warnings.warn(" not in hostile.proc.stderr                   # one line each, no source echo


def test_every_good_record_is_kept(hostile):
    m = pq.read_table(hostile.out / "manifest.parquet").to_pydict()
    per_file = [sum(i // 1000 == k for i in hostile.data.good) for k in range(1, 8)]
    assert per_file[:1] + per_file[3:] == [19, 10, 20, 13, 10]         # the truncated files' share is computed
    assert sorted(m["id"]) == sorted(hostile.data.good)
    report = hostile.json("report.json")
    assert report["posts_parsed"] == report["usable"] == report["kept"] == len(hostile.data.good)


def test_every_bad_record_is_counted_under_its_reason(hostile):
    report = hostile.json("report.json")
    assert report["bad_input"] == hostile.data.bad
    assert hostile.data.bad["bad_id"] == 4 and hostile.data.bad["missing_score"] == 2
    assert hostile.data.bad["corrupt_posts_file"] == 2 and hostile.data.bad["missing_created_at"] == 1
    assert report["records"] == len(hostile.data.good) + sum(hostile.data.bad.values())


def test_the_stage_table_counts_the_bad_input_at_ingest_and_the_stages_remove_nothing(hostile):
    stages = {row["stage"]: row for row in hostile.json("stages.json")}
    n_good, n_bad = len(hostile.data.good), sum(hostile.data.bad.values())
    ingest = stages["0 ingest"]
    assert (ingest["in"], ingest["out"], ingest["removed"]) == (n_good + n_bad, n_good, n_bad)
    assert f"bad input: {n_bad:,}" in ingest["note"]
    assert [(s, r["removed"]) for s, r in stages.items() if s != "0 ingest"] == [
        ("1 resolution", 0), ("2 score", 0), ("3 aesthetic", 0), ("4 tag density", 0), ("5 near-duplicates", 0)]
    assert "2 rows without a value passed" in stages["3 aesthetic"]["note"]   # the two 400-digit aesthetics


def test_the_ingest_row_says_how_many_posts_each_file_and_images_each_folder_gave(hostile):
    h = hostile.data
    per_file = ", ".join(f"{p.name} {sum(i // 1000 == k for i in h.good)}" for k, p in enumerate(h.posts, start=1))
    note = hostile.json("stages.json")[0]["note"]
    assert f"; posts: {per_file}; images: tree::img {len(h.tree)}, shards::img {len(h.shard)}" in note


def test_grey_16_bit_and_float_images_are_read_as_they_look_and_exif_rotation_is_applied(hostile):
    m = pq.read_table(hostile.out / "manifest.parquet").to_pydict()
    row = {i: k for k, i in enumerate(m["id"])}
    for post_id, want in hostile.data.expected_phash.items():
        assert m["phash"][row[post_id]] == want, post_id
    for post_id, (w, h) in hostile.data.displayed.items():
        assert (m["width"][row[post_id]], m["height"][row[post_id]]) == (w, h)


def test_tar_members_under_a_path_with_double_colons_are_addressed_by_fields(hostile):
    m = pq.read_table(hostile.out / "manifest.parquet").to_pydict()
    members = {i: (p, mem) for i, p, mem in zip(m["id"], m["path"], m["member"]) if mem}
    assert set(members) == set(hostile.data.shard)
    assert all("shards::img" in p and p.endswith(".tar") and mem == hostile.data.shard[i][0]
               for i, (p, mem) in members.items())
    assert not any(p.endswith("data-0998.tar") for p in m["path"])


# ----------------------------------------------------------------------------
# Empty results: a non-zero exit and one line naming the problem and the fix
# ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> Hostile:
    """A small undamaged set: bom.jsonl + cr.jsonl with their folder tree (30 posts, 64 x 64)."""
    root = tmp_path_factory.mktemp("clean")
    h = Hostile(root, [root / "bom.jsonl", root / "cr.jsonl"], [root / "tree"])
    add_bom_and_cr(h, root)
    (root / "shards" / "original").mkdir(parents=True)                   # (no post's image is in a tar here)
    write_images(h, root / "tree", root / "shards")
    return h


def _no_posts(path: Path) -> None:
    path.write_text('{"name": "not a post"}\n' * 5 + "<html>\n")


def _empty_file(path: Path) -> None:
    path.write_bytes(b"")


def _an_image(path: Path) -> None:
    path.write_bytes(image_bytes(1, "png"))


@pytest.mark.parametrize("make", [_no_posts, _empty_file, _an_image])
def test_posts_that_parse_to_nothing_exit_2_naming_the_posts_format(clean, tmp_path, make):
    posts = tmp_path / "posts.jsonl"
    make(posts)
    proc = vamp(*prepare_args([posts], clean.images, tmp_path / "out"))
    line = one_error_line(proc, "data prepare")
    assert proc.returncode == 2
    assert f"no post could be parsed from {posts} (" in line
    assert "--posts must be Danbooru posts as JSON lines, a JSON array or parquet" in line
    assert not (tmp_path / "out" / "manifest.parquet").exists()


def _flat_folder(root: Path, h: Hostile) -> None:
    for i in h.good:
        (root / f"{i}.png").write_bytes(image_bytes(i, "png"))


def _tar_of_other_names(root: Path, h: Hostile) -> None:
    write_tar(root / "images.tar", [(f"img_{i}.png", image_bytes(i, "png")) for i in sorted(h.good)])


@pytest.mark.parametrize("make", [_flat_folder, _tar_of_other_names])
def test_images_in_no_known_layout_exit_2_naming_the_layouts(clean, tmp_path, make):
    images = tmp_path / "pics"
    images.mkdir()
    make(images, clean)
    proc = vamp(*prepare_args(clean.posts, [images], tmp_path / "out"))
    line = one_error_line(proc, "data prepare")
    assert proc.returncode == 2
    assert f"no image of the posts could be used from {images} (missing_image {len(clean.good)})" in line
    assert "check that --images is the folder of these posts' images; the layouts read are: folder tree" in line
    assert not (tmp_path / "out" / "manifest.parquet").exists()


@pytest.fixture(scope="module")
def too_small(clean, tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path_factory.mktemp("too_small") / "out"
    return vamp(*prepare_args(clean.posts, clean.images, out, "data.min_side=128")), out


def test_every_image_below_min_side_exits_2_naming_the_setting(clean, too_small):
    proc, out = too_small
    line = one_error_line(proc, "data prepare")
    assert proc.returncode == 2
    n = len(clean.good)
    assert f"no post survived the filters: stage 1 resolution removed all {n} rows; loosen data.min_side" in line
    stages = json.loads((out / "stages.json").read_text())
    assert (stages[1]["in"], stages[1]["out"]) == (n, 0) and "REMOVED EVERY ROW" in stages[1]["note"]
    assert "REMOVED EVERY ROW" in proc.stdout
    assert not (out / "manifest.parquet").exists()


def test_encode_of_a_prepare_that_kept_nothing_exits_2(too_small, tmp_path):
    _, prepared = too_small
    proc = vamp("data", "encode", "--manifest", str(prepared), "--out", str(tmp_path / "latents"))
    line = one_error_line(proc, "data encode")
    assert proc.returncode == 2
    assert f"{prepared} holds no manifest.parquet: `vamp data prepare` kept no post there" in line
    assert "loosen that stage's setting and prepare again" in line
    assert not (tmp_path / "latents" / "index.parquet").exists()


def test_encode_of_a_manifest_without_rows_exits_2(hostile, tmp_path):
    (tmp_path / "prepared").mkdir()
    empty = pq.read_table(hostile.out / "manifest.parquet").slice(0, 0)
    pq.write_table(empty, tmp_path / "prepared" / "manifest.parquet")
    proc = vamp("data", "encode", "--manifest", str(tmp_path / "prepared"), "--out", str(tmp_path / "latents"))
    line = one_error_line(proc, "data encode")
    assert proc.returncode == 2 and "has no rows: `vamp data prepare` kept no post" in line
    assert not (tmp_path / "latents" / "index.parquet").exists()
