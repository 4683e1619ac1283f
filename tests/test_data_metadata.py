"""Posts metadata as the releases ship it: parquet with other column names, and the metadata database's SQLite."""

import json
import sqlite3
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq

from layouts import build, post_record

from vampdiffusion.config import load_config
from vampdiffusion.data.danbooru import read_posts
from vampdiffusion.data.prepare import prepare

QUIET = dict(log=lambda *a: None)


def test_parquet_alias_columns_are_mapped_and_the_mapping_is_said(tmp_path):
    rows = [post_record(i, "jpg") for i in (10, 11)]
    for r in rows:
        r["width"], r["height"] = r.pop("image_width"), r.pop("image_height")
        r["rating"] = "general"                                                   # a word, not the letter
    table = pa.Table.from_pylist(rows)
    table = table.set_column(table.column_names.index("created_at"), "created_at",
                             pa.array([1_600_000_000, 1_700_000_000], pa.timestamp("s")))
    pq.write_table(table, tmp_path / "metadata.parquet")
    notes, bad = [], Counter()
    posts = list(read_posts(tmp_path / "metadata.parquet", bad, notes))
    assert [(p.id, p.width, p.height, p.rating, p.year) for p in posts] == [(10, 64, 64, "g", 2020), (11, 64, 64, "g", 2023)]
    assert notes == ["metadata.parquet: columns read as width -> image_width, height -> image_height"] and not bad


def metadata_db(path, posts: list[dict], relation_table: bool) -> None:
    """A tiny database in the metadata database's own schema (ratings 0-3, tag types 0-4)."""
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE tag (id INTEGER PRIMARY KEY, name TEXT, type INTEGER, popularity INTEGER)")
    tags = {"1girl": (1, 0), "solo": (2, 0), "smile": (3, 0), "long_hair": (4, 0), "blue_eyes": (5, 0),
            "some_artist": (6, 1), "hatsune_miku": (7, 2), "vocaloid": (8, 3), "highres": (9, 4)}
    con.executemany("INSERT INTO tag VALUES (?, ?, ?, 0)", [(i, n, t) for n, (i, t) in tags.items()])
    cols = "id INTEGER PRIMARY KEY, created_at TEXT, md5 TEXT, file_ext TEXT, image_width INTEGER, " \
           "image_height INTEGER, rating INTEGER, score INTEGER, up_score INTEGER, down_score INTEGER, " \
           "is_deleted INTEGER, is_banned INTEGER"
    lists = ", tag_list_general TEXT, tag_list_artist TEXT, tag_list_character TEXT, tag_list_copyright TEXT, " \
            "tag_list_meta TEXT"
    con.execute(f"CREATE TABLE post ({cols}{'' if relation_table else lists})")
    if relation_table:
        con.execute("CREATE TABLE posttagrelation (id INTEGER PRIMARY KEY, post_id INTEGER, tag_id INTEGER)")
    for p in posts:
        values = [p["id"], p["created_at"], "", p["file_ext"], 64, 64, p["rating"], p["score"], p["score"], 0, 0, 0]
        names = [n for n in p["tags"]]
        if relation_table:
            con.execute("INSERT INTO post VALUES (" + ",".join("?" * len(values)) + ")", values)
            con.executemany("INSERT INTO posttagrelation (post_id, tag_id) VALUES (?, ?)",
                            [(p["id"], tags[n][0]) for n in names])
        else:
            def field(kind):
                return "".join(f"${tags[n][0]:x}#" for n in names if tags[n][1] == kind)  # base 36 (< 10: same)
            con.execute("INSERT INTO post VALUES (" + ",".join("?" * (len(values) + 5)) + ")",
                        values + [field(k) for k in range(5)])
    con.commit()
    con.close()


POSTS = [{"id": 3, "created_at": "2021-02-03T04:05:06", "file_ext": "png", "rating": 1, "score": 5,
          "tags": ["1girl", "solo", "smile", "some_artist", "hatsune_miku", "vocaloid", "highres"]},
         {"id": 4, "created_at": "2022-02-03T04:05:06", "file_ext": "jpg", "rating": 3, "score": 9,
          "tags": ["1girl", "long_hair", "blue_eyes"]}]


def test_the_metadata_database_is_read_with_its_own_numbers(tmp_path):
    for relation_table in (True, False):
        db = tmp_path / f"danbooru2023_{relation_table}.db"
        metadata_db(db, POSTS, relation_table)
        notes, bad = [], Counter()
        posts = {p.id: p for p in read_posts(db, bad, notes)}
        assert not bad and "SQLite" in notes[0]
        assert (posts[3].rating, posts[4].rating) == ("s", "e")             # 1 sensitive, 3 explicit
        assert posts[3].n_general == 3 and set(posts[3].tags) == set(POSTS[0]["tags"])  # type 2 = character
        assert posts[4].n_general == 3 and posts[3].year == 2021


def test_prepare_reads_the_database_with_its_images(tmp_path):
    built = build("danbooru2023", tmp_path / "d", [3, 4])
    db = tmp_path / "danbooru2023.db"
    metadata_db(db, [dict(p, file_ext="jpg") for p in POSTS], relation_table=True)
    cfg = load_config("tiny", ["data.vocab_min_count=1", "data.min_general_tags=1", "data.min_score_tag=0"])
    report = prepare(cfg, db, built.root, tmp_path / "out", image_index=built.index_dir, **QUIET)
    assert report["kept"] == 2 and "SQLite" in report["posts_read_as"][0]
    assert json.loads((tmp_path / "out" / "report.json").read_text())["ratings"] == {"e": 1, "s": 1}
