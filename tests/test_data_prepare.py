import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from vampdiffusion.config import load_config
from vampdiffusion.data import synth
from vampdiffusion.data.labels import split_of
from vampdiffusion.data.prepare import prepare
from vampdiffusion.data.vocab import BOS, EOS, TagVocab

@pytest.fixture(scope="module")
def tiny():
    return load_config("tiny")


@pytest.fixture(scope="module")
def synth_run(tmp_path_factory, tiny):
    root = tmp_path_factory.mktemp("synth")
    synth.synthesize(synth.SynthArgs(n=600, size=64, seed=0), root / "set")
    report = prepare(tiny, root / "set" / "posts.jsonl", root / "set", root / "out", log=lambda *a: None)
    return root, report


def test_every_stage_removes_something_and_the_table_adds_up(synth_run):
    _, report = synth_run
    stages = report["stages"]
    assert [s["stage"].split()[0] for s in stages] == ["0", "1", "2", "3", "4", "5"]
    for prev, cur in zip(stages, stages[1:]):
        assert cur["in"] == prev["out"]
    for s in stages:
        assert s["removed"] >= 1 and s["in"] - s["removed"] == s["out"], s
    assert stages[-1]["out"] == report["kept"]
    assert 0.5 < report["kept"] / 600 < 0.8


def test_bad_input_is_counted_by_reason(synth_run):
    bad = synth_run[1]["bad_input"]
    for reason in ("malformed_json", "deleted", "banned", "missing_image", "corrupt_image", "empty_image", "size_mismatch"):
        assert bad.get(reason, 0) >= 1, reason
    assert synth_run[1]["stages"][0]["removed"] == sum(bad.values())


def test_manifest_has_the_contract_columns_and_labels(synth_run):
    root, _ = synth_run
    t = pq.read_table(root / "out" / "manifest.parquet")
    types = {f.name: str(f.type) for f in t.schema}
    assert types == {"id": "int64", "md5": "string", "path": "string", "member": "string", "offset": "int64",
                     "size": "int64", "sha256": "string", "width": "int32", "height": "int32",
                     "score": "int32", "year": "int16", "score_tag": "int8", "quality": "int8", "style": "int8",
                     "aesthetic": "float", "phash": "uint64", "tags": "string", "tag_ids": "list<element: int32>",
                     "split": "string"}
    m = t.to_pydict()
    truth = {d["id"]: d for d in map(json.loads, (root / "set" / "truth.jsonl").read_text().splitlines())}
    assert [m["style"][k] for k in range(len(m["id"]))] == [truth[i]["style"] for i in m["id"]]
    assert min(m["score_tag"]) >= 3 and set(m["quality"]) <= {0, 1, 2, 3}
    vocab = TagVocab.load(root / "out" / "vocab.json")
    for tags, ids in zip(m["tags"][:50], m["tag_ids"][:50]):
        assert ids[0] == BOS and ids[-1] == EOS and ids[1:-1] == sorted(ids[1:-1]) and len(ids) <= 32
        assert set(vocab.decode(ids)) - {"[UNK]"} <= set(tags.split())
    for name in ("stages.json", "tiers.json", "styles.json", "report.json"):
        assert (root / "out" / name).is_file()


def test_rerun_reuses_the_phash_cache(synth_run, tiny):
    root, first = synth_run
    again = prepare(tiny, root / "set" / "posts.jsonl", root / "set", root / "out", log=lambda *a: None)
    assert again["images_decoded"] == 0 and again["phash_cache_hits"] > 500
    assert again["stages"] == first["stages"]


def test_aesthetic_stage_is_skipped_visibly_without_column_or_weights(synth_run, tiny, tmp_path):
    root, _ = synth_run
    lines = []
    for line in (root / "set" / "posts.jsonl").read_text().splitlines():
        try:
            d = json.loads(line)
        except ValueError:
            continue
        if isinstance(d, dict):
            d.pop("aesthetic", None)
        lines.append(json.dumps(d))
    (tmp_path / "posts.jsonl").write_text("\n".join(lines))
    logged = []
    r = prepare(tiny, tmp_path / "posts.jsonl", root / "set", tmp_path / "out", log=logged.append)
    row = r["stages"][3]
    assert row["status"] == "SKIPPED" and row["removed"] == 0 and r["aesthetic_source"] == "SKIPPED"
    assert any("SKIPPED" in line for line in logged)


def test_aesthetic_weights_without_open_clip_is_a_clear_error(monkeypatch, tmp_path):
    import sys
    from vampdiffusion.data.filters import laion_aesthetic_scores
    monkeypatch.setitem(sys.modules, "open_clip", None)
    with pytest.raises(RuntimeError, match="pip install open_clip_torch"):
        laion_aesthetic_scores(["x.png"], str(tmp_path / "w.pth"), "ViT-L-14", "openai")


def test_tar_layout_keeps_the_same_posts(tmp_path, tiny):
    synth.synthesize(synth.SynthArgs(n=150, size=64, seed=5), tmp_path / "dir")
    synth.synthesize(synth.SynthArgs(n=150, size=64, seed=5, tar=True), tmp_path / "tar")
    a = prepare(tiny, tmp_path / "dir" / "posts.jsonl", tmp_path / "dir", tmp_path / "o1", log=lambda *x: None)
    b = prepare(tiny, tmp_path / "tar" / "posts.jsonl", tmp_path / "tar", tmp_path / "o2", log=lambda *x: None)
    assert a["stages"] == b["stages"]
    m = pq.read_table(tmp_path / "o2" / "manifest.parquet").to_pydict()
    assert all(p.endswith(".tar") and "data-" in p for p in m["path"])
    assert all(name == f"{i}.{name.split('.')[1]}" for i, name in zip(m["id"], m["member"]))   # <id>.<ext> members
    assert all(o > 0 and n > 0 for o, n in zip(m["offset"], m["size"]))


def test_split_is_a_fixed_hash_of_the_id():
    ids = np.arange(1, 20001)
    s = split_of(ids, 0.1)
    assert abs((s == "eval").mean() - 0.1) < 0.01
    assert np.array_equal(s, split_of(ids, 0.1)) and split_of(np.array([7]), 0.1)[0] == s[6]
