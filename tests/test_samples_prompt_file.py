"""Training previews from a kohya-style prompt file: one image per line, each with its A1111 parameters,
regenerated bit for bit by `vamp generate --from-png` from the same weights."""
import numpy as np
import pytest
import torch
from PIL import Image

from test_generate_support import write_tiny_model
from vampdiffusion.cli import main
from vampdiffusion.config import ConfigError, config_from_dict
from vampdiffusion.data.vocab import TagVocab
from vampdiffusion.generation import generate as G
from vampdiffusion.generation.prompts import SamplePrompt, parse_sample_prompt, read_sample_prompts
from vampdiffusion.latents.vae import load_vae
from vampdiffusion.models.dit import VampDiT
from vampdiffusion.training.samples import SampleGrid


def test_a_line_reads_every_option():
    line = parse_sample_prompt("1girl, solo, masterpiece --n worst quality, gothic --w 48 --h 32 --d 7 --s 3 "
                               "--l 4.5 --q 2")
    assert line == SamplePrompt("1girl, solo, masterpiece", "worst quality, gothic", 48, 32, 7, 3, 4.5, 2)
    assert parse_sample_prompt("  1girl  ") == SamplePrompt("1girl")


@pytest.mark.parametrize("line,message", [("1girl --x 3", "f.txt:4: unknown option --x"),
                                          ("1girl --w wide", "f.txt:4: --w 'wide' is not an integer"),
                                          ("1girl --l high", "f.txt:4: --l 'high' is not a number")])
def test_a_bad_line_names_file_line_and_option(line, message):
    with pytest.raises(ValueError, match=message):
        parse_sample_prompt(line, "f.txt:4: ")


def test_a_prompt_file_skips_bom_blanks_and_comments_and_names_a_non_utf8_byte(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_bytes(b"\xef\xbb\xbf1girl --d 3\n\n# a comment\r\n  solo, red_hair --s 5  \n")
    read = read_sample_prompts(path)
    assert [(x.prompt, x.seed, x.steps) for x in read] == [("1girl", 3, None), ("solo, red_hair", None, 5)]
    path.write_bytes(b"1girl\nsolo, caf\xe9\n")
    with pytest.raises(ValueError, match=r"prompts.txt:2: byte 0xe9 at column 10 is not UTF-8; save the sample prompt"):
        read_sample_prompts(path)


def test_the_config_field_is_a_path_string():
    assert config_from_dict({"train": {"sample_prompts_file": "p.txt"}}).train.sample_prompts_file == "p.txt"
    with pytest.raises(ConfigError, match="train.sample_prompts_file: expected str"):
        config_from_dict({"train": {"sample_prompts_file": 3}})


def test_prompt_file_previews_are_one_png_per_line_that_regenerates(tmp_path, taesdxl_path):
    model_dir = write_tiny_model(tmp_path / "model", taesdxl_path)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# previews\n1girl, solo, masterpiece --n worst quality, gothic --w 32 --h 48 --d 3 --s 2\n\n"
                       "gothic, dark --s 2 --l 1 --q 1\n")
    cfg = G.read_model_config(model_dir)
    cfg.train.sample_prompts_file = str(prompts)
    vocab = TagVocab.load(model_dir / "vocab.json")
    L = cfg.model.max_tags
    tokenize = lambda ps: torch.tensor([vocab.pad(vocab.encode_prompt(p, L), L) for p in ps])
    grid = SampleGrid(cfg, tmp_path / "run", tokenize, lambda: load_vae(cfg.latents))
    assert grid.tag_ids.shape == (4, L)                                    # 2 lines + their negatives
    model = VampDiT.from_pretrained(model_dir).eval()
    path, sheet = grid.make(model, 5, (4, 4), torch.device("cpu"))
    assert sheet.shape == (48, 32 + 32, 3)                                 # side by side, top-aligned
    first, second = tmp_path / "run/samples/step_00000005-00.png", tmp_path / "run/samples/step_00000005-01.png"
    assert Image.open(first).size == (32, 48) and Image.open(second).size == (32, 32)  # default: the latent size
    params = G.parse_parameters(Image.open(first).info["parameters"])
    assert (params["Seed"], params["Steps"], params["Quality tier"], params["Negative quality"]) == ("3", "2", "3", "0")
    assert G.parse_parameters(Image.open(second).info["parameters"])["Seed"] == str(cfg.train.seed + 1)
    out = tmp_path / "again"
    assert main(["generate", "--model", str(model_dir), "--from-png", str(first), "--out", str(out)]) == 0
    (again,) = out.glob("*.png")
    assert np.array_equal(np.asarray(Image.open(again)), np.asarray(Image.open(first)))


def test_a_size_the_model_cannot_take_is_refused_at_start(tmp_path, taesdxl_path):
    model_dir = write_tiny_model(tmp_path / "model", taesdxl_path)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("1girl --w 40\n")
    cfg = G.read_model_config(model_dir)
    cfg.train.sample_prompts_file = str(prompts)
    with pytest.raises(ValueError, match="prompt 1: size 40 must be a multiple of 16"):
        SampleGrid(cfg, tmp_path / "run", lambda ps: None, lambda: None)
