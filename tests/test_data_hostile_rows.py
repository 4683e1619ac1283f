"""Damaged rows and files at prepare's boundary: counted by reason and skipped, or one line naming the problem
and the fix; a failed prepare never overwrites an earlier one's outputs."""

import json
import sqlite3
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from layouts import build
from test_data_captioned import TAGS, captioned_folder, picture

from vampdiffusion.cli import main
from vampdiffusion.config import load_config
from vampdiffusion.data.danbooru import read_posts
from vampdiffusion.data.prepare import EmptyResult, prepare

QUIET = dict(log=lambda *a: None)
LOOSE = ["data.vocab_min_count=1", "data.min_general_tags=1", "data.min_score_tag=0", "data.phash_distance=1"]
IDS = list(range(1000, 1012))


def run(built, out, *overrides, **kw):
    return prepare(load_config("tiny", LOOSE + list(overrides)), built.posts, built.root, out,
                   image_index=built.index_dir, **QUIET, **kw)


# ----------------------------------------------------------------------------
# 1. the metadata database's SQLite: rows with ids that are no integer
# ----------------------------------------------------------------------------

def damaged_db(path) -> None:
    """post and tag tables typed loosely (as SQLite allows): a post id NULL and 'abc', a tag id 'zz'."""
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE tag (id, name TEXT, type INTEGER)")
    con.executemany("INSERT INTO tag VALUES (?, ?, ?)", [(1, "1girl", 0), (2, "smile", 0), ("zz", "broken", 0),
                                                         (3, None, 0)])
    con.execute("CREATE TABLE post (id, created_at TEXT, file_ext TEXT, rating INTEGER, score INTEGER)")
    con.executemany("INSERT INTO post VALUES (?, '2021-01-01T00:00:00', 'jpg', 0, 5)", [(5,), (None,), ("abc",), (7,)])
    con.execute("CREATE TABLE posttagrelation (post_id, tag_id)")
    con.executemany("INSERT INTO posttagrelation VALUES (?, ?)",
                    [(5, 1), (5, "zz"), (None, 1), ("abc", 2), (7, 1), (7, 2)])
    con.commit()
    con.close()


def test_database_rows_with_ids_that_are_no_integer_are_counted_and_the_rest_is_read(tmp_path):
    damaged_db(tmp_path / "d.db")
    bad, notes = Counter(), []
    posts = {p.id: p for p in read_posts(tmp_path / "d.db", bad, notes)}
    assert bad == {"missing_id": 1, "bad_id": 1}
    assert posts[5].tags == ["1girl"] and sorted(posts[7].tags) == ["1girl", "smile"]
    assert "d.db: skipped bad_relation_row 2, bad_tag_row 2" in notes[-1]


def test_prepare_over_a_damaged_database_exits_0(tmp_path, capsys):
    damaged_db(tmp_path / "d.db")
    built = build("danbooru2023", tmp_path / "d", [5, 7])
    rc = main(["data", "prepare", "--config", "tiny", *sum((["--set", s] for s in LOOSE), []), "--posts",
               str(tmp_path / "d.db"), "--images", str(built.root), "--image-index", str(built.index_dir),
               "--out", str(tmp_path / "out")])
    assert rc == 0 and "Traceback" not in capsys.readouterr().err
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["kept"] == 2 and report["bad_input"] == {"bad_id": 1, "missing_id": 1}


# ----------------------------------------------------------------------------
# 2, 3. tar indexes and shards that cannot be read
# ----------------------------------------------------------------------------

def test_an_index_with_a_non_hex_sha256_is_not_used_and_the_headers_are_walked(tmp_path):
    built = build("danbooru2024", tmp_path / "d", IDS)
    index = built.root / "images" / "0003.json"
    d = json.loads(index.read_text())
    d["files"]["1003.webp"]["sha256"] = "zz" * 32
    index.write_text(json.dumps(d))
    with pytest.warns(UserWarning, match="0003.json is not a tar index .*not 64 hexadecimal digits"):
        report = run(built, tmp_path / "out")
    assert report["kept"] == len(IDS)                                    # the tar behind it read from its headers
    assert report["image_sources"]["problems"] == {"unusable_tar_index": 1}
    assert report["image_sources"]["problem_files"] == {"unusable_tar_index": [str(index)]}


