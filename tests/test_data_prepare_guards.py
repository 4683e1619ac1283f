"""prepare and encode never end silently with nothing, and never trust a cached pHash for a changed file."""

import json

import pyarrow.parquet as pq
import pytest
from PIL import Image

from vampdiffusion.cli import main
from vampdiffusion.config import load_config
from vampdiffusion.data import synth
from vampdiffusion.data.phash import phash
from vampdiffusion.data.prepare import EmptyResult, prepare

QUIET = dict(log=lambda *a: None)


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("small")
    synth.synthesize(synth.SynthArgs(n=150, size=64, seed=11), root / "set")
    return root / "set"


def test_a_changed_image_is_decoded_again_not_taken_from_the_cache(small_set, tmp_path):
    cfg = load_config("tiny")
    first = prepare(cfg, small_set / "posts.jsonl", small_set, tmp_path / "out", **QUIET)
    m = pq.read_table(tmp_path / "out" / "manifest.parquet").to_pydict()
    k = next(i for i, p in enumerate(m["path"]) if p.endswith(".png"))   # lossless: the saved pixels are the drawn ones
    path, old_phash = m["path"][k], m["phash"][k]
    side = Image.open(path).size
    replacement = Image.new("RGB", side, (0, 0, 0))
    replacement.paste((255, 255, 255), (0, 0, side[0] // 2, side[1]))   # another picture, same size and name
    replacement.save(path, format=Image.open(path).format)
    again = prepare(cfg, small_set / "posts.jsonl", small_set, tmp_path / "out", **QUIET)
    assert first["images_decoded"] > 100 and again["images_decoded"] == 1      # only the changed file is read
    assert again["phash_cache_hits"] == first["images_decoded"] + first["phash_cache_hits"] - 1
    m2 = pq.read_table(tmp_path / "out" / "manifest.parquet").to_pydict()
    assert m2["phash"][m2["path"].index(path)] == phash(replacement) != old_phash


def test_a_posts_file_with_no_usable_post_is_an_error_naming_the_format(small_set, tmp_path):
    bad = tmp_path / "posts.jsonl"
    bad.write_text('{"name": "not a post"}\n' * 5)
    with pytest.raises(EmptyResult, match="no post could be parsed.*JSON lines, a JSON array or parquet"):
        prepare(load_config("tiny"), bad, small_set, tmp_path / "out", **QUIET)


def test_an_images_folder_in_no_known_layout_is_an_error_naming_the_layouts(small_set, tmp_path):
    (tmp_path / "elsewhere" / "pics").mkdir(parents=True)
    Image.new("RGB", (64, 64)).save(tmp_path / "elsewhere" / "pics" / "a.png")
    with pytest.raises(EmptyResult, match="no image of the posts could be used.*missing_image.*folder tree"):
        prepare(load_config("tiny"), small_set / "posts.jsonl", tmp_path / "elsewhere", tmp_path / "out", **QUIET)


def test_a_stage_that_removes_every_row_says_so_and_writes_no_manifest(small_set, tmp_path):
    logged = []
    with pytest.raises(EmptyResult, match="stage 1 resolution removed all .* rows; loosen data.min_side"):
        prepare(load_config("tiny", ["data.min_side=4096"]), small_set / "posts.jsonl", small_set, tmp_path / "out",
                log=logged.append)
    stages = json.loads((tmp_path / "out" / "stages.json").read_text())
    assert stages[1]["out"] == 0 and "REMOVED EVERY ROW" in stages[1]["note"]
    assert any("REMOVED EVERY ROW" in line for line in logged) and any(line.startswith("ERROR") for line in logged)
    assert not (tmp_path / "out" / "manifest.parquet").exists()


def test_the_cli_exits_non_zero_on_an_empty_result(small_set, tmp_path, capsys):
    rc = main(["data", "prepare", "--config", "tiny", "--set", "data.min_side=4096", "--posts",
               str(small_set / "posts.jsonl"), "--images", str(small_set), "--out", str(tmp_path / "out")])
    assert rc == 2 and "no post survived the filters" in capsys.readouterr().err


def test_encode_that_writes_no_latent_is_an_error(small_set, tmp_path, taesdxl_path):
    from vampdiffusion.latents.encode import encode
    prepare(load_config("tiny"), small_set / "posts.jsonl", small_set, tmp_path / "prepared", **QUIET)
    for p in (small_set / "original").rglob("*.*"):
        p.rename(p.with_name(p.name + ".gone"))                       # every image the manifest names is gone
    try:
        cfg = load_config("tiny", [f"latents.vae_path={taesdxl_path}"]).latents
        with pytest.raises(ValueError, match="no image of the manifest could be encoded \\(missing_image"):
            encode(tmp_path / "prepared", tmp_path / "latents", cfg)
        report = json.loads((tmp_path / "latents" / "encode_report.json").read_text())
        assert report["encoded"] == 0 and report["skipped"] > 0
        assert not (tmp_path / "latents" / "index.parquet").exists()
    finally:
        for p in (small_set / "original").rglob("*.gone"):
            p.rename(p.with_name(p.name.removesuffix(".gone")))
