"""prepare reads the Danbooru downloads as they are published: every image found in each layout, a wrong index,
a missing member and a corrupt member counted per layout; an index read is a seek, not a scan."""

import json

import pyarrow.parquet as pq
import pytest

from layouts import build

from vampdiffusion.config import load_config
from vampdiffusion.data.images import TarImages, open_source
from vampdiffusion.data.prepare import prepare

QUIET = dict(log=lambda *a: None)
IDS = list(range(1000, 1040)) + list(range(6000, 6030))          # original/ and recent/ (2023), all in 2024


def run(built, tmp_path, **kw):
    cfg = load_config("tiny", ["data.vocab_min_count=1", "data.min_general_tags=1", "data.min_score_tag=0",
                               "data.phash_distance=1"])
    report = prepare(cfg, built.posts, built.root, tmp_path / "out", image_index=built.index_dir, **QUIET, **kw)
    return report, pq.read_table(tmp_path / "out" / "manifest.parquet").to_pydict()


@pytest.mark.parametrize("layout", ["danbooru2023", "danbooru2023-webp", "danbooru2024"])
def test_every_image_of_the_layout_is_found(layout, tmp_path):
    built = build(layout, tmp_path / layout, IDS)
    report, m = run(built, tmp_path)
    assert sorted(m["id"]) == IDS and report["usable"] == len(IDS)
    assert all(p.endswith(".tar") for p in m["path"]) and all(o > 0 for o in m["offset"])
    assert all(len(h) == 64 for h in m["sha256"])                        # the index was read, with its digests
    assert report["image_sources"]["problems"] == {}


@pytest.mark.parametrize("layout", ["danbooru2023", "danbooru2023-webp", "danbooru2024"])
def test_missing_and_corrupt_members_are_counted_and_a_wrong_index_is_not_used(layout, tmp_path):
    wrong = "images/0003.tar" if layout == "danbooru2024" else (
        "images/data-0003.tar" if layout == "danbooru2023-webp" else "original/data-0003.tar")
    built = build(layout, tmp_path / layout, IDS, missing={1001, 6002}, corrupt={1005, 6007}, wrong_index=wrong)
    report, m = run(built, tmp_path)
    assert report["bad_input"]["missing_image"] == 2 and report["bad_input"]["corrupt_image"] == 2
    assert sorted(m["id"]) == sorted(set(IDS) - {1001, 6002, 1005, 6007})
    assert report["image_sources"]["problems"] == {"unusable_tar_index": 1}
    row = m["id"].index(1003)                                            # the tar behind the wrong index: headers
    assert m["path"][row].endswith(wrong) and m["sha256"][row] == ""


@pytest.mark.parametrize("layout", ["danbooru2023", "danbooru2023-webp"])
def test_update_shards_replace_the_original_image(layout, tmp_path):
    built = build(layout, tmp_path / layout, IDS, updated={1010, 6020})
    _, m = run(built, tmp_path)
    for i in (1010, 6020):
        assert f"/updates/2024-06/data-{i % 10}.tar" in m["path"][m["id"].index(i)]
    assert "/updates/" not in m["path"][m["id"].index(1011)]


def test_two_releases_at_once_read_each_post_once(tmp_path):
    old = build("danbooru2023", tmp_path / "d2023", IDS[:50])
    new = build("danbooru2024", tmp_path / "d2024", IDS[30:])
    cfg = load_config("tiny", ["data.vocab_min_count=1", "data.min_general_tags=1", "data.min_score_tag=0",
                               "data.phash_distance=1"])
    report = prepare(cfg, [old.posts, new.posts], [old.root, new.root], tmp_path / "out", image_index=old.index_dir,
                     **QUIET)
    m = pq.read_table(tmp_path / "out" / "manifest.parquet").to_pydict()
    assert sorted(m["id"]) == IDS and report["posts_replaced_by_later_file"] == 20
    assert all("d2024" in m["path"][m["id"].index(i)] for i in IDS[30:])   # the later folder's image wins
    assert "posts: posts.jsonl 30, metadata.parquet 40 (20 replaced by a later file); images: d2023 30, d2024 40" \
        in report["stages"][0]["note"]
    assert report["image_sources"]["problems"] == {}                    # each release's indexes found and used
    assert all(len(h) == 64 for h in m["sha256"])


def test_without_an_index_the_headers_are_walked_once_and_cached(tmp_path):
    built = build("danbooru2023", tmp_path / "d", IDS)
    cache = tmp_path / "cache"
    first = TarImages(built.root, None, cache)                          # no index beside the tars
    assert all(m.source == "headers" for m in first.members)
    assert len(list(cache.glob("*.json"))) == len(first.shards)
    again = open_source(built.root, None, cache)
    ref = again.locate(1004, "jpg")
    assert (ref.member, ref.offset) == ("1004.jpg", first.locate(1004, "jpg").offset)
    assert json.loads(next(cache.glob("*.json")).read_text())["names"]
