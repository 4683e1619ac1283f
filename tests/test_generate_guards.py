"""`vamp generate` never wastes or fakes work: inputs, the output folder, the device, the files of a model
folder and its VAE are checked before sampling; finished images survive an interruption."""
import json
import logging
import shutil

import pytest
import torch
from PIL import Image

from vampdiffusion.cli import main
from vampdiffusion.config import Config, LatentConfig, ModelConfig
from vampdiffusion.data.vocab import TagVocab
from vampdiffusion.generation import generate as G
from vampdiffusion.latents import vae as vae_module
from vampdiffusion.latents.vae import TAESDXL_ENV
from vampdiffusion.models.dit import VampDiT

TAGS = ["1girl", "solo", "gothic", "dark"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, taesdxl_path):
    torch.manual_seed(0)
    cfg = Config(model=ModelConfig(patch_size=2, hidden_size=32, depth=4, num_heads=2, max_grid=8,
                                   vocab_size=4 + len(TAGS), max_tags=8, enc_dim=16, enc_depth=1, enc_heads=2,
                                   moe_dispatch="loop"),
                 latents=LatentConfig(vae="taesdxl", vae_path=str(taesdxl_path), scaling_factor=1.0, resolution=64))
    d = tmp_path_factory.mktemp("model")
    VampDiT(cfg.model).save_pretrained(d, config=cfg)
    TagVocab(TAGS, [10, 9, 8, 7]).save(d / "vocab.json")
    return d


@pytest.fixture
def no_loading(monkeypatch):
    monkeypatch.setattr(G, "load_generator", lambda *a, **k: pytest.fail("loaded the model before checking"))


def copy_model(model_dir, tmp_path):
    d = tmp_path / "model"
    shutil.copytree(model_dir, d)
    return d


def generate_cli(model_dir, out, *extra):
    return main(["generate", "--model", str(model_dir), "--steps", "1", "--size", "32x32", "--out", str(out), *extra])


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


# -- finished work is kept -----------------------------------------------------

def test_an_interrupted_run_keeps_every_finished_batch_and_samples_no_further(model_dir, tmp_path, monkeypatch):
    decoded = []
    real_decode = G.decode
    monkeypatch.setattr(G, "decode", lambda gen, z: decoded.append(len(z)) or real_decode(gen, z))

    def progress(k):
        if len(decoded) == 2:
            raise KeyboardInterrupt

    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        G.generate_files(model_dir, [G.Request("1girl", steps=1, seed=7, n=1000, size=(32, 32))], out,
                         batch_size=2, device="cpu", progress=progress)
    assert decoded == [2, 2]                                           # stopped at once: no third batch sampled
    assert sorted(p.name for p in out.iterdir()) == ["00000-7.png", "00001-8.png", "00002-9.png", "00003-10.png"]
    assert G.parse_parameters(Image.open(out / "00003-10.png").info["parameters"])["Seed"] == "10"


def test_out_that_is_a_file_is_refused_before_the_model_is_loaded(model_dir, tmp_path, no_loading, capsys):
    out = tmp_path / "out.png"
    out.write_bytes(b"not a folder")
    assert generate_cli(model_dir, out, "--tags", "1girl") == 2
    assert f"output folder {out} is a file" in one_error_line(capsys)
    assert generate_cli(model_dir, out / "sub", "--tags", "1girl") == 2  # a file on the way to the folder
    assert f"output folder {out / 'sub'} cannot be written" in one_error_line(capsys)


@pytest.mark.parametrize("extra,message", [
    (["--cfg", "inf"], "cfg scale must be a finite number >= 0"),
    (["--cfg", "nan"], "cfg scale must be a finite number >= 0"),
    (["--cfg-rescale", "nan"], "cfg rescale must be in 0..1"),
])
def test_non_finite_guidance_is_refused(model_dir, tmp_path, no_loading, capsys, extra, message):
    assert generate_cli(model_dir, tmp_path, "--tags", "1girl", *extra) == 2
    assert message in one_error_line(capsys)


