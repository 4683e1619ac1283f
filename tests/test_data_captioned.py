"""A plain captioned folder (<name>.<ext> + <name>.txt [+ <name>.json]) through prepare."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from vampdiffusion.cli import main
from vampdiffusion.config import load_config
from vampdiffusion.data.captioned import caption_id, caption_tags
from vampdiffusion.data.prepare import prepare

QUIET = dict(log=lambda *a: None)
TAGS = "1girl, long hair, red eyes, smile, outdoors, sky, cloud, tree"


def picture(path, seed: int, side: int = 96) -> None:
    rng = np.random.default_rng(seed)
    Image.fromarray((rng.random((side, side, 3)) * 255).astype(np.uint8)).save(path)


def captioned_folder(root, n: int = 12, sidecar: bool = False):
    (root / "sub").mkdir(parents=True)
    for i in range(n):
        folder = root / ("sub" if i % 2 else "")
        picture(folder / f"img{i}.png", i)
        (folder / f"img{i}.txt").write_text(TAGS if i % 3 else TAGS.replace(" ", "_").replace(",_", " "))
        if sidecar:
            (folder / f"img{i}.json").write_text(json.dumps({"aesthetic": 4.0 + i / 2, "rating": "g"}))
    picture(root / "no_caption.png", 99)                                  # no .txt: not part of the set
    return root


def test_caption_text_is_split_on_commas_or_spaces_into_danbooru_names():
    assert caption_tags("1girl, long hair ,Red Eyes") == ["1girl", "long_hair", "red_eyes"]
    assert caption_tags("1girl long_hair red_eyes") == ["1girl", "long_hair", "red_eyes"]
    assert caption_id("a/b.png") == caption_id("a/b.png") != caption_id("a/c.png") and caption_id("a/b.png") > 0


def test_a_captioned_folder_prepares_without_scores(tmp_path):
    folder = captioned_folder(tmp_path / "mine")
    cfg = load_config("tiny", ["data.vocab_min_count=1", "data.eval_fraction=0"])
    report = prepare(cfg, [], [], tmp_path / "out", captioned=[folder], **QUIET)
    m = pq.read_table(tmp_path / "out" / "manifest.parquet").to_pydict()
    assert report["kept"] == 12 and len(m["id"]) == 12                    # every captioned image, not the extra one
    stage2 = report["stages"][2]
    assert stage2["status"] == "SKIPPED" and "no post has a score" in stage2["note"]
    assert set(m["quality"]) == {cfg.data.unscored_tier}                   # no score, no aesthetic: the documented tier
    assert all("long_hair" in t.split() and "red_eyes" in t.split() for t in m["tags"])


def test_without_scores_the_tier_follows_the_aesthetic_rank(tmp_path):
    folder = captioned_folder(tmp_path / "mine", sidecar=True)
    cfg = load_config("tiny", ["data.vocab_min_count=1", "data.eval_fraction=0", "data.min_aesthetic=0"])
    prepare(cfg, [], [], tmp_path / "out", captioned=[folder], **QUIET)
    m = pq.read_table(tmp_path / "out" / "manifest.parquet").to_pydict()
    order = np.argsort(m["aesthetic"])
    tiers = np.asarray(m["quality"])[order]
    assert tiers[0] == 0 and tiers[-1] == 3 and (np.diff(tiers) >= 0).all()   # rises with the aesthetic value


def test_the_cli_prepares_a_captioned_folder(tmp_path, capsys):
    folder = captioned_folder(tmp_path / "mine")
    rc = main(["data", "prepare", "--config", "tiny", "--set", "data.vocab_min_count=1", "--captioned", str(folder),
               "--out", str(tmp_path / "out")])
    assert rc == 0 and (tmp_path / "out" / "manifest.parquet").is_file()
    assert main(["data", "prepare", "--posts", str(tmp_path / "x.jsonl"), "--out", str(tmp_path / "o2")]) == 2
    assert "--posts and --images go together" in capsys.readouterr().err


def test_prepare_refuses_posts_without_images_and_images_without_posts(tmp_path):
    cfg = load_config("tiny")
    (tmp_path / "posts.jsonl").write_text("")
    (tmp_path / "images").mkdir()
    mine = captioned_folder(tmp_path / "mine")
    for posts, images in (([tmp_path / "posts.jsonl"], []), ([], [tmp_path / "images"])):
        with pytest.raises(ValueError, match="--posts and --images go together"):
            prepare(cfg, posts, images, tmp_path / "out", captioned=[mine], **QUIET)
    assert not (tmp_path / "out").exists()


def test_prepare_says_when_a_posts_path_is_a_folder_or_an_image_path_a_file(tmp_path):
    cfg = load_config("tiny")
    (tmp_path / "posts.jsonl").write_text("")
    (tmp_path / "images").mkdir()
    with pytest.raises(FileNotFoundError, match=r"posts file .*images is a folder; pass --posts FILE"):
        prepare(cfg, [tmp_path / "images"], [tmp_path / "images"], tmp_path / "out", **QUIET)
    with pytest.raises(FileNotFoundError, match=r"image folder .*posts.jsonl is a file; pass --images DIR"):
        prepare(cfg, [tmp_path / "posts.jsonl"], [tmp_path / "posts.jsonl"], tmp_path / "out", **QUIET)
