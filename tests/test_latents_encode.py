"""`vamp data encode` / `vamp data verify`: layout, buckets, bad images, resume, ranks, checksums."""

import argparse
import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from vampdiffusion.atomic import sha256_file
from vampdiffusion.config import LatentConfig
from vampdiffusion.latents import encode as encode_module
from vampdiffusion.cli.verify import main as verify_main
from vampdiffusion.latents import shards as shards_module
from vampdiffusion.latents.encode import NonFiniteLatentError, encode, load_bucket_image
from vampdiffusion.data.images import ImageRef, load_image, walk_headers
from vampdiffusion.latents.vae import load_vae

# resolution 64, step 16 -> buckets (48, 80), (64, 64), (80, 48); latents 6x10, 8x8, 10x6
SIZES = [(64, 64), (100, 60), (60, 100), (70, 70)]
MISSING_ID, CORRUPT_ID = 20, 21


def write_manifest(folder: Path, n: int = 10) -> Path:
    """n PIL-made images (png, RGBA png, 2-frame GIF, tar member jpg) + one missing and one corrupt row."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows, members = [], []
    for i in range(n):
        w, h = SIZES[i % len(SIZES)]
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([xx * 255 // w, yy * 255 // h, np.full_like(xx, 40 * (i % 6))], -1).astype(np.uint8)
        image = Image.fromarray(base)
        if i % 5 == 1:
            path = folder / f"{i}.png"
            rgba = image.convert("RGBA")
            rgba.putalpha(Image.fromarray((rng.random((h, w)) * 255).astype(np.uint8)))
            rgba.save(path)
        elif i % 5 == 2:
            path = folder / f"{i}.gif"
            image.save(path, save_all=True, append_images=[Image.new("RGB", (w, h), (0, 0, 255))])
        elif i % 5 == 3:
            buf = io.BytesIO()
            image.save(buf, "JPEG", quality=95)
            members.append((f"{i}.jpg", buf.getvalue()))
            path = f"{folder}/data-0000.tar"
        else:
            path = folder / f"{i}.png"
            image.save(path)
        rows.append(dict(id=i, md5=f"{i:032x}", path=str(path), member=f"{i}.jpg" if i % 5 == 3 else "", offset=0,
                         size=-1, sha256="", width=w, height=h, score=i, year=2020, score_tag=i % 10,
                         quality=i % 4, style=i % 9 - 1, aesthetic=5.0 + i / 10, tags="a b", tag_ids=[2, 4 + i % 3, 3],
                         split="eval" if i == 0 else "train"))
    with tarfile.open(folder / "data-0000.tar", "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    where = dict(zip(*(lambda m: (m.names, zip(m.offsets, m.sizes)))(walk_headers(folder / "data-0000.tar"))))
    for r in rows:
        if r["member"]:
            r["offset"], r["size"] = where[r["member"]]
    (folder / "corrupt.png").write_bytes(b"\x89PNG not really")
    for i, name in ((MISSING_ID, "missing.png"), (CORRUPT_ID, "corrupt.png")):
        rows.append(dict(rows[0], id=i, md5=f"{i:032x}", path=str(folder / name)))
    pq.write_table(pa.Table.from_pylist(rows), folder / "manifest.parquet")
    (folder / "vocab.json").write_text(json.dumps({"[PAD]": 0, "[UNK]": 1, "[BOS]": 2, "[EOS]": 3, "a": 4}))
    return folder / "manifest.parquet"


def latent_cfg(taesdxl_path, **kw) -> LatentConfig:
    values = dict(vae="taesdxl", vae_path=str(taesdxl_path), scaling_factor=1.0, resolution=64, bucket_step=16,
                  buckets="aspect", shard_size=2, batch_size=2, workers=0)
    return LatentConfig(**(values | kw))


def dataset_files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def count_writes(monkeypatch) -> list[int]:
    written: list[int] = []
    real = encode_module.write_shard

    def spy(root, k, latents, record):
        written.append(k)
        return real(root, k, latents, record)

    monkeypatch.setattr(encode_module, "write_shard", spy)
    return written


@pytest.fixture(scope="module")
def encoded(tmp_path_factory, taesdxl_path):
    """(manifest, dataset folder, cfg): one uninterrupted single-process run, the reference for every test."""
    root = tmp_path_factory.mktemp("encode")
    manifest = write_manifest(root / "prepared")
    cfg = latent_cfg(taesdxl_path)
    summary = encode(manifest, root / "latents", cfg)
    assert summary == {"shards": 7, "encoded": 10, "skipped": 2,
                       "skipped_by_reason": {"corrupt_image": 1, "missing_image": 1}}
    return manifest, root / "latents", cfg


def test_encode_writes_shards_index_checksums_and_metadata(encoded):
    _, out, _ = encoded
    records = json.loads((out / "shards.json").read_text())["shards"]
    assert [r["shard"] for r in records] == list(range(7))
    for r in records:
        array = np.load(out / r["file"], mmap_mode="r")
        assert array.dtype == np.float16 and list(array.shape) == r["shape"]
        assert array.shape[2:] == (r["bucket"][1] // 8, r["bucket"][0] // 8)
        assert sha256_file(out / r["file"]) == r["sha256"]
    index = pq.read_table(out / "index.parquet").to_pylist()
    assert sorted(row["id"] for row in index) == list(range(10))
    assert {(row["bucket_w"], row["bucket_h"]) for row in index} == {(48, 80), (64, 64), (80, 48)}
    landscape = next(row for row in index if row["id"] == 1)  # 100x60 -> bucket 80x48 -> latents 6x10
    assert (landscape["bucket_w"], landscape["bucket_h"], landscape["latent_h"], landscape["latent_w"]) == (80, 48, 6, 10)
    assert landscape["tag_ids"] == [2, 5, 3] and landscape["quality"] == 1 and landscape["split"] == "train"
    meta = json.loads((out / "dataset.json").read_text())
    assert (meta["vae"], meta["scaling_factor"], meta["num_rows"], meta["num_skipped"]) == ("taesdxl", 1.0, 10, 2)
    # per-channel statistics of the training rows, for latents.normalize=channel
    train = [np.load(out / records[row["shard"]]["file"])[row["row"]].astype(np.float64).reshape(4, -1)
             for row in index if row["split"] == "train"]
    pixels = np.concatenate(train, axis=1)                                  # (4, all training latent pixels)
    np.testing.assert_allclose(meta["channel_mean"], pixels.mean(axis=1), atol=1e-5)
    np.testing.assert_allclose(meta["channel_std"], pixels.std(axis=1), atol=1e-5)
    assert json.loads((out / "vocab.json").read_text())["a"] == 4


def test_stored_latent_is_the_vae_encoding_of_the_bucketed_image(encoded, taesdxl_path):
    manifest, out, cfg = encoded
    index = {row["id"]: row for row in pq.read_table(out / "index.parquet").to_pylist()}
    vae = load_vae(cfg)
    for i in (2, 3):  # a GIF (portrait bucket) and a tar member
        row = index[i]
        stored = np.load(out / f"shards/{row['shard']:06d}.npy")[row["row"]].astype(np.float32)
        ref = ImageRef(row["path"], row["member"], row["offset"], row["size"], row["sha256"])
        image = load_bucket_image(ref, (row["bucket_w"], row["bucket_h"]))
        direct = vae.encode(torch.from_numpy(image)[None].float() / 127.5 - 1)[0].numpy()
        np.testing.assert_allclose(stored, direct, atol=2e-3, rtol=1e-2)


def test_unreadable_images_are_counted_listed_and_skipped(encoded):
    _, out, _ = encoded
    report = json.loads((out / "encode_report.json").read_text())
    assert (report["planned"], report["encoded"], report["skipped"]) == (12, 10, 2)
    reasons = {s["id"]: s["reason"] for s in report["skipped_images"]}
    assert set(reasons) == {MISSING_ID, CORRUPT_ID}
    assert reasons[MISSING_ID].startswith("missing_image") and reasons[CORRUPT_ID].startswith("corrupt_image")


def test_images_rgba_on_white_gif_first_frame_tar_member_in_memory(encoded):
    manifest, _, _ = encoded
    folder = manifest.parent
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    rgba.save(folder / "clear.png")
    assert np.asarray(load_image(str(folder / "clear.png"))).min() == 255  # fully transparent -> white
    assert tuple(np.asarray(load_image(str(folder / "2.gif")))[0, 0]) != (0, 0, 255)  # frame 0, not the blue frame 1
    m = walk_headers(folder / "data-0000.tar")
    k = m.names.index("3.jpg")
    from_tar = np.asarray(load_image(ImageRef(str(folder / "data-0000.tar"), "3.jpg", m.offsets[k], m.sizes[k])))
    assert from_tar.shape == (70, 70, 3) and not (folder / "3.jpg").exists()  # never extracted to disk


def test_killed_encoder_restarts_to_an_identical_dataset(encoded, tmp_path, monkeypatch):
    manifest, reference, cfg = encoded
    out = tmp_path / "latents"
    calls = []

    def crash_at_third_shard(root, k, latents, record):
        calls.append(k)
        if len(calls) == 3:
            raise KeyboardInterrupt("simulated kill")
        return shards_module.write_shard(root, k, latents, record)

    monkeypatch.setattr(encode_module, "write_shard", crash_at_third_shard)
    with pytest.raises(KeyboardInterrupt):
        encode(manifest, out, cfg)
    assert sorted(p.name for p in (out / "shards").glob("*.json")) == ["000000.json", "000001.json"]
    (out / "shards" / "000002.npy").write_bytes(b"torn")           # a shard file without its record
    (out / "shards" / ".000003.npy.x1y2.tmp").write_bytes(b"tmp")  # a temp file of an interrupted write
    monkeypatch.setattr(encode_module, "write_shard", shards_module.write_shard)
    written = count_writes(monkeypatch)
    encode(manifest, out, cfg)
    assert written == [2, 3, 4, 5, 6]  # finished shards 0 and 1 were not redone
    assert dataset_files(out) == dataset_files(reference)


def test_two_ranks_encode_disjoint_shards_into_the_same_dataset(encoded, tmp_path, monkeypatch):
    manifest, reference, cfg = encoded
    out = tmp_path / "latents"
    written = count_writes(monkeypatch)
    assert encode(manifest, out, latent_cfg(cfg.vae_path, workers=2), rank=1, world_size=2)["encoded"] is None
    rank1 = list(written)
    written.clear()
    encode(manifest, out, cfg, rank=0, world_size=2)  # rank 0 finishes last and writes the index
    assert rank1 == [1, 3, 5] and written == [0, 2, 4, 6]
    assert dataset_files(out) == dataset_files(reference)


def test_verify_names_a_corrupted_shard_and_encode_reencodes_only_it(encoded, tmp_path, monkeypatch, capsys):
    manifest, reference, cfg = encoded
    out = tmp_path / "latents"
    shutil.copytree(reference, out)
    data = bytearray((out / "shards" / "000005.npy").read_bytes())
    data[-1] ^= 0xFF  # one latent value changes; the file still loads
    (out / "shards" / "000005.npy").write_bytes(bytes(data))
    assert verify_main(argparse.Namespace(dir=str(out))) == 1
    assert "shard 5: checksum mismatch" in capsys.readouterr().out
    written = count_writes(monkeypatch)
    encode(manifest, out, cfg)
    assert written == [5]
    assert verify_main(argparse.Namespace(dir=str(out))) == 0
    assert dataset_files(out) == dataset_files(reference)


def test_verify_names_a_missing_shard(encoded, tmp_path, capsys):
    out = tmp_path / "latents"
    shutil.copytree(encoded[1], out)
    (out / "shards" / "000002.npy").unlink()
    assert verify_main(argparse.Namespace(dir=str(out))) == 1
    assert "shard 2:" in capsys.readouterr().out


def test_resuming_with_a_different_config_is_an_error(encoded, tmp_path):
    manifest, reference, cfg = encoded
    out = tmp_path / "latents"
    shutil.copytree(reference, out)
    with pytest.raises(ValueError, match="shard_size"):
        encode(manifest, out, latent_cfg(cfg.vae_path, shard_size=3))
    before = {f.name: f.read_bytes() for f in (out / "shards").iterdir()}
    (out / "plan.json").write_text("{garbage")
    with pytest.raises(ValueError, match=r"plan.json is damaged .* use a new --out folder, or delete"):
        encode(manifest, out, latent_cfg(cfg.vae_path))
    assert {f.name: f.read_bytes() for f in (out / "shards").iterdir()} == before   # nothing written over


class NaNVAE:
    name, source, scaling_factor, device = "nan", "test", 1.0, torch.device("cpu")

    def encode(self, x):
        z = torch.zeros(x.shape[0], 4, x.shape[2] // 8, x.shape[3] // 8)
        z[-1, 0, 0, 0] = float("nan")
        return z


def test_non_finite_latent_is_an_error_naming_the_shard_and_image(encoded, tmp_path, monkeypatch):
    manifest, _, cfg = encoded
    monkeypatch.setattr(encode_module, "load_vae", lambda *a, **k: NaNVAE())
    with pytest.raises(NonFiniteLatentError, match=r"shard 0: .*image id\(s\) \[6\]"):
        encode(manifest, tmp_path / "latents", cfg)


def test_manifest_without_required_columns_is_a_clear_error(tmp_path, taesdxl_path):
    pq.write_table(pa.table({"id": [1], "width": [64]}), tmp_path / "manifest.parquet")
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['path', 'height'\]"):
        encode(tmp_path, tmp_path / "out", latent_cfg(taesdxl_path))


def test_cli_vae_flag_sets_backend_path_scaling_factor_and_torchrun_rank(monkeypatch, tmp_path):
    from vampdiffusion.cli import main
    seen = {}

    def fake_encode(manifest, out, cfg, device, rank, world_size):
        seen.update(cfg=cfg, rank=rank, world_size=world_size)
        return {"shards": 0, "encoded": 0, "skipped": 0, "skipped_by_reason": {}}

    monkeypatch.setattr(encode_module, "encode", fake_encode)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["data", "encode", "--manifest", "m", "--out", str(tmp_path), "--vae", "taesdxl", "--vae-path", "/w"]) == 0
    cfg = seen["cfg"]
    assert (cfg.vae, cfg.vae_path, cfg.scaling_factor, seen["rank"], seen["world_size"]) == ("taesdxl", "/w", 1.0, 1, 2)


def test_cli_missing_manifest_exits_non_zero_naming_it(tmp_path, capsys):
    from vampdiffusion.cli import main
    assert main(["data", "encode", "--manifest", str(tmp_path / "nope"), "--out", str(tmp_path / "out")]) == 2
    assert f"manifest {tmp_path / 'nope'} not found" in capsys.readouterr().err


SLOW_ENCODER = """
import sys, time
from vampdiffusion.config import LatentConfig
from vampdiffusion.latents import encode, shards

def slow_write(*args):
    record = shards.write_shard(*args)
    time.sleep(0.5)  # leave the test time to kill us between (and during) shard writes
    return record

encode.write_shard = slow_write
encode.encode(sys.argv[1], sys.argv[2], LatentConfig(**eval(sys.argv[3])))
"""


@pytest.mark.slow
def test_sigkilled_encoder_process_restarts_to_an_identical_dataset(encoded, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time
    manifest, reference, cfg = encoded
    out = tmp_path / "latents"
    values = {k: getattr(cfg, k) for k in ("vae", "vae_path", "scaling_factor", "resolution", "bucket_step",
                                           "buckets", "shard_size", "batch_size", "workers")}
    proc = subprocess.Popen([sys.executable, "-c", SLOW_ENCODER, str(manifest), str(out), repr(values)])
    deadline = time.time() + 300
    while len(list((out / "shards").glob("*.json"))) < 3 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "shards.json").exists()  # killed before the end
    encode(manifest, out, cfg)
    assert dataset_files(out) == dataset_files(reference)