# -- prompts --------------------------------------------------------------------

def test_prompt_file_that_is_not_utf8_names_the_file_and_line(model_dir, tmp_path, no_loading, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_bytes("1girl, solo\ngothic, caf\u00e9\n".encode("latin-1"))
    assert generate_cli(model_dir, tmp_path / "out", "--prompts", str(prompts)) == 2
    err = one_error_line(capsys)
    assert f"{prompts}:2: byte 0xe9 at column 12 is not UTF-8" in err and "save the prompt file as UTF-8" in err


@pytest.mark.parametrize("tags,message", [
    ("1girl, caf\udce9", "U+DCE9 at position 10, a byte that was not UTF-8"),   # argv bytes decoded with surrogateescape
    ("1girl, \x1b[31msolo", "control character U+001B at position 7"),
])
def test_prompt_with_unwritable_characters_is_refused_before_sampling(model_dir, tmp_path, no_loading, capsys,
                                                                    tags, message):
    assert generate_cli(model_dir, tmp_path / "out", "--tags", tags) == 2
    assert message in one_error_line(capsys)
    assert not (tmp_path / "out").exists()


def test_prompt_with_other_scripts_tokenizes_and_round_trips(model_dir, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="vampdiffusion.generate"):
        [path] = G.generate_files(model_dir, [G.Request("1girl, 猫耳, ☆", steps=1, size=(32, 32))], tmp_path, device="cpu")
    assert "unknown tags (not in the model's vocabulary, they become [UNK]): 猫耳, ☆" in caplog.text
    assert G.parse_parameters(Image.open(path).info["parameters"])["prompt"] == "1girl, 猫耳, ☆"


# -- the device and the model folder's files ------------------------------------------

def test_cuda_without_a_gpu_is_one_line_before_any_file_is_read(model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(VampDiT, "from_pretrained", lambda *a, **k: pytest.fail("read the weights first"))
    assert generate_cli(model_dir, tmp_path / "out", "--tags", "1girl", "--device", "cuda") == 2
    err = one_error_line(capsys)
    assert "device cuda asked for, but PyTorch sees no CUDA GPU" in err and "--device cpu" in err


@pytest.mark.parametrize("damage,message", [
    ("truncate", "is not a complete safetensors file"),
    ("pickle", "is a PyTorch pickle (torch.save), not safetensors"),
])
def test_damaged_or_pickled_weights_name_the_file_and_the_fix(model_dir, tmp_path, capsys, damage, message):
    d = copy_model(model_dir, tmp_path)
    weights = d / "model.safetensors"
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    else:
        from safetensors.torch import load_file
        torch.save(load_file(str(model_dir / "model.safetensors")), weights)
    assert generate_cli(d, tmp_path / "out", "--tags", "1girl", "--device", "cpu") == 2
    err = one_error_line(capsys)
    assert f"{weights} {message}" in err and "copy the model folder again" in err
    assert not list((tmp_path / "out").glob("*.png"))


def test_weights_holding_nan_are_refused_naming_a_tensor(model_dir, tmp_path, capsys):
    from safetensors.torch import load_file, save_file
    d = copy_model(model_dir, tmp_path)
    state = load_file(str(d / "model.safetensors"))
    name = sorted(k for k, v in state.items() if v.is_floating_point())[0]
    state[name] = torch.full_like(state[name], float("nan"))
    save_file(state, str(d / "model.safetensors"))
    assert generate_cli(d, tmp_path / "out", "--tags", "1girl", "--device", "cpu") == 2
    err = one_error_line(capsys)
    assert f"holds NaN or inf in 1 tensor(s), e.g. {name}" in err and "earlier checkpoint" in err
    assert not list((tmp_path / "out").glob("*.png"))


def test_vocab_of_another_size_than_the_model_is_refused(model_dir, tmp_path, capsys):
    d = copy_model(model_dir, tmp_path)
    TagVocab(TAGS[:3], [10, 9, 8]).save(d / "vocab.json")             # 7 tokens, the model was built for 8
    assert generate_cli(d, tmp_path / "out", "--tags", "1girl", "--device", "cpu") == 2
    err = one_error_line(capsys)
    assert f"{d / 'vocab.json'} has 7 tokens but {d / 'config.json'} says model.vocab_size=8" in err
    assert "copy the vocab.json of the model's training dataset" in err


# -- a model folder from another machine ---------------------------------------------

@pytest.fixture
def moved_model(model_dir, tmp_path):
    """The model folder as copied from a machine whose VAE folder is not here."""
    d = copy_model(model_dir, tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    cfg["latents"]["vae_path"] = str(tmp_path / "elsewhere" / "taesdxl")
    (d / "config.json").write_text(json.dumps(cfg))
    return d


def test_missing_stored_vae_falls_back_to_vamp_taesdxl_and_says_so(moved_model, taesdxl_path, monkeypatch, caplog):
    monkeypatch.setenv(TAESDXL_ENV, str(taesdxl_path))
    with caplog.at_level(logging.INFO, logger="vampdiffusion.generate"):
        gen = G.load_generator(moved_model, device="cpu")
    assert gen.vae.name == "taesdxl" and str(taesdxl_path) in gen.vae.source
    assert f"does not exist on this machine; using the taesdxl VAE from {gen.vae.source} (${TAESDXL_ENV})" in caplog.text


def test_vae_path_argument_comes_first(moved_model, taesdxl_path, monkeypatch, caplog):
    monkeypatch.setenv(TAESDXL_ENV, str(moved_model / "no_such_folder"))
    with caplog.at_level(logging.INFO, logger="vampdiffusion.generate"):
        gen = G.load_generator(moved_model, vae_path=str(taesdxl_path), device="cpu")
    assert str(taesdxl_path) in gen.vae.source and "(--vae-path)" in caplog.text


def test_no_vae_anywhere_tries_env_then_hub_and_names_the_three_fixes(moved_model, tmp_path, monkeypatch):
    downloads = []

    def offline(cls, hub_id, backend, **kwargs):
        downloads.append(hub_id)
        raise FileNotFoundError(f"could not load the {backend} VAE {hub_id!r} (offline)")

    monkeypatch.setenv(TAESDXL_ENV, str(tmp_path / "no_env_folder"))
    monkeypatch.setattr(vae_module, "_from_hub", offline)
    with pytest.raises(FileNotFoundError) as info:
        G.load_generator(moved_model, device="cpu")
    msg = str(info.value)
    assert downloads == ["madebyollin/taesdxl"]                        # the hub itself, not $VAMP_TAESDXL again
    assert f"latents.vae_path={tmp_path / 'elsewhere' / 'taesdxl'} does not exist on this machine" in msg
    assert f"${TAESDXL_ENV} {tmp_path / 'no_env_folder'}: TAESD-XL weights not found" in msg
    assert "pass --vae-path" in msg and f"set {TAESDXL_ENV}=" in msg and "madebyollin/taesdxl can be downloaded" in msg


# -- sizes the model was not trained on ---------------------------------------------------

def test_untrained_size_warns_once_per_request_naming_the_trained_sizes(model_dir, tmp_path, caplog):
    requests = [G.Request("1girl", steps=1, n=3, size=(32, 32)), G.Request("solo", steps=1, n=1, size=(64, 64))]
    with caplog.at_level(logging.WARNING, logger="vampdiffusion.generate"):
        G.generate_files(model_dir, requests, tmp_path, batch_size=1, device="cpu")
    warnings = [r.getMessage() for r in caplog.records if "not a size the model was trained on" in r.getMessage()]
    assert warnings == [("size 32x32 is not a size the model was trained on (latents.buckets=aspect: 64x64); "
                         "expect worse images, or use one of those")]


def test_prompt_file_that_is_a_folder_or_missing_says_which(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"prompt file .* is a folder; pass --prompts FILE"):
        G.read_prompts(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"prompt file .*nope.txt not found; pass --prompts FILE"):
        G.read_prompts(tmp_path / "nope.txt")
