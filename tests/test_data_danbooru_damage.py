"""Damaged posts files: every good record kept, every bad one counted, nothing raised."""

import gzip
import hashlib
import json
import math
import zlib
from collections import Counter
from unittest import mock

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from vampdiffusion.data import post_files as danbooru  # the file readers
from vampdiffusion.data.danbooru import parse_post, read_posts

# ----------------------------------------------------------------------------
# JSON array: one damaged byte
# ----------------------------------------------------------------------------

# strings that trouble a resynchronising scanner: brackets, quotes, escapes, non-ASCII
texts = st.text(st.sampled_from(list('ab{}[]",:\\/ \n\té日\U0001f600')), max_size=8)
nested = st.recursive(st.integers() | texts, lambda c: st.lists(c, max_size=2) | st.dictionaries(st.just("a"), c),
                      max_leaves=4)


@st.composite
def api_posts(draw):
    """Posts shaped like the Danbooru API's: nested objects and lists (media_asset.variants, Danbooru2021
    tag objects), ids 1..n."""
    return [{"id": i + 1, "score": draw(st.integers(-100, 10**6)), "created_at": "2021-07-04T12:00:00.000-04:00",
             "tag_string_general": draw(texts),
             "media_asset": {"id": 10**6 + i, "variants": [{"type": draw(texts), "url": draw(texts)}] * draw(st.integers(0, 2))},
             "tags": [{"name": draw(texts), "category": "0"}] * draw(st.integers(0, 2)), "extra": draw(nested)}
            for i in range(draw(st.integers(2, 5)))]


@st.composite
def json_array(draw):
    """(posts, the file's bytes, for each byte the index of the post it belongs to or None)."""
    posts = draw(api_posts())
    seps = draw(st.sampled_from([(",", ":"), (", ", ": ")]))
    ascii_only = draw(st.booleans())
    parts = [json.dumps(p, separators=seps, ensure_ascii=ascii_only).encode() for p in posts]
    glue = draw(st.sampled_from([b",", b", ", b",\n"]))
    data, owner = bytearray(b"["), [None]
    for k, part in enumerate(parts):
        if k:
            data += glue
            owner += [None] * len(glue)
        data += part
        owner += [k] * len(part)
    return posts, data + b"]", owner + [None]


def _read_damaged(tmp_path_factory, data, chunk):
    p = tmp_path_factory.mktemp("arr") / "posts.json"
    p.write_bytes(bytes(data))
    bad = Counter()
    with mock.patch.object(danbooru, "CHUNK_CHARS", chunk):  # small chunks: records cut across reads
        return list(read_posts(p, bad)), bad


@settings(max_examples=100, deadline=None)
@given(json_array(), st.data(), st.sampled_from([7, 64, 1 << 20]))
def test_a_damaged_record_in_a_json_array_costs_that_record_only(tmp_path_factory, arr, data, chunk):
    """A byte that carries no structure (not a quote, backslash or bracket) turned into a control
    character: exactly the record holding it is lost and counted once; damage between records costs none."""
    posts, raw, owner = arr
    spared = [i for i in range(1, len(raw) - 1) if raw[i] not in b'"\\{}[]']
    at = spared[data.draw(st.integers(0, len(spared) - 1))]
    raw[at] = data.draw(st.sampled_from([0x00, 0x01, 0x07, 0x0B, 0x0C, 0x1B, 0x1F]))
    got, bad = _read_damaged(tmp_path_factory, raw, chunk)
    assert [x.id for x in got] == [p["id"] for k, p in enumerate(posts) if k != owner[at]]
    assert bad == Counter(malformed_json=1)


def _subsequence(want, got):
    it = iter(got)
    return all(any(w == g for g in it) for w in want)


@settings(max_examples=100, deadline=None)
@given(json_array(), st.data(), st.sampled_from([7, 64, 1 << 20]))
def test_any_damaged_byte_in_a_json_array_loses_no_other_record(tmp_path_factory, arr, data, chunk):
    """Any byte turned into any other, quotes and brackets included: every other record is still read
    (in order), at most one more post appears (the damaged record, changed), and whatever is not read as
    a post is counted."""
    posts, raw, owner = arr
    at = data.draw(st.integers(1, len(raw) - 2))
    raw[at] = data.draw(st.integers(0, 255))
    got, bad = _read_damaged(tmp_path_factory, raw, chunk)
    key = lambda p: (p.id, p.score, p.tags)
    want = [key(parse_post(p)) for k, p in enumerate(posts) if k != owner[at]]
    assert _subsequence(want, [key(x) for x in got])
    assert len(got) <= len(want) + 1
    assert len(got) + sum(bad.values()) >= len(posts)


