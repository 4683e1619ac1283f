import io
import json
import re
import types

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from vampdiffusion.atomic import atomic_write_json
from vampdiffusion.config import LatentConfig, load_config
from vampdiffusion.latents.shards import write_shard
from vampdiffusion.data.synth import BACKGROUNDS, COLOURS, SynthArgs, plan_posts, render_file, truth_record
from vampdiffusion.latents.vae import load_vae
from vampdiffusion.data.vocab import TagVocab
from vampdiffusion.evaluation.clip_score import clip_unavailable
from vampdiffusion.latents.latent_space import channel_stats
from vampdiffusion.cli.eval import main
from vampdiffusion.evaluation.evaluate import evaluate, summary_text, write_outputs
from vampdiffusion.evaluation.fid import fid_results
from vampdiffusion.evaluation.measure import Measured
from vampdiffusion.evaluation.inception import FIDInceptionV3, load_inception
from vampdiffusion.models.dit import VampDiT


def tier(u: float) -> int:
    return 3 if u >= 0.8 else 2 if u >= 0.6 else 1 if u >= 0.4 else 0


@pytest.fixture(scope="module")
def setup(tmp_path_factory, taesdxl_path):
    """A held-out latent split of 16 real TAESD-XL-encoded synthetic images, its truth file, a random tiny model."""
    root = tmp_path_factory.mktemp("eval")
    posts, _ = plan_posts(SynthArgs(n=120, size=64, seed=3))
    keep = [p for p in posts if p["kind"] == "normal" and p["u"] >= 0.3][:16]
    images = np.stack([np.asarray(Image.open(io.BytesIO(render_file(p))).convert("RGB")) for p in keep])
    (root / "truth.jsonl").write_text("\n".join(json.dumps(truth_record(p, None)) for p in keep) + "\nnot json\n")
    (root / "synth.json").write_text(json.dumps({"colours": COLOURS, "backgrounds": BACKGROUNDS}))  # the set's palette
    vocab = TagVocab.build([p["general"] for p in keep], 1)
    data = root / "latents"
    vae = load_vae(LatentConfig(vae="taesdxl", vae_path=str(taesdxl_path), scaling_factor=1.0))
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    latents = vae.encode(x).numpy().astype(np.float16)                       # (16, 4, 8, 8)
    rec = write_shard(data, 0, latents, {"bucket": [64, 64], "ids": [p["id"] for p in keep], "skipped": []})
    atomic_write_json(data / "shards.json", {"shards": [{k: rec[k] for k in ("shard", "file", "rows", "shape", "bucket", "sha256")}],
                                             "num_rows": len(keep)})
    n = len(keep)
    pq.write_table(pa.table({
        "id": pa.array([p["id"] for p in keep], pa.int64()), "shard": pa.array([0] * n, pa.int32()),
        "row": pa.array(range(n), pa.int32()), "latent_h": pa.array([8] * n, pa.int16()),
        "latent_w": pa.array([8] * n, pa.int16()),
        "tag_ids": pa.array([vocab.encode(p["general"]) for p in keep], pa.list_(pa.int32())),
        "quality": pa.array([tier(p["u"]) for p in keep], pa.int8()), "style": pa.array([p["style"] for p in keep], pa.int8()),
        "split": pa.array(["eval"] * n)}), data / "index.parquet")
    vocab.save(data / "vocab.json")
    cfg = load_config("tiny", [f"latents.vae_path={taesdxl_path}", "sample.steps=2", "eval.n_per_tier=2",
                                            "eval.style_samples=1", "eval.grid_columns=2",
                                            f"eval.inception_weights={root / 'no' / 'pt_inception.pth'}"])
    cfg.model.vocab_size = len(vocab)
    cfg.latents.channel_mean, cfg.latents.channel_std = channel_stats(data)  # the tiny preset normalises per channel
    model = root / "run" / "model"
    VampDiT(cfg.model).save_pretrained(model, cfg, extra_files={"vocab.json": (data / "vocab.json").read_text()})
    (root / "run" / "metrics.jsonl").write_text('{"step": 25, "loss": 0.9}\n{"step": 50, "loss": 0.7}\n')
    return types.SimpleNamespace(root=root, data=data, model=model, truth=root / "truth.jsonl", n=n)


@pytest.fixture(scope="module")
def evaluation(setup):
    return evaluate(setup.model, setup.data, truth=setup.truth, device="cpu", show_progress=False)


