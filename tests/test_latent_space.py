"""latents.normalize=channel: statistics, the two directions, the trainer's and the sampler's side of it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from test_train_support import tiny_config, write_latent_dataset

from vampdiffusion.config import load_config, ConfigError, LatentConfig
from vampdiffusion.latents.latent_space import channel_affine, channel_stats, to_model_space, to_stored_space
from vampdiffusion.diffusion.schedule import NoiseSchedule
from vampdiffusion.generation import generate as G
from vampdiffusion.models.dit import VampDiT
from vampdiffusion.training import train as T

MEAN, STD = np.array([0.5, -1.0, 2.0, 0.0]), np.array([1.5, 0.5, 0.8, 2.0])


def offset_dataset(root: Path, eval_rows: int = 8) -> tuple[Path, np.ndarray]:
    """write_latent_dataset with per-channel offsets and spreads (MEAN, STD), the last rows held out with far-off
    values that must not enter the statistics. Returns (folder, the training latents as float64)."""
    write_latent_dataset(root)
    rec = json.loads((root / "shards.json").read_text())["shards"][0]
    x = np.load(root / rec["file"]).astype(np.float64) * STD[None, :, None, None] + MEAN[None, :, None, None]
    x[-eval_rows:] = 100.0
    from vampdiffusion.latents.shards import write_shard, write_shards_json
    record = write_shard(root, 0, x.astype(np.float16), {"bucket": rec["bucket"], "skipped": []})
    write_shards_json(root, [record], len(x))
    table = pq.read_table(root / "index.parquet")
    split = ["train"] * (len(x) - eval_rows) + ["eval"] * eval_rows
    pq.write_table(table.set_column(table.column_names.index("split"), "split", pa.array(split)), root / "index.parquet")
    return root, x[:-eval_rows].astype(np.float16).astype(np.float64)


def test_channel_stats_are_the_training_rows_mean_and_std(tmp_path):
    root, train = offset_dataset(tmp_path / "lat")
    mean, std = channel_stats(root)
    np.testing.assert_allclose(mean, train.mean(axis=(0, 2, 3)), atol=1e-5)
    np.testing.assert_allclose(std, train.std(axis=(0, 2, 3)), atol=1e-5)
    # an evenly spread subset when the dataset is larger than max_rows
    m8, _ = channel_stats(root, max_rows=8)
    pick = np.linspace(0, len(train) - 1, 8).round().astype(int)
    np.testing.assert_allclose(m8, train[pick].mean(axis=(0, 2, 3)), atol=1e-5)


def test_normalised_latents_have_unit_statistics_and_the_inverse_is_exact(tmp_path):
    root, train = offset_dataset(tmp_path / "lat")
    mean, std = channel_stats(root)
    lc = LatentConfig(normalize="channel", channel_mean=mean, channel_std=std)
    z = torch.from_numpy(train).float()
    x = to_model_space(z, lc)
    assert x.mean(dim=(0, 2, 3)).abs().max() < 1e-4
    assert (x.std(dim=(0, 2, 3), unbiased=False) - 1).abs().max() < 1e-4
    assert torch.allclose(to_stored_space(x, lc), z, atol=1e-5)
    plain = LatentConfig()
    assert to_model_space(z, plain) is z and to_stored_space(z, plain) is z


def test_an_unknown_normalisation_is_refused_when_the_config_is_loaded():
    with pytest.raises(ConfigError, match="latents.normalize must be one of 'none', 'channel'"):
        load_config("tiny", ["latents.normalize=chanel"])


@pytest.mark.parametrize("kw, message", [
    (dict(normalize="channel"), "dataset.json holds them"),
    (dict(normalize="channel", channel_mean=[0.0] * 3, channel_std=[1.0] * 3), "needs 4 values"),
    (dict(normalize="channel", channel_mean=[0.0] * 4, channel_std=[1.0, 0.0, 1.0, 1.0]), "positive"),
])
def test_bad_normalisation_settings_are_named(kw, message):
    with pytest.raises(ConfigError, match=message):
        channel_affine(LatentConfig(**kw), 4)


def test_trainer_measures_the_statistics_trains_on_normalised_latents_and_saves_them(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    root, train = offset_dataset(tmp_path / "lat")
    seen = []
    real_loss = T.training_loss

    def spy(model, batch, *args, **kwargs):
        seen.append(batch["latent"].clone())
        return real_loss(model, batch, *args, **kwargs)

    monkeypatch.setattr(T, "training_loss", spy)
    run = tmp_path / "p1"
    cfg = tiny_config("latents.normalize=channel", "train.phase1.steps=6")
    assert T.train(cfg, 1, root, run) == 0
    saved = json.loads((run / "model" / "config.json").read_text())["latents"]
    mean, std = channel_stats(root)
    assert saved["normalize"] == "channel" and saved["channel_mean"] == mean and saved["channel_std"] == std
    x = torch.cat(seen)                      # what the loss saw: 6 steps x 2 micro-batches x 8 training rows
    assert x.mean(dim=(0, 2, 3)).abs().max() < 0.25
    assert ((x.std(dim=(0, 2, 3)) - 1).abs() < 0.25).all(), x.std(dim=(0, 2, 3))

    # a later phase keeps the first run's statistics even when the data's dataset.json says otherwise
    desc = json.loads((root / "dataset.json").read_text())
    (root / "dataset.json").write_text(json.dumps({**desc, "channel_mean": [9.0] * 4, "channel_std": [9.0] * 4}))
    run2 = tmp_path / "p2"
    assert T.train(tiny_config("latents.normalize=channel"), 2, root, run2, init_from=str(run)) == 0
    assert json.loads((run2 / "model" / "config.json").read_text())["latents"]["channel_mean"] == mean
    # ... and a fresh phase-1 run takes them from dataset.json
    run3 = tmp_path / "p3"
    assert T.train(tiny_config("latents.normalize=channel", "train.phase1.steps=1"), 1, root, run3) == 0
    assert json.loads((run3 / "model" / "config.json").read_text())["latents"]["channel_mean"] == [9.0] * 4
    # continuing a normalised model without normalisation is refused, naming the fix
    with pytest.raises(ConfigError, match="latents.normalize=channel"):
        T.train(tiny_config("latents.normalize=none"), 2, root, tmp_path / "p4", init_from=str(run))


def test_samplers_return_stored_latents():
    torch.manual_seed(0)
    cfg = tiny_config("model.vocab_size=16")
    model = VampDiT(cfg.model).eval()
    with torch.no_grad():  # adaLN-Zero starts at v = 0: give the zero-initialised layers random weights
        for p in model.parameters():
            if p.dim() >= 2 and p.abs().sum() == 0:
                p.normal_(0, 0.05)

    def latents(lc: LatentConfig) -> torch.Tensor:
        cfg.latents = lc
        gen = G.LoadedModel(model=model, cfg=cfg, vocab=None, vae=None, schedule=NoiseSchedule(cfg.diffusion),
                            model_hash="-", device=torch.device("cpu"))
        return G.sample_latents(gen, torch.tensor([[2, 5, 6, 3]]), torch.tensor([3]), [7], (32, 32), steps=2,
                                sampler="ddim", cfg_scale=3.0, cfg_rescale=0.0)

    plain = latents(LatentConfig())
    normed = latents(LatentConfig(normalize="channel", channel_mean=MEAN.tolist(), channel_std=STD.tolist()))
    expected = plain * torch.tensor(STD, dtype=torch.float32).view(1, -1, 1, 1) + torch.tensor(MEAN, dtype=torch.float32).view(1, -1, 1, 1)
    assert torch.allclose(normed, expected, atol=1e-5)
