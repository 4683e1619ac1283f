"""LatentDataset + BucketBatchSampler + LatentLoader: buckets, determinism, ranks, workers, weights, resume, errors."""

import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from vampdiffusion.config import Config, LatentConfig, PhaseConfig
from vampdiffusion.latents import encode as encode_module
from vampdiffusion.latents.encode import encode
from vampdiffusion.latents.loader import (BOS, EOS, PAD, BucketBatchSampler, LatentDataset, LatentLoader,
                                       curate_top_k, curation_scores, make_loader, phase_weights)

N_ROWS = 60
SIZES = [(64, 64), (100, 60), (60, 100)]  # -> buckets 64x64, 80x48, 48x80 at resolution 64, step 16


class PoolVAE:
    """Stand-in VAE: 8x8 average pooling + a 4th channel; deterministic and fast."""
    name, source, scaling_factor, device = "pool", "test", 1.0, torch.device("cpu")

    def encode(self, x):
        z = F.avg_pool2d(x, 8)                                   # (B, 3, h, w)
        return torch.cat([z, z.mean(dim=1, keepdim=True)], 1)    # (B, 4, h, w)


@pytest.fixture(scope="module")
def latents(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("loader")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(N_ROWS):
        w, h = SIZES[i % 3]
        Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8)).save(root / f"{i}.png")
        n_tags = 1 + i % 7
        rows.append(dict(id=1000 + i, path=str(root / f"{i}.png"), width=w, height=h, quality=i % 4, style=i % 9 - 1,
                         aesthetic=np.nan if i % 5 == 0 else float(rng.normal(5, 1)), score_tag=int(i % 10),
                         tag_ids=[BOS] + list(range(4, 4 + n_tags)) + [EOS], split="eval" if i % 10 == 9 else "train"))
    pq.write_table(pa.Table.from_pylist(rows), root / "manifest.parquet")
    cfg = LatentConfig(vae="taesdxl", scaling_factor=1.0, resolution=64, bucket_step=16, shard_size=8, batch_size=8,
                       workers=0)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(encode_module, "load_vae", lambda *a, **k: PoolVAE())
        encode(root / "manifest.parquet", root / "latents", cfg)
    return root / "latents"


def loader_cfg(batch: int = 5, workers: int = 0, **latent_kw) -> Config:
    cfg = Config()
    cfg.train.micro_batch, cfg.train.workers, cfg.train.seed, cfg.model.max_tags = batch, workers, 7, 8
    for k, v in latent_kw.items():
        setattr(cfg.latents, k, v)
    return cfg


def take(loader: LatentLoader, n: int) -> list[dict]:
    return list(itertools.islice(iter(loader), n))


def same_batches(a: list[dict], b: list[dict]) -> bool:
    return len(a) == len(b) and all(all(torch.equal(x[k], y[k]) for k in x) for x, y in zip(a, b))


# ---------------------------------------------------------------- dataset

def test_dataset_reads_the_train_split_with_latents_equal_to_the_shards(latents):
    ds = LatentDataset(latents, "train", max_tags=8)
    assert len(ds) == 54 and len(LatentDataset(latents, "eval", 8)) == 6
    batch = ds.__getitems__([0, 1, 2])
    index = pq.read_table(latents / "index.parquet").to_pylist()
    train = [r for r in index if r["split"] == "train"]
    for j in range(3):
        stored = np.load(latents / f"shards/{train[j]['shard']:06d}.npy")[train[j]["row"]]
        np.testing.assert_array_equal(batch["latent"][j].numpy(), stored.astype(np.float32))
        assert batch["quality"][j] == train[j]["quality"] and batch["style"][j] == train[j]["style"]
    assert batch["latent"].dtype == torch.float32 and batch["tag_ids"].dtype == torch.long
    single = ds[1]
    assert torch.equal(single["latent"], batch["latent"][1]) and torch.equal(single["tag_ids"], batch["tag_ids"][1])