def test_eval_routing_covers_every_heldout_image(evaluation, setup):
    ro = evaluation.results["routing"]
    assert ro["images"] == setup.n
    assert ro["style"]["chance"] == 0.125 and ro["quality"]["chance"] == 0.25
    assert len(ro["style"]["accuracy"]) == 2 and len(ro["quality"]["accuracy"]) == 2  # tiny: style blocks 1, 5; quality 3, 7


def test_fid_row_says_skipped_without_weights(evaluation, setup):
    assert evaluation.results["fid"] == {"status": f"skipped: no Inception weights at {setup.root / 'no' / 'pt_inception.pth'}"}
    assert evaluation.results["clip"]["status"].startswith("skipped: no CLIP model configured")


def test_oracle_is_calibrated_on_decoded_real_latents(evaluation):
    o = evaluation.results["oracle"]
    assert o["status"] == "ok" and o["malformed_truth_lines"] == 1
    for name in ("background", "colour"):  # the oracle reads TAESD-XL-decoded synthetic images
        assert o["attributes"][name]["calibration"] >= 0.95
        assert o["attributes"][name]["status"] == "ok"
    assert o["attributes"]["colour"]["chance"] == pytest.approx(1 / 6)  # six colours in synth.json, fewer in 16 posts
    assert set(o["sharpness"]["generated"]) == {"0", "1", "2", "3"}


def test_style_in_the_images_has_conditioning_steering_and_composition(evaluation, setup):
    st = evaluation.results["oracle"]["style"]
    c = st["conditioning"]
    assert st["status"] == "ok" and c["tier"] == 3 and c["chance"] == 0.125
    assert c["calibration"] >= 0.8          # the style oracle reads TAESD-XL-decoded synthetic images
    assert sum(v["count"] for v in c["per_style"].values()) == 2  # the two tier prompts (n_per_tier=2) have a style
    steer = st["steering"]
    assert sorted(map(int, steer["per_expert"])) == list(range(8)) and len(steer["expert_read"]) == 8
    assert all(v["count"] == steer["prompts"] for v in steer["per_expert"].values())
    assert sorted(evaluation.steering_images) == list(range(8))
    comp = st["composition"]
    assert comp["prompt"] == "gothic, dark, masterpiece" and comp["images"] == 16 and comp["quality"] == 3
    assert len(comp["style_top2_per_block"]) == 2 and 0 <= comp["read_dark"] <= 1
    assert "style conditioning (images, tier 3" in summary_text(evaluation)


def test_generation_draws_every_tier_with_the_same_prompts(evaluation):
    assert sorted(evaluation.tier_images) == [0, 1, 2, 3]
    assert all(len(v) == 2 and v[0].size == (64, 64) for v in evaluation.tier_images.values())


def test_outputs_written_with_report_sections(evaluation, setup, tmp_path):
    paths = write_outputs(evaluation, tmp_path)
    results = json.loads(paths["eval.json"].read_text())
    assert results["heldout_images"] == setup.n
    html = paths["report.html"].read_text()
    assert re.findall(r"<h2>(.*?)</h2>", html) == ["Summary", "Samples", "Routing", "Style in the images",
                                                   "Synthetic oracle", "FID and CLIP score", "Training curves"]
    assert "skipped: no Inception weights at" in html
    assert "<polyline" in html  # the loss curve from metrics.jsonl beside the model folder
    assert Image.open(paths["samples_tiers.png"]).size[1] > 4 * 64


def test_fid_with_weights_gives_numbers_per_tier(tmp_path):
    path = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(FIDInceptionV3().state_dict(), path)
    inception = load_inception(path)
    rng = np.random.default_rng(0)
    im = lambda: Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    gen, real = Measured(keep=1), Measured(keep=1)
    gen.add(np.arange(2), [im(), im()], inception)
    real.add(np.arange(4), [im() for _ in range(4)], inception)
    assert len(gen.kept()) == 1 and real.feature_array().shape == (4, 2048)
    out = fid_results(path, {0: gen.feature_array()}, real.feature_array(), np.array([0, 0, 3, 3]))
    assert out["status"] == "ok" and out["ordering_holds"] is False  # tiers 1..3 missing
    assert out["per_tier"]["0"]["fid"] >= 0 and out["per_tier"]["0"]["fid_same_tier"] >= 0
    assert "rank-deficient" in out["note"]


def test_clip_skip_says_why(tmp_path):
    assert clip_unavailable("", "") .startswith("skipped: no CLIP model configured")
    assert clip_unavailable("ViT-L-14", str(tmp_path / "x.bin")) == f"skipped: no CLIP weights at {tmp_path / 'x.bin'}"


