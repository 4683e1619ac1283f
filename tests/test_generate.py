"""`vamp generate` end to end: a tiny random VampDiT (save_pretrained) + the real TAESD-XL weights."""
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from vampdiffusion.atomic import sha256_file
from vampdiffusion.cli import main
from vampdiffusion.config import Config, LatentConfig, ModelConfig
from vampdiffusion.data.vocab import TagVocab
from vampdiffusion.generation import generate as G
from vampdiffusion.models.dit import VampDiT

TAGS = ["1girl", "solo", "gothic", "dark", "long_hair", "red_eyes", "smile"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, taesdxl_path):
    torch.manual_seed(0)
    cfg = Config(model=ModelConfig(patch_size=2, hidden_size=32, depth=4, num_heads=2, max_grid=8,
                                   vocab_size=4 + len(TAGS), max_tags=8, enc_dim=16, enc_depth=1, enc_heads=2,
                                   moe_dispatch="loop"),
                 latents=LatentConfig(vae="taesdxl", vae_path=str(taesdxl_path), scaling_factor=1.0, resolution=64))
    model = VampDiT(cfg.model)
    with torch.no_grad():  # adaLN-Zero starts at v = 0: give the zero-initialised layers random weights
        for p in model.parameters():
            if p.dim() >= 2 and p.abs().sum() == 0:
                p.normal_(0, 0.05)
    d = tmp_path_factory.mktemp("model")
    model.save_pretrained(d, config=cfg)
    TagVocab(TAGS, [100 - i for i in range(len(TAGS))]).save(d / "vocab.json")
    return d


@pytest.fixture(scope="module")
def gen(model_dir):
    return G.load_generator(model_dir, device="cpu")


def run(model_dir, out, *extra):
    return main(["generate", "--model", str(model_dir), "--quality", "3", "--steps", "2", "--sampler", "dpmpp2m",
                 "--cfg", "6", "--cfg-rescale", "0.7", "--seed", "1", "--out", str(out), *extra])


def test_vamp_generate_writes_pngs_with_parameters_that_parse_back(model_dir, tmp_path):
    out = tmp_path / "out"
    assert run(model_dir, out, "--tags", "1girl, solo, gothic, dark", "--n", "2", "--size", "64x32") == 0
    files = sorted(out.glob("*.png"))
    assert [f.name for f in files] == ["00000-1.png", "00001-2.png"]
    image = Image.open(files[1])
    assert image.size == (64, 32) and image.mode == "RGB"                 # width x height
    params = G.parse_parameters(image.info["parameters"])
    digest = sha256_file(model_dir / "model.safetensors")[:10]
    assert params == {"prompt": "1girl, solo, gothic, dark", "Steps": "2", "Sampler": "DPM++ 2M", "CFG scale": "6",
                      "Seed": "2", "Size": "64x32", "Model hash": digest, "Model": model_dir.name,
                      "Quality tier": "3", "CFG rescale": "0.7", "Negative quality": "-1"}
    # A1111's layout, key for key: the prompt line, then one line of pairs in A1111's order
    assert image.info["parameters"] == (
        f"1girl, solo, gothic, dark\nSteps: 2, Sampler: DPM++ 2M, CFG scale: 6, Seed: 2, Size: 64x32, "
        f"Model hash: {digest}, Model: {model_dir.name}, Quality tier: 3, CFG rescale: 0.7, Negative quality: -1")


def test_same_seed_gives_identical_pixels(gen):
    kw = dict(quality=2, steps=2, sampler="ddim", cfg_scale=4.0, cfg_rescale=0.7, size=(32, 32))
    a = G.generate(gen, "1girl, solo", seed=5, n=2, **kw)
    b = G.generate(gen, "1girl, solo", seed=5, n=2, **kw)
    c = G.generate(gen, "1girl, solo", seed=6, n=1, **kw)
    assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a, b))
    assert not np.array_equal(np.asarray(a[0]), np.asarray(c[0]))
    # image i of a request is the image of seed + i alone: the written Seed regenerates it
    assert np.abs(np.asarray(a[1], dtype=int) - np.asarray(c[0], dtype=int)).max() <= 1


