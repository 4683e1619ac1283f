"""The 4×4 sample grid: decoded with the dataset's VAE, or a latent preview (with a warning) when it is missing."""

from __future__ import annotations

import json

import numpy as np
import torch
from PIL import Image

from test_train_support import tiny_config, write_latent_dataset

from vampdiffusion.training import train as T

GRID = ["train.phase1.steps=2", "train.sample_every=2", "train.ckpt_every=100"]


def test_grid_is_decoded_with_the_dataset_vae(tmp_path, taesdxl_path):
    torch.set_num_threads(1)
    data = write_latent_dataset(tmp_path / "latents")
    meta = json.loads((data / "dataset.json").read_text())
    (data / "dataset.json").write_text(json.dumps(dict(meta, vae_path=str(taesdxl_path))))
    run = tmp_path / "run"
    assert T.train(tiny_config(*GRID), 1, data, run) == 0
    image = Image.open(run / "samples" / "step_00000002.png")
    assert image.size == (4 * 32, 4 * 32)                    # 4×4 tiles of 4×4 latents decoded ×8
    assert image.text["images"] == "decoded"
    assert image.text["prompts"].startswith("gothic, dark, masterpiece | red, circle")
    assert image.text["columns"] == "quality 0,1,2,3"
    pixels = torch.tensor(np.array(image), dtype=torch.float32)
    assert pixels.std() > 1.0                                 # not a blank image


def test_missing_vae_saves_latent_preview_and_warns(tmp_path):
    torch.set_num_threads(1)
    data = write_latent_dataset(tmp_path / "latents")        # dataset.json names /nonexistent/taesdxl
    run = tmp_path / "run"
    assert T.train(tiny_config(*GRID), 1, data, run) == 0
    image = Image.open(run / "samples" / "step_00000002.png")
    assert image.size == (128, 128) and image.text["images"] == "latent preview (VAE unavailable)"
    assert "cannot load the VAE" in (run / "train.log").read_text()