def test_a_broken_record_inside_nested_lists_does_not_end_the_array(tmp_path):
    rec = lambda i: {"id": i, "score": 1, "created_at": "2020-01-01",
                     "media_asset": {"variants": [{"type": "180x180"}, {"type": "720x720"}]},
                     "tags": [{"name": "solo", "category": "0"}]}
    broken = json.dumps(rec(2)).replace('"720x720"', '"720x720" "oops"')
    p = tmp_path / "posts.json"
    p.write_text("[" + ", ".join([json.dumps(rec(1)), broken] + [json.dumps(rec(i)) for i in range(3, 8)]) + "]")
    bad = Counter()
    assert [x.id for x in read_posts(p, bad)] == [1, 3, 4, 5, 6, 7]
    assert bad == Counter(malformed_json=1)


def test_a_record_longer_than_max_record_chars_is_counted_and_skipped_in_step(tmp_path):
    rec = lambda i, n: {"id": i, "score": 1, "created_at": "2020-01-01", "tags": [{"name": "x" * 9}] * n}
    p = tmp_path / "posts.json"
    p.write_text(json.dumps([rec(1, 1), rec(2, 40), rec(3, 1), rec(4, 2)]))
    bad = Counter()
    with mock.patch.object(danbooru, "MAX_RECORD_CHARS", 300), mock.patch.object(danbooru, "CHUNK_CHARS", 16):
        assert [x.id for x in read_posts(p, bad)] == [1, 3, 4]
    assert bad == Counter(malformed_json=1)


def test_arrays_back_to_back_are_read_as_one_and_an_unclosed_array_is_counted(tmp_path):
    p = tmp_path / "posts.json"
    page = lambda ids: "[" + ",".join(json.dumps({"id": i, "score": 0, "created_at": "2020-01-01"}) for i in ids)
    p.write_text(page([1, 2]) + "]\n" + page([3, 4]) + "]" + page([5]))
    bad = Counter()
    assert [x.id for x in read_posts(p, bad)] == [1, 2, 3, 4, 5]
    assert bad == Counter(malformed_json=1)  # the last page never closes


# ----------------------------------------------------------------------------
# Compressed streams: damage counted, what came before it kept
# ----------------------------------------------------------------------------

def _rec(i):  # (the md5 keeps it from compressing to nothing)
    return {"id": i + 1, "score": i, "created_at": "2020-01-01", "md5": hashlib.md5(str(i).encode()).hexdigest()}


def _lines(n):
    return b"".join(json.dumps(_rec(i)).encode() + b"\n" for i in range(n))


def _complete_ids(prefix: bytes):
    """Ids of the records whose line is whole in a decompressed prefix, and whether a partial one ends it."""
    *whole, rest = prefix.split(b"\n")
    return [json.loads(line)["id"] for line in whole], bool(rest)


def _read_with_warning(path):
    bad = Counter()
    with pytest.warns(UserWarning, match="ends early or is corrupt"):
        ids = [x.id for x in read_posts(path, bad)]
    return ids, bad


@pytest.mark.parametrize("cut", [0.3, 0.7, 0.999])
def test_truncated_zstd_is_counted_and_keeps_the_records_before_the_cut(tmp_path, cut):
    comp = zstandard.ZstdCompressor().compress(_lines(6000))
    cut_at = int(len(comp) * cut)
    p = tmp_path / "posts.jsonl.zst"
    p.write_bytes(comp[:cut_at])
    want, partial = _complete_ids(zstandard.ZstdDecompressor().decompressobj().decompress(comp[:cut_at]))
    ids, bad = _read_with_warning(p)
    assert ids == want and len(want) > 0
    assert bad == Counter(corrupt_posts_file=1, malformed_json=int(partial))


