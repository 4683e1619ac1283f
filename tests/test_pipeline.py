"""diffusers: `vamp export diffusers` writes a pipeline folder that VampDiffusionPipeline loads, and the same
seed gives `vamp generate`'s image — with channel-normalised latents, a negative prompt and a style mix."""
import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image

from test_generate_support import write_tiny_model
from vampdiffusion.cli import main
from vampdiffusion.config import ModelConfig
from vampdiffusion.generation import generate as G

pytest.importorskip("diffusers")
from diffusers import DDIMScheduler, EulerDiscreteScheduler  # noqa: E402

from vampdiffusion.generation.pipeline import VampDiffusionPipeline, VampDiTModel  # noqa: E402

MEAN, STD = [0.4, -0.3, 0.2, -0.1], [1.3, 0.7, 0.8, 0.6]   # far from (0, 1): a pipeline that forgot them is off
PROMPT, NEGATIVE, STYLE = "masterpiece, 1girl, solo, long hair", "worst quality, gothic", "2:0.7 5:0.3"


@pytest.fixture(scope="module")
def folders(tmp_path_factory, taesdxl_path):
    root = tmp_path_factory.mktemp("pipe")
    model = write_tiny_model(root / "model", taesdxl_path, normalize="channel", channel_mean=MEAN, channel_std=STD)
    assert main(["export", "diffusers", str(model), str(root / "diffusers")]) == 0
    return model, root / "diffusers"


@pytest.fixture(scope="module")
def pipe(folders):
    return VampDiffusionPipeline.from_pretrained(folders[1])


def test_the_folder_is_a_diffusers_pipeline(folders, pipe):
    index = json.loads((folders[1] / "model_index.json").read_text())
    assert index["_class_name"] == "VampDiffusionPipeline"
    assert index["transformer"] == ["vampdiffusion.generation.pipeline", "VampDiTModel"]
    assert index["vae"] == ["diffusers", "AutoencoderTiny"] and index["scheduler"][0] == "diffusers"
    assert index["latents_mean"] == MEAN and index["latents_std"] == STD
    assert (folders[1] / "tokenizer" / "vocab.json").is_file()
    config = json.loads((folders[1] / "transformer" / "config.json").read_text())
    assert {f.name for f in dataclasses.fields(ModelConfig)} <= set(config)
    s = pipe.scheduler.config
    assert (s.prediction_type, s.rescale_betas_zero_snr, s.timestep_spacing) == ("v_prediction", True, "trailing")


def vamp_generate(model, tmp_path, *extra):
    out = tmp_path / "vamp"
    assert main(["generate", "--model", str(model), "--tags", PROMPT, "--negative", NEGATIVE, "--style", STYLE,
                 "--size", "48x32", "--seed", "9", "--cfg", "5", "--cfg-rescale", "0.5", "--out", str(out), *extra]) == 0
    (png,) = out.glob("*.png")
    return np.asarray(Image.open(png), dtype=np.int64)


def pipeline_image(pipe, steps, **kw):
    out = pipe(PROMPT, negative_prompt=NEGATIVE, style=STYLE, width=48, height=32, num_inference_steps=steps,
               guidance_scale=5.0, guidance_rescale=0.5, generator=[torch.Generator().manual_seed(9)],
               output_type="np", **kw)
    return np.round(out.images[0] * 255).astype(np.int64)


def test_same_seed_same_image_as_vamp_generate(folders, pipe, tmp_path):
    ours = vamp_generate(folders[0], tmp_path, "--steps", "3", "--sampler", "dpmpp2m")
    theirs = pipeline_image(pipe, 3)
    assert ours.shape == theirs.shape == (32, 48, 3)
    assert np.abs(ours - theirs).max() <= 2 and np.abs(ours - theirs).mean() < 0.05


def test_latents_match_and_the_channel_normalisation_is_undone(folders, pipe):
    gen = G.load_generator(folders[0], device="cpu")
    req = G.with_defaults(G.Request(PROMPT, style=STYLE, steps=3, sampler="dpmpp2m", cfg_scale=5.0, cfg_rescale=0.5,
                                    seed=9, size=(48, 32), negative=NEGATIVE), gen.cfg)
    ids, neg = G.tokenize(gen, req.tags)[0], G.tokenize(gen, req.negative)[0]
    ref = G.sample_latents(gen, torch.tensor([ids]), torch.tensor([req.quality]), [9], req.size, 3, "dpmpp2m", 5.0,
                           0.5, G.style_tensor(req.style, 1, 8), req.negative_quality, torch.tensor([neg]))
    lat = pipe(PROMPT, negative_prompt=NEGATIVE, style=STYLE, width=48, height=32, num_inference_steps=3,
               guidance_scale=5.0, guidance_rescale=0.5, generator=[torch.Generator().manual_seed(9)],
               output_type="latent").images
    assert (lat - ref).abs().max() < 1e-4
    mean = lat.mean(dim=(0, 2, 3))
    assert abs(float(mean[0] - mean[1])) > 0.3      # the stored latents carry the channel means again


@pytest.mark.parametrize("scheduler,sampler", [(DDIMScheduler, "ddim"), (EulerDiscreteScheduler, "euler")])
def test_a_diffusers_user_can_swap_schedulers(folders, pipe, tmp_path, scheduler, sampler):
    original = pipe.scheduler
    try:
        pipe.scheduler = scheduler.from_config(original.config)
        theirs = pipeline_image(pipe, 2)              # 2 divides T: diffusers' DDIM steps = the trailing ones
    finally:
        pipe.scheduler = original
    ours = vamp_generate(folders[0], tmp_path, "--steps", "2", "--sampler", sampler)
    assert np.abs(ours - theirs).max() <= 2


def test_save_pretrained_round_trips(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "again")
    again = VampDiffusionPipeline.from_pretrained(tmp_path / "again")
    assert isinstance(again.transformer, VampDiTModel)
    assert np.array_equal(pipeline_image(again, 2), pipeline_image(pipe, 2))


def test_a_folder_that_is_not_an_export_is_named(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="holds no model_index.json; write a pipeline folder with"):
        VampDiffusionPipeline.from_pretrained(tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    assert main(["export", "diffusers", str(tmp_path / "nope"), str(tmp_path / "out")]) == 2
    assert "model folder" in capsys.readouterr().err