def test_a_garbage_tar_is_counted_named_and_warned_about_on_every_run(tmp_path):
    built = build("danbooru2024", tmp_path / "d", IDS)
    garbage = built.root / "images" / "0999.tar"
    garbage.write_bytes(b"not a tar at all " * 100)
    for _ in range(2):                                                    # the second run reads the header cache
        with pytest.warns(UserWarning, match="0999.tar: unreadable tar data after 0 members"):
            report = run(built, tmp_path / "out")
        assert report["kept"] == len(IDS) and report["image_sources"]["problems"] == {"unreadable_tar": 1}
        assert report["image_sources"]["problem_files"] == {"unreadable_tar": [str(garbage)]}


# ----------------------------------------------------------------------------
# 4. a parquet of something else; the format list of the empty-posts error
# ----------------------------------------------------------------------------

def test_a_parquet_without_post_columns_names_the_missing_columns(tmp_path, capsys):
    pq.write_table(pa.table({"foo": [1, 2], "bar": ["a", "b"]}), tmp_path / "x.parquet")
    (tmp_path / "images").mkdir()
    rc = main(["data", "prepare", "--config", "tiny", "--posts", str(tmp_path / "x.parquet"), "--images",
               str(tmp_path / "images"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert err[0].startswith(f"vamp data prepare: posts file {tmp_path / 'x.parquet'} lacks the column(s) id, "
                             "created_at, score (its columns: foo, bar); --posts must be Danbooru posts")


def test_a_parquet_with_up_and_down_scores_needs_no_score_column(tmp_path):
    pq.write_table(pa.table({"id": [1], "created_at": ["2021-01-01"], "up_score": [3], "down_score": [-1]}),
                   tmp_path / "x.parquet")
    bad = Counter()
    assert [p.score for p in read_posts(tmp_path / "x.parquet", bad)] == [2] and not bad


def test_the_empty_posts_error_names_every_format_sqlite_included(tmp_path):
    (tmp_path / "posts.jsonl").write_text('{"name": "not a post"}\n')
    (tmp_path / "images").mkdir()
    with pytest.raises(EmptyResult, match="JSON lines, a JSON array or parquet .*or the metadata database's SQLite"):
        prepare(load_config("tiny"), tmp_path / "posts.jsonl", tmp_path / "images", tmp_path / "out", **QUIET)


# ----------------------------------------------------------------------------
# 5. data.style_clusters checked before any image is read
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [(None, FileNotFoundError), ("clusters: [a, b\n  c: : d\n", ValueError),
                                            (b"\xff\xfe\x00", ValueError)])
def test_a_missing_or_malformed_style_cluster_file_fails_before_any_image(text, expected, tmp_path, capsys):
    built = build("danbooru2024", tmp_path / "d", IDS)
    styles = tmp_path / "styles.yaml"
    if isinstance(text, str):
        styles.write_text(text)
    elif text is not None:
        styles.write_bytes(text)
    with pytest.raises(expected, match=f"style cluster file {styles}"):
        run(built, tmp_path / "out", f"data.style_clusters={styles}")
    assert not (tmp_path / "out").exists()                              # nothing read, nothing written
    rc = main(["data", "prepare", "--config", "tiny", "--set", f"data.style_clusters={styles}", "--posts",
               str(built.posts), "--images", str(built.root), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith(f"vamp data prepare: style cluster file {styles}")
    if isinstance(text, str):
        assert "is not valid YAML (line 2, column" in err[0] and "set data.style_clusters to ''" in err[0]


# ----------------------------------------------------------------------------
# 6. a failed prepare beside an earlier one
# ----------------------------------------------------------------------------

def test_a_prepare_that_keeps_nothing_leaves_the_earlier_outputs_whole(tmp_path):
    built = build("danbooru2024", tmp_path / "d", IDS)
    out = tmp_path / "out"
    run(built, out)
    before = {n: (out / n).read_bytes() for n in ("manifest.parquet", "vocab.json", "report.json", "stages.json")}
    with pytest.raises(EmptyResult, match=f"the report in {out / 'report.failed.json'}; the earlier prepare's "
                                          "manifest.parquet, vocab.json and report.json there are left as they were"):
        run(built, out, "data.min_side=4096")
    assert {n: (out / n).read_bytes() for n in before} == before
    failed = json.loads((out / "report.failed.json").read_text())
    assert failed["kept"] == 0 and "REMOVED EVERY ROW" in failed["stages"][1]["note"]
    assert json.loads((out / "stages.failed.json").read_text())[1]["out"] == 0
    run(built, out)                                                       # a later success clears the failed files
    assert not list(out.glob("*.failed.json")) and json.loads((out / "report.json").read_text())["kept"] == len(IDS)


def test_a_prepare_that_keeps_nothing_in_a_new_folder_writes_its_report_json(tmp_path):
    built = build("danbooru2024", tmp_path / "d", IDS)
    with pytest.raises(EmptyResult, match=f"the report in {tmp_path / 'out' / 'report.json'}\\)"):
        run(built, tmp_path / "out", "data.min_side=4096")
    assert json.loads((tmp_path / "out" / "report.json").read_text())["kept"] == 0
    assert not (tmp_path / "out" / "manifest.parquet").exists()


# ----------------------------------------------------------------------------
# 7. captioned folders: sidecars that are no JSON object, links out of the folder
# ----------------------------------------------------------------------------

def test_bad_sidecars_keep_their_image_and_are_counted_apart_from_removed_records(tmp_path):
    folder = captioned_folder(tmp_path / "mine", n=6)
    (folder / "img0.json").write_text("{not json")
    (folder / "img2.json").write_text("[1, 2]")
    cfg = load_config("tiny", ["data.vocab_min_count=1"])
    with pytest.warns(UserWarning, match="img0.json: not a JSON object"):
        report = prepare(cfg, [], [], tmp_path / "out", captioned=[folder], **QUIET)
    assert report["kept"] == 6 and report["bad_input"] == {}
    assert report["image_sources"]["problems"] == {"malformed_caption_json": 2}
    assert sorted(report["image_sources"]["problem_files"]["malformed_caption_json"]) == \
        [str(folder / "img0.json"), str(folder / "img2.json")]
    assert report["stages"][0]["removed"] == 0                          # a bad sidecar removes no record


def test_links_that_resolve_outside_the_captioned_folder_are_skipped_and_counted(tmp_path):
    folder = captioned_folder(tmp_path / "mine", n=6)
    picture(tmp_path / "secret.png", 7)
    (tmp_path / "secret.txt").write_text("private, words")
    (folder / "link.png").symlink_to(tmp_path / "secret.png")           # an image outside
    (folder / "link.txt").write_text(TAGS)
    picture(folder / "cap.png", 8)
    (folder / "cap.txt").symlink_to(tmp_path / "secret.txt")            # a caption outside
    picture(folder / "inner.png", 9)
    (folder / "inner.txt").symlink_to(folder / "sub" / "img1.txt")           # a caption inside: read
    cfg = load_config("tiny", ["data.vocab_min_count=1", "data.phash_distance=1"])
    report = prepare(cfg, [], [], tmp_path / "out", captioned=[folder], **QUIET)
    assert report["bad_input"] == {"outside_folder": 2} and report["kept"] == 7
    m = pq.read_table(tmp_path / "out" / "manifest.parquet").to_pydict()
    assert not any("secret" in p or p.endswith(("link.png", "cap.png")) for p in m["path"])
    assert not any("private" in t for t in m["tags"])
