import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vampdiffusion.data import synth
from vampdiffusion.data.labels import load_style_clusters


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name != "synth.json":
            h.update(p.relative_to(folder).as_posix().encode() + p.read_bytes())
    return h.hexdigest()


def test_synth_is_deterministic_across_worker_counts(tmp_path):
    synth.synthesize(synth.SynthArgs(n=100, size=32, seed=3, workers=1), tmp_path / "a")
    synth.synthesize(synth.SynthArgs(n=100, size=32, seed=3, workers=2), tmp_path / "b")
    synth.synthesize(synth.SynthArgs(n=100, size=32, seed=4, workers=1), tmp_path / "c")
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_too_small_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError, match="--n must be >= 100"):
        synth.synthesize(synth.SynthArgs(n=10), tmp_path)


def test_style_tags_are_real_cluster_tags():
    clusters = load_style_clusters()
    for style, tags in synth.STYLE_TAGS.items():
        assert set(tags) <= clusters[style].tags
        assert synth.STYLE_NAMES[style] == clusters[style].name


def test_tags_describe_every_object_background_and_style():
    posts, _ = synth.plan_posts(synth.SynthArgs(n=300, size=64))
    for p in posts:
        if p["kind"] == "sparse_tags":
            continue
        tags = set(p["general"])
        assert {f"{o['colour']}_{o['shape']}" for o in p["objects"]} <= tags
        assert {o["shape"] for o in p["objects"]} <= tags and p["background"] in tags
        assert len(tags & set(synth.STYLE_TAGS.get(p["style"], ()))) >= (2 if p["style"] >= 0 else 0)


def _sharpness(path: Path) -> float:
    g = np.asarray(Image.open(path).convert("L"), np.float32)
    lap = g[1:-1, 1:-1] * 4 - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:]
    return float(lap.var())


def test_quality_is_visible_sharpness_rises_with_u_band(tmp_path):
    synth.synthesize(synth.SynthArgs(n=200, size=64, seed=0), tmp_path)
    truth = [json.loads(l) for l in (tmp_path / "truth.jsonl").read_text().splitlines()]
    normal = [t for t in truth if t["kind"] == "normal"]
    bands = [(0.3, 0.6), (0.6, 0.8), (0.8, 1.0)]
    means = [np.mean([_sharpness(tmp_path / t["path"]) for t in normal if lo <= t["u"] < hi and t["style"] == 4])
             for lo, hi in bands]
    assert means[0] < means[1] < means[2]


def test_truth_bboxes_cover_the_drawn_object(tmp_path):
    synth.synthesize(synth.SynthArgs(n=100, size=64, seed=1), tmp_path)
    truth = [json.loads(l) for l in (tmp_path / "truth.jsonl").read_text().splitlines()]
    t = next(t for t in truth if t["kind"] == "normal" and t["style"] == 4 and t["background"] == "white_background"
             and t["u"] > 0.8 and len(t["objects"]) == 1)
    a = np.asarray(Image.open(tmp_path / t["path"]).convert("RGB"), np.int32)
    x0, y0, x1, y1 = t["objects"][0]["bbox"]
    inside = a[max(y0, 0):y1, max(x0, 0):x1]
    rgb = np.array(t["objects"][0]["rgb"])
    close = np.abs(a - rgb).sum(-1) < 90
    assert close.sum() > 20 and close.sum() == (np.abs(inside - rgb).sum(-1) < 90).sum()
