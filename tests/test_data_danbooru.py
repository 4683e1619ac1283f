import gzip
import json
import math
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from vampdiffusion.data.danbooru import parse_post, read_posts


def record(**over):
    """A post in the current Danbooru API schema, every field the pipeline reads."""
    r = {"id": 4321, "md5": "0123456789abcdef0123456789abcdef", "file_ext": "png", "image_width": 1024,
         "image_height": 1536, "score": 57, "up_score": 60, "down_score": -3, "fav_count": 80, "rating": "g",
         "created_at": "2021-07-04T12:00:00.000-04:00", "tag_string": "1girl artist_x original solo highres",
         "tag_string_general": "1girl solo", "tag_string_character": "", "tag_string_copyright": "original",
         "tag_string_artist": "artist_x", "tag_string_meta": "highres", "is_deleted": False, "is_banned": False,
         "parent_id": None, "unknown_field": {"ignored": True}}
    r.update(over)
    return r


def test_parse_current_schema_record():
    p = parse_post(record())
    assert (p.id, p.score, p.year, p.rating, p.width, p.height, p.file_ext) == (4321, 57, 2021, "g", 1024, 1536, "png")
    assert p.n_general == 2 and sorted(p.tags) == ["1girl", "artist_x", "highres", "original", "solo"]
    assert math.isnan(p.aesthetic) and p.parent_id == -1


def test_parse_old_schema_record_with_string_numbers_and_tag_objects():
    old = {"id": "77", "md5": "0123456789ABCDEF0123456789ABCDEF", "file_ext": "jpg", "image_width": "800",
           "image_height": "600", "score": "12", "rating": "s", "created_at": "2016-01-02 03:04:05.6 UTC",
           "tags": [{"name": "solo", "category": "0"}, {"name": "hatsune_miku", "category": "4"},
                    {"name": "Smile", "category": "0"}], "is_deleted": "false"}
    p = parse_post(old)
    assert (p.id, p.score, p.year, p.rating, p.width) == (77, 12, 2016, "s", 800)
    assert p.md5 == "0123456789abcdef0123456789abcdef" and p.n_general == 2 and "hatsune_miku" in p.tags


def test_rating_words_of_both_schemes_map_to_letters():
    assert [parse_post(record(rating=r)).rating for r in ("general", "safe", "sensitive", "questionable", "explicit", "x")] \
        == ["g", "s", "s", "q", "e", "?"]


def test_score_falls_back_to_up_and_down_votes():
    assert parse_post(record(score=None, up_score=10, down_score=-4)).score == 6


def test_unusable_records_give_their_reason():
    assert parse_post([1, 2]) == "not_an_object"
    assert parse_post(record(id=None)) == "missing_id"
    assert parse_post(record(id="abc")) == "bad_id"
    assert parse_post(record(is_deleted=True)) == "deleted"
    assert parse_post(record(is_banned="true")) == "banned"
    assert parse_post(record(score=None, up_score=None)) == "missing_score"
    assert parse_post(record(created_at="yesterday")) == "missing_created_at"


def test_epoch_created_at_and_missing_optional_fields_are_tolerated():
    p = parse_post({"id": 5, "score": 1, "created_at": 1_600_000_000})
    assert p.year == 2020 and p.tags == [] and p.md5 == "" and p.width == 0 and p.rating == "?"


def _lines(n=5):
    return [json.dumps(record(id=i + 1, score=i)) for i in range(n)]


def test_json_lines_with_malformed_lines_are_counted_and_skipped(tmp_path):
    p = tmp_path / "posts.jsonl"
    lines = _lines()
    p.write_text("\n".join(lines[:2] + ['{"id": 9, "score":', "garbage", ""] + lines[2:]) + "\n")
    bad = Counter()
    assert [x.id for x in read_posts(p, bad)] == [1, 2, 3, 4, 5]
    assert bad == Counter(malformed_json=2)


def test_json_array_gzip_and_zstd_and_parquet_inputs_give_the_same_posts(tmp_path):
    recs = [record(id=i + 1, score=i) for i in range(300)]
    arr = tmp_path / "posts.json"
    arr.write_text("[\n" + ",\n".join(json.dumps(r) for r in recs) + "\n]")
    gz = tmp_path / "posts.jsonl.gz"
    gz.write_bytes(gzip.compress("\n".join(json.dumps(r) for r in recs).encode()))
    zst = tmp_path / "posts.json.zst"
    zst.write_bytes(zstandard.ZstdCompressor().compress(arr.read_bytes()))
    pqf = tmp_path / "posts.parquet"
    pq.write_table(pa.Table.from_pylist([{k: v for k, v in r.items() if k != "unknown_field"} for r in recs]), pqf)
    want = list(range(1, 301))
    for f in (arr, gz, zst, pqf):
        bad = Counter()
        assert [x.id for x in read_posts(f, bad)] == want, f
        assert not bad


def test_json_array_reader_resynchronises_after_a_broken_element(tmp_path, monkeypatch):
    import vampdiffusion.data.post_files as d
    monkeypatch.setattr(d, "CHUNK_CHARS", 64)  # force records across chunk boundaries
    p = tmp_path / "posts.json"
    p.write_text("[" + json.dumps(record(id=1)) + ', {"id": 2, "score": }, ' + json.dumps(record(id=3)) + "]")
    bad = Counter()
    assert [x.id for x in read_posts(p, bad)] == [1, 3]
    assert bad["malformed_json"] == 1


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=400))
def test_ingest_never_raises_on_arbitrary_bytes(tmp_path_factory, data):
    p = tmp_path_factory.mktemp("h") / "posts.bin"
    p.write_bytes(data)
    bad = Counter()
    posts = list(read_posts(p, bad))
    assert all(x.id > 0 for x in posts)


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                           lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
                           max_leaves=8)
fields = st.sampled_from(["id", "score", "created_at", "md5", "tag_string_general", "tags", "rating",
                          "image_width", "is_deleted", "up_score", "down_score", "aesthetic", "file_ext"])


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(fields, json_values, max_size=10) | json_values)
def test_parse_post_never_raises_on_arbitrary_json_values(value):
    p = parse_post(value)
    assert isinstance(p, str) or (p.id > 0 and isinstance(p.tags, list))