def test_tag_ids_are_padded_and_long_rows_keep_bos_and_eos(latents):
    ds = LatentDataset(latents, None, max_tags=5)
    tags = ds.tag_batch(np.arange(len(ds)))
    lengths = np.diff(ds.tag_offsets)
    short = int(np.flatnonzero(lengths == 3)[0])      # [BOS] t [EOS] -> padded
    assert tags[short].tolist() == [BOS, 4, EOS, PAD, PAD]
    long = int(np.flatnonzero(lengths == 9)[0])       # 7 tags -> [BOS] 3 most frequent [EOS]
    assert tags[long].tolist() == [BOS, 4, 5, 6, EOS]
    assert ds.truncated == int((lengths > 5).sum())


def test_index_naming_a_missing_shard_is_an_error_naming_it(latents, tmp_path):
    broken = tmp_path / "latents"
    shutil.copytree(latents, broken)
    (broken / "shards" / "000003.npy").unlink()
    with pytest.raises(FileNotFoundError, match="shard 3: .*000003.npy is missing"):
        LatentDataset(broken)


def test_shard_with_a_wrong_shape_is_an_error_naming_it(latents, tmp_path):
    broken = tmp_path / "latents"
    shutil.copytree(latents, broken)
    array = np.load(broken / "shards" / "000002.npy")
    np.save(broken / "shards" / "000002.npy", array[:, :, :-1])
    with pytest.raises(ValueError, match="shard 2: .*record says"):
        LatentDataset(broken)


# ---------------------------------------------------------------- sampler

def test_every_batch_holds_one_bucket(latents):
    ds = LatentDataset(latents, "train", 8)
    sampler = BucketBatchSampler(ds.bucket, 4, seed=0)
    batches = sampler.epoch_batches(0)
    assert len(np.unique(ds.bucket)) == 3
    assert all(len(np.unique(ds.bucket[b])) == 1 for b in batches)
    shapes = {tuple(ds.__getitems__(b.tolist())["latent"].shape[2:]) for b in batches}
    assert shapes == {(8, 8), (6, 10), (10, 6)}


def test_order_is_a_function_of_seed_and_epoch(latents):
    bucket = LatentDataset(latents, "train", 8).bucket
    a, b = BucketBatchSampler(bucket, 4, seed=3), BucketBatchSampler(bucket, 4, seed=3)
    flat = lambda s, e: np.concatenate(s.epoch_batches(e)).tolist()
    assert flat(a, 0) == flat(b, 0)
    assert flat(a, 1) != flat(a, 0)
    assert flat(BucketBatchSampler(bucket, 4, seed=4), 0) != flat(a, 0)


def test_unit_weights_visit_every_row_once_per_epoch(latents):
    bucket = LatentDataset(latents, "train", 8).bucket
    rows = np.concatenate(BucketBatchSampler(bucket, 4).epoch_batches(5))
    assert sorted(rows.tolist()) == list(range(len(bucket)))


def test_two_ranks_split_an_epoch_without_overlap_or_loss(latents):
    bucket = LatentDataset(latents, "train", 8).bucket
    r0, r1 = (BucketBatchSampler(bucket, 4, seed=1, rank=r, world_size=2) for r in (0, 1))
    b0, b1 = r0.rank_batches(2), r1.rank_batches(2)
    single = BucketBatchSampler(bucket, 4, seed=1).epoch_batches(2)  # the whole epoch, unpadded
    assert len(b0) == len(b1) and 2 * len(b0) - len(single) in (0, 1)  # at most one pad batch
    interleaved = [b for pair in zip(b0, b1) for b in pair]        # rank 0, rank 1, rank 0, ...
    assert all(np.array_equal(x, y) for x, y in zip(interleaved, single))
    assert sorted(np.concatenate(interleaved[:len(single)]).tolist()) == list(range(len(bucket)))