def test_cli_names_a_missing_model_folder(tmp_path, capsys):
    args = types.SimpleNamespace(model=str(tmp_path / "nope"), data=str(tmp_path), out=str(tmp_path / "o"), truth=None,
                                 logs=[], vae_path=None, device=None, config=None, overrides=[])
    assert main(args) == 2
    assert "model folder" in capsys.readouterr().err


def test_single_object_reading_separates_wrong_colours_from_extra_regions():
    from vampdiffusion.evaluation.conditioning import single_object_reading
    from vampdiffusion.evaluation.oracle import OracleObject, OracleReading

    def reading(*colours):
        return OracleReading("white_background", [OracleObject(c, "circle", 10, (0, 0, 0), 0.5) for c in colours], 0.5)

    def truth(*colours):
        return {"objects": [{"colour": c} for c in colours]}

    readings = [reading("red"), reading("blue", "red", "green"), reading("blue"), reading(), reading("red", "blue")]
    truths = [truth("red"), truth("red"), truth("red"), truth("red"), truth("red", "blue")]  # the last: two objects
    d = single_object_reading(readings, truths)
    assert d == {"count": 4, "largest_is_prompted": 0.25, "prompted_present": 0.5, "mean_regions_read": 1.25}
    assert single_object_reading([reading("red")], [truth("red", "blue")]) is None


def test_n_per_tier_zero_draws_every_heldout_row_once():
    from vampdiffusion.evaluation.heldout import pick_prompt_rows
    ds = list(range(7))
    rows = pick_prompt_rows(ds, 0, seed=3)
    assert sorted(rows.tolist()) == list(range(7))                       # each row exactly once
    assert pick_prompt_rows(ds, 9, seed=3).tolist() == rows.tolist() + rows[:2].tolist()  # n > rows: repeated
    assert pick_prompt_rows(ds, 4, seed=3).tolist() == rows[:4].tolist()  # the same order, cut


def test_eval_generates_every_heldout_prompt_with_n_per_tier_zero(setup):
    ev = evaluate(setup.model, setup.data, truth=setup.truth, device="cpu", show_progress=False,
                  overrides=["eval.n_per_tier=0", "eval.grid_columns=100"])
    assert all(len(v) == setup.n for v in ev.tier_images.values())


@pytest.mark.parametrize("n", [1, -1])
def test_eval_refuses_a_bad_n_per_tier(setup, n):
    with pytest.raises(ValueError, match="eval.n_per_tier must be"):
        evaluate(setup.model, setup.data, device="cpu", show_progress=False, overrides=[f"eval.n_per_tier={n}"])


@pytest.mark.parametrize("variant", ["token", "dense"])
def test_steering_forces_the_experts_of_a_token_routed_model_and_skips_the_dense_twin(setup, tmp_path, variant):
    from vampdiffusion.config import config_from_dict
    cfg = config_from_dict(json.loads((setup.model / "config.json").read_text()))
    cfg.model.style_routing, cfg.model.style_ffn = ("token", "moe") if variant == "token" else ("image", "dense")
    model = tmp_path / "run" / "model"
    VampDiT(cfg.model).save_pretrained(model, cfg, extra_files={"vocab.json": (setup.data / "vocab.json").read_text()})
    st = evaluate(model, setup.data, truth=setup.truth, device="cpu", show_progress=False).results["oracle"]["style"]
    assert st["composition"]["style_blocks"] == []       # neither has a per-image style routing report
    if variant == "token":                               # the override forces every token's experts
        assert sorted(map(int, st["steering"]["per_expert"])) == list(range(8)), st["steering"]
    else:
        assert st["steering"]["status"].startswith("skipped: the model has no style experts")


def test_eval_refuses_a_damaged_heldout_shard_before_measuring(setup, tmp_path, capsys):
    import shutil
    from vampdiffusion.cli import main
    data = tmp_path / "latents"
    shutil.copytree(setup.data, data)
    shard = next((data / "shards").glob("*.npy"))
    blob = bytearray(shard.read_bytes())
    blob[-4:] = b"\x00\x7c\x00\x7c"                       # the last latent values: the file's size is unchanged
    shard.write_bytes(bytes(blob))
    with pytest.raises(ValueError, match=r"latents is damaged: .*checksum|latents is damaged: .*sha256"):
        evaluate(setup.model, data, device="cpu", show_progress=False)
    assert main(["eval", "--model", str(setup.model), "--data", str(data), "--out", str(tmp_path / "out")]) == 2
    assert "vamp data verify" in capsys.readouterr().err and not (tmp_path / "out" / "eval.json").exists()