def test_corrupt_zstd_is_counted_and_all_frames_of_a_good_one_are_read(tmp_path):
    cctx = zstandard.ZstdCompressor(write_checksum=True)
    frames = cctx.compress(_lines(50)) + cctx.compress(_lines(80)[len(_lines(50)):])  # two frames: ids 1..80
    p = tmp_path / "posts.jsonl.zst"
    p.write_bytes(frames)
    bad = Counter()
    assert [x.id for x in read_posts(p, bad)] == list(range(1, 81)) and not bad
    p.write_bytes(frames + b"not zstd")
    assert _read_with_warning(p) == (list(range(1, 81)), Counter(corrupt_posts_file=1))
    damaged = bytearray(frames)
    damaged[len(damaged) // 4] ^= 0xFF  # inside the first frame: its checksum (or its blocks) fail
    p.write_bytes(bytes(damaged))
    ids, bad = _read_with_warning(p)
    assert bad["corrupt_posts_file"] == 1 and ids == list(range(1, len(ids) + 1)) and len(ids) < 80


@pytest.mark.parametrize("array", [True, False])
def test_truncated_gzip_keeps_every_record_before_the_cut(tmp_path, array):
    n = 3000
    text = ("[" + ",\n".join(json.dumps(_rec(i)) for i in range(n)) + "]").encode() if array else _lines(n)
    comp = gzip.compress(text)
    cut = comp[:len(comp) // 2]
    p = tmp_path / ("posts.json.gz" if array else "posts.jsonl.gz")
    p.write_bytes(cut)
    prefix = zlib.decompressobj(31).decompress(cut)  # all that the cut stream still decodes to
    want = [r["id"] for r, end in _record_ends(text) if end <= len(prefix)]
    ids, bad = _read_with_warning(p)
    assert ids == want and len(want) > n // 4
    # also counted: the record the cut went through (in an array, else its missing "]")
    assert bad == Counter(corrupt_posts_file=1, malformed_json=int(array or not prefix.endswith((b"}", b"\n"))))


def _record_ends(text: bytes):
    """(record, the offset just past it) for each record of an ASCII JSON-lines or JSON-array text."""
    dec, s, out = json.JSONDecoder(), text.decode("ascii"), []
    i = 1 if s.startswith("[") else 0
    while True:
        while i < len(s) and s[i] in ",\n ":
            i += 1
        if i >= len(s) or s[i] == "]":
            return out
        rec, i = dec.raw_decode(s, i)
        out.append((rec, i))


def test_corrupt_gzip_data_is_counted_not_raised(tmp_path):
    lines = _lines(1000)
    second = bytearray(gzip.compress(lines[len(_lines(500)):]))
    second[10] = 0xFF  # the second member's first deflate block: reserved type, zlib.error
    p = tmp_path / "posts.jsonl.gz"
    p.write_bytes(gzip.compress(_lines(500)) + bytes(second))
    assert _read_with_warning(p) == (list(range(1, 501)), Counter(corrupt_posts_file=1))
    crc = bytearray(gzip.compress(lines))
    crc[len(crc) // 2] ^= 0x55  # decodes, to other bytes: the CRC no longer matches
    p.write_bytes(bytes(crc))
    assert _read_with_warning(p)[1]["corrupt_posts_file"] == 1


# ----------------------------------------------------------------------------
# Encodings and types
# ----------------------------------------------------------------------------

def _records(n):
    return [{"id": i + 1, "score": i, "created_at": "2020-01-01", "tag_string_general": "a b " * 30} for i in range(n)]


@pytest.mark.parametrize("layout", ["lines", "array"])
def test_utf8_byte_order_mark_is_read_past(tmp_path, layout):
    recs = [json.dumps(r) for r in _records(5)]
    body = "\n".join(recs) if layout == "lines" else "[" + ",".join(recs) + "]"
    p = tmp_path / "posts.json"
    p.write_bytes(b"\xef\xbb\xbf" + body.encode())
    bad = Counter()
    assert [x.id for x in read_posts(p, bad)] == [1, 2, 3, 4, 5] and not bad


@pytest.mark.parametrize("newline", ["\r", "\r\n", "\n"])
def test_json_lines_ending_in_cr_crlf_or_lf(tmp_path, newline):
    p = tmp_path / "posts.jsonl"
    p.write_bytes(newline.join(json.dumps(r) for r in _records(60)).encode() + newline.encode())  # > 4096 chars
    bad = Counter()
    assert [x.id for x in read_posts(p, bad)] == list(range(1, 61)) and not bad


def test_parquet_timestamp_created_at_gives_the_year_and_a_year_past_9999_costs_its_row(tmp_path):
    seconds = [1_600_000_000, 10**12, 1_000_000_000]  # 2020, year 33658 (no datetime holds it), 2001
    table = pa.table({"id": [1, 2, 3], "score": [5, 6, 7],
                      "created_at": pa.array(seconds, pa.int64()).cast(pa.timestamp("s", tz="UTC"))})
    p = tmp_path / "posts.parquet"
    pq.write_table(table, p)
    bad = Counter()
    assert [(x.id, x.year) for x in read_posts(p, bad)] == [(1, 2020), (3, 2001)]
    assert bad == Counter(missing_created_at=1)
    pq.write_table(pa.table({"id": [4], "score": [1], "created_at": pa.array([18262], pa.date32())}), p)
    assert [x.year for x in read_posts(p, Counter())] == [2020]


def _post(**over):
    r = {"id": 7, "score": 3, "up_score": 5, "down_score": -2, "created_at": "2020-01-01"}
    r.update(over)
    return parse_post(r)


def test_non_ascii_digits_are_not_numbers():
    """Documented choice: ids and scores must be written with ASCII digits."""
    for s in ("١٢٣", "１２３", "²", "①", "--5", "1_000"):
        assert _post(id=s) == "bad_id", s
        assert _post(score=s, up_score=None) == "missing_score", s
        assert math.isnan(_post(aesthetic=s).aesthetic), s
        assert _post(created_at=s + "-01-01") == "missing_created_at", s
    assert (_post(id=" 123 ").id, _post(score="-4").score, _post(id="+8").id) == (123, -4, 8)


def test_numbers_beyond_int64_or_float_are_bad_not_raised():
    assert _post(id=2**63) == "bad_id" and _post(id="9" * 19) == "bad_id"
    assert _post(id="9223372036854775807").id == 2**63 - 1
    assert _post(score=2**64, up_score=None) == "missing_score"
    assert _post(score=None, up_score=2**63 - 1, down_score=2**63 - 1).score == 0
    assert _post(score=None, up_score=-(2**63 - 1), down_score=2**63 - 1) == "missing_score"  # outside int64
    assert math.isnan(_post(aesthetic=10**400).aesthetic) and math.isnan(_post(aesthetic=-(10**400)).aesthetic)
    assert _post(created_at=10**400) == "missing_created_at"


def test_400_digit_numbers_in_a_file_are_read_or_counted(tmp_path):
    p = tmp_path / "posts.jsonl"
    p.write_text('{"id": 1, "score": 2, "created_at": "2020-01-01", "aesthetic": ' + "9" * 400 + "}\n"
                 '{"id": 2, "score": ' + "9" * 400 + ', "up_score": 1, "down_score": 0, "created_at": 1e400}\n'
                 '{"id": 3, "score": 2, "created_at": "2020-01-01", "aesthetic": 1' + "0" * 400 + ".5}\n")
    bad = Counter()
    posts = list(read_posts(p, bad))
    assert [x.id for x in posts] == [1, 3] and all(math.isnan(x.aesthetic) for x in posts)
    assert bad == Counter(missing_created_at=1)


digit_strings = st.text(st.characters(categories=["Nd", "No"]) | st.sampled_from("0123456789-+. "), min_size=1,
                        max_size=22)
numbers = st.integers(-(10**450), 10**450) | st.floats() | digit_strings | digit_strings.map(lambda s: s + "-01-01")


@settings(max_examples=200, deadline=None)
@given(st.fixed_dictionaries({}, optional={k: numbers for k in ("id", "score", "up_score", "down_score", "aesthetic",
                                                                "created_at", "image_width", "parent_id")}))
def test_parse_post_never_raises_on_numbers_of_any_size_or_script(over):
    rec = {"id": 1, "score": 2, "created_at": "2020-01-01", **over}
    p = parse_post(rec)
    if isinstance(p, str):
        return
    assert 0 < p.id <= 2**63 - 1 and abs(p.score) <= 2**63 - 1 and not math.isinf(p.aesthetic)
    if isinstance(rec["id"], str):
        assert rec["id"].strip().lstrip("+-").isascii()