def test_tags_condition_the_image(gen):
    kw = dict(quality=3, steps=2, sampler="euler", cfg_scale=6.0, cfg_rescale=0.0, size=(32, 32), seed=3)
    a = np.asarray(G.generate(gen, "1girl, solo", **kw)[0], dtype=int)
    b = np.asarray(G.generate(gen, "gothic, dark", **kw)[0], dtype=int)
    assert np.abs(a - b).mean() > 0.5


def test_prompt_normalisation_dedup_and_order(gen):
    ids, unknown = G.tokenize(gen, "Solo, 1girl, long hair, solo, red eyes, Gothic")
    assert gen.vocab.decode(ids) == ["1girl", "solo", "gothic", "long_hair", "red_eyes"]  # by frequency
    assert ids[0] == 2 and ids[6] == 3 and ids[7] == 0 and unknown == []


def test_unknown_tags_are_named_in_a_warning(gen, caplog):
    with caplog.at_level(logging.WARNING, logger="vampdiffusion.generate"):
        G.generate(gen, "1girl, blue_sky, mecha", steps=1, size=(32, 32))
    assert "blue_sky, mecha" in caplog.text
    ids, unknown = G.tokenize(gen, "1girl, blue_sky, mecha")
    assert unknown == ["blue_sky", "mecha"] and 1 in ids                 # one [UNK]


def test_prompt_file_generates_every_line_with_a_progress_bar(model_dir, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# two prompts\n1girl, solo\n\ngothic, dark\n")
    out = tmp_path / "out"
    assert run(model_dir, out, "--prompts", str(prompts), "--size", "32x32") == 0
    files = sorted(out.glob("*.png"))
    assert len(files) == 2
    assert [G.parse_parameters(Image.open(f).info["parameters"])["prompt"] for f in files] == ["1girl, solo", "gothic, dark"]
    assert "2/2" in capsys.readouterr().err


@pytest.mark.parametrize("extra,message", [
    (["--quality", "4"], "quality must be 0..3"),
    (["--style", "8"], "style must be 0..7"),
    (["--size", "72x64"], "multiple of 16"),
    (["--size", "512x512"], "beyond the model's position tables"),
    (["--size", "64"], "WIDTHxHEIGHT"),
    (["--steps", "0"], "steps must be in 1..1000"),
    (["--sampler", "heun"], "sampler must be one of"),
    (["--cfg-rescale", "1.5"], "cfg rescale must be in 0..1"),
    (["--negative-quality", "4"], "negative quality must be -1"),
    (["--n", "0"], "n (images per prompt) must be >= 1"),
])
def test_bad_input_is_refused_before_any_compute(model_dir, tmp_path, monkeypatch, capsys, extra, message):
    monkeypatch.setattr(G, "load_generator", lambda *a, **k: pytest.fail("loaded the model before checking"))
    args = ["generate", "--model", str(model_dir), "--tags", "1girl", "--size", "64x64", "--out", str(tmp_path)]
    assert main(args + extra) == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.glob("*.png"))


def test_missing_model_folder_is_named(tmp_path, capsys):
    assert main(["generate", "--model", str(tmp_path / "nope"), "--tags", "1girl"]) == 2
    err = capsys.readouterr().err
    assert f"model folder {tmp_path / 'nope'} not found" in err


def test_model_folder_without_vocab_is_refused(model_dir, tmp_path, capsys):
    import shutil
    d = tmp_path / "m"
    shutil.copytree(model_dir, d)
    (d / "vocab.json").unlink()
    assert main(["generate", "--model", str(d), "--tags", "1girl"]) == 2
    assert "lacks vocab.json" in capsys.readouterr().err


def test_forced_style_expert_is_used_and_recorded(gen):
    kw = dict(quality=3, steps=1, cfg_scale=1.0, size=(32, 32), seed=4)
    routed = G.generate(gen, "1girl, solo", **kw)[0]
    forced = G.generate(gen, "1girl, solo", style=5, **kw)[0]
    assert G.parse_parameters(forced.info["parameters"])["Style experts"] == "5:1"
    assert not np.array_equal(np.asarray(routed), np.asarray(forced))