def test_phase2_weights_visit_quality_3_rows_three_times(latents):
    ds = LatentDataset(latents, "train", 8)
    weights = phase_weights(ds, PhaseConfig(oversample_q3=3.0))
    rows = np.concatenate(BucketBatchSampler(ds.bucket, 4, weights=weights).epoch_batches(0))
    counts = np.bincount(rows, minlength=len(ds))
    assert (counts[ds.quality == 3] == 3).all() and (counts[ds.quality != 3] == 1).all()


def test_fractional_weights_are_met_in_expectation(latents):
    ds = LatentDataset(latents, "train", 8)
    sampler = BucketBatchSampler(ds.bucket, 4, weights=np.full(len(ds), 1.5))
    mean = np.mean([len(np.concatenate(sampler.epoch_batches(e))) for e in range(200)]) / len(ds)
    assert abs(mean - 1.5) < 0.02


def test_curation_score_is_z_aesthetic_plus_z_score_tag_with_nan_as_zero():
    aesthetic = np.array([np.nan, 4.0, 6.0])
    score_tag = np.array([10.0, 5.0, 0.0])
    z_s = np.array([1.0, 0.0, -1.0]) * np.sqrt(1.5)  # population std of (10, 5, 0) = 5 sqrt(2/3)
    np.testing.assert_allclose(curation_scores(aesthetic, score_tag), np.array([0.0, -1.0, 1.0]) + z_s)
    assert curate_top_k(aesthetic, score_tag, 2).tolist() == [0, 2]  # scores 1.22, -1, -0.22


def test_phase3_curation_trains_on_the_top_k_rows_only(latents):
    ds = LatentDataset(latents, "train", 8)
    weights = phase_weights(ds, PhaseConfig(curate_top_k=10))
    rows = np.concatenate(BucketBatchSampler(ds.bucket, 4, weights=weights).epoch_batches(0))
    top = curate_top_k(ds.aesthetic, ds.score_tag, 10)
    assert sorted(rows.tolist()) == sorted(top.tolist())
    scores = curation_scores(ds.aesthetic, ds.score_tag)
    assert scores[top].min() >= np.delete(scores, top).max()


# ---------------------------------------------------------------- loader, workers, resume

def test_dataloader_workers_yield_the_same_batches_as_the_main_process(latents):
    solo = make_loader(latents, loader_cfg(workers=0), PhaseConfig())
    pair = make_loader(latents, loader_cfg(workers=2), PhaseConfig())
    n = solo.batches_per_epoch()
    assert same_batches(take(pair, n), take(solo, n))


@pytest.mark.parametrize("world_size", [1, 2])
def test_resume_from_state_dict_yields_exactly_the_uninterrupted_batches(latents, world_size):
    cfg = loader_cfg(batch=4, tag_shuffle=True, tag_dropout=0.3, keep_tokens=1)
    phase = PhaseConfig(oversample_q3=3.0)
    for rank in range(world_size):
        straight = make_loader(latents, cfg, phase, rank, world_size)
        steps = straight.batches_per_epoch() + 5  # crosses an epoch boundary
        expected = take(straight, steps)
        first = make_loader(latents, cfg, phase, rank, world_size)
        head = take(first, 7)
        state = json.loads(json.dumps(first.state_dict()))  # what a checkpoint stores
        resumed = make_loader(latents, cfg, phase, rank, world_size)
        resumed.load_state_dict(state)
        assert same_batches(head + take(resumed, steps - 7), expected)
    assert state["epoch"] == 0 and state["position"] == 7


def test_resume_with_another_number_of_ranks_is_an_error(latents):
    state = make_loader(latents, loader_cfg(), PhaseConfig(), 0, 2).state_dict()
    with pytest.raises(ValueError, match="world_size"):
        make_loader(latents, loader_cfg(), PhaseConfig(), 0, 1).load_state_dict(state)


def test_tag_augmentations_are_off_by_default(latents):
    loader = make_loader(latents, loader_cfg(batch=6), PhaseConfig())
    ds = loader.dataset
    batch = take(loader, 1)[0]
    rows = loader.sampler.rank_batches(0)[0]
    assert torch.equal(batch["tag_ids"], torch.from_numpy(ds.tag_batch(rows)))
