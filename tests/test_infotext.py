"""A1111 infotext: written in A1111's layout, read with A1111's parser, and `vamp generate --from-png`
regenerating an image bit for bit."""
import logging

import numpy as np
import pytest
from PIL import Image

from test_generate_support import write_tiny_model
from vampdiffusion.cli import main
from vampdiffusion.config import Config
from vampdiffusion.generation import generate as G
from vampdiffusion.generation import infotext as I

A1111_TEXT = ("masterpiece, best quality, 1girl, solo\n"
              "Negative prompt: worst quality, low quality, gothic\n"
              "Steps: 28, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 12345, Size: 832x1216, "
              "Model hash: abcdef1234, Model: animagine, Clip skip: 2, "
              'Lora hashes: "foo: 1234, bar: 5678", Version: v1.6.0')


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, taesdxl_path):
    return write_tiny_model(tmp_path_factory.mktemp("model"), taesdxl_path)


@pytest.mark.parametrize("value,written", [
    ("plain", "plain"), ("2:0.7 5:0.3", '"2:0.7 5:0.3"'), ("a, b", '"a, b"'), ("two\nlines", '"two\\nlines"'),
    ('say "hi", ok', '"say \\"hi\\", ok"'), ("猫耳: yes", '"猫耳: yes"'), (7, "7")])
def test_quote_is_a1111s_and_unquote_inverts_it(value, written):
    assert I.quote(value) == written
    assert I.unquote(written) == str(value)


def test_a1111_infotext_parses_like_a1111():
    prompt, negative, params = I.parse_infotext(A1111_TEXT)
    assert prompt == "masterpiece, best quality, 1girl, solo"
    assert negative == "worst quality, low quality, gothic"
    assert params["Lora hashes"] == "foo: 1234, bar: 5678"          # a quoted value with ',' and ':'
    assert params["Sampler"] == "DPM++ 2M Karras" and params["Size"] == "832x1216" and params["Version"] == "v1.6.0"


def test_multiline_prompt_quoted_values_and_a_missing_negative_round_trip():
    fields = [("Steps", 3), ("Sampler", "Euler"), ("Seed", 1), ("Model", "my, model: v2"), ("Skipped", None)]
    text = I.build_infotext("1girl,\nsolo", "", fields)
    assert "Negative prompt" not in text and "Skipped" not in text
    assert text.splitlines()[-1] == 'Steps: 3, Sampler: Euler, Seed: 1, Model: "my, model: v2"'
    assert I.parse_infotext(text) == ("1girl,\nsolo", "", {"Steps": "3", "Sampler": "Euler", "Seed": "1",
                                                          "Model": "my, model: v2"})


def test_an_a1111_png_becomes_a_request_with_karras_warned(caplog):
    req = I.request_from_infotext(A1111_TEXT, ["seed=5", "CFG scale=4.5", "Style experts=2:0.7 5:0.3"])
    assert (req.tags, req.negative, req.steps, req.seed, req.cfg_scale, req.size) == (
        "masterpiece, best quality, 1girl, solo", "worst quality, low quality, gothic", 28, 5, 4.5, (832, 1216))
    assert req.style == {2: 0.7, 5: 0.3} and req.quality is None and req.model_hash == "abcdef1234"
    with caplog.at_level(logging.WARNING, logger="vampdiffusion.generate"):
        full = G.with_defaults(req, Config())
    assert full.sampler == "dpmpp2m" and "Karras sigmas are not used" in caplog.text
    assert full.quality == 3 and full.negative_quality == 0     # from the quality words of each prompt


@pytest.mark.parametrize("assignment,message", [
    ("Clip skip=2", "unknown parameter 'Clip skip'"), ("Seed", "must look like KEY=VALUE"),
    ("Steps=many", "parameter Steps: 'many' is not an integer")])
def test_bad_set_is_one_clear_error(assignment, message):
    with pytest.raises(ValueError, match=message):
        I.request_from_infotext(A1111_TEXT, [assignment])


def generate_cli(model_dir, out, *extra):
    return main(["generate", "--model", str(model_dir), "--steps", "2", "--size", "32x32", "--out", str(out), *extra])


def pixels(path):
    return np.asarray(Image.open(path).convert("RGB"))


def test_from_png_regenerates_the_image_bit_exactly(model_dir, tmp_path):
    first = tmp_path / "first"
    assert generate_cli(model_dir, first, "--tags", "masterpiece, 1girl, solo, long hair", "--negative",
                        "worst quality, gothic", "--style", "2:0.7 5:0.3", "--sampler", "DPM++ 2M Karras",
                        "--cfg", "4.5", "--cfg-rescale", "0.35", "--seed", "11") == 0
    (png,) = first.glob("*.png")
    params = G.parse_parameters(Image.open(png).info["parameters"])
    assert params["Negative prompt"] == "worst quality, gothic" and params["Style experts"] == "2:0.7 5:0.3"
    assert (params["Quality tier"], params["Negative quality"], params["Sampler"]) == ("3", "0", "DPM++ 2M")
    again = tmp_path / "again"
    assert main(["generate", "--model", str(model_dir), "--from-png", str(png), "--out", str(again)]) == 0
    (png2,) = again.glob("*.png")
    assert np.array_equal(pixels(png), pixels(png2))
    assert Image.open(png2).info["parameters"] == Image.open(png).info["parameters"]
    changed = tmp_path / "changed"
    assert main(["generate", "--model", str(model_dir), "--from-png", str(png), "--set", "Seed=12",
                 "--set", "style=auto", "--out", str(changed)]) == 0
    (png3,) = changed.glob("*.png")
    params3 = G.parse_parameters(Image.open(png3).info["parameters"])
    assert params3["Seed"] == "12" and "Style experts" not in params3
    assert not np.array_equal(pixels(png), pixels(png3))


def test_from_png_refuses_options_it_takes_from_the_png(model_dir, tmp_path, capsys):
    image = tmp_path / "a.png"
    Image.new("RGB", (8, 8)).save(image)
    assert main(["generate", "--model", str(model_dir), "--from-png", str(image), "--steps", "3"]) == 2
    assert "--from-png takes --steps from the PNG; change a parameter with --set" in capsys.readouterr().err
    assert main(["generate", "--model", str(model_dir), "--from-png", str(image)]) == 2
    assert "holds no 'parameters' text chunk" in capsys.readouterr().err
    assert main(["generate", "--model", str(model_dir), "--tags", "1girl", "--set", "Seed=1"]) == 2
    assert "--set KEY=VALUE changes the parameters of --from-png" in capsys.readouterr().err


@pytest.mark.parametrize("name,key", [("DDIM", "ddim"), ("Euler", "euler"), ("DPM++ 2M", "dpmpp2m"),
                                      ("dpm++ 2m karras", "dpmpp2m"), ("dpmpp2m", "dpmpp2m")])
def test_a1111_sampler_names_are_accepted(name, key):
    assert G.with_defaults(G.Request("1girl", sampler=name), Config()).sampler == key


def test_an_unknown_sampler_lists_both_spellings(model_dir, tmp_path, capsys):
    assert generate_cli(model_dir, tmp_path, "--tags", "1girl", "--sampler", "Euler a") == 2
    assert "sampler must be one of ddim (DDIM), euler (Euler), dpmpp2m (DPM++ 2M), got 'Euler a'" in \
        capsys.readouterr().err
