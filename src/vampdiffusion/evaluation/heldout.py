"""The held-out split as the evaluation walks it: loader batches, the prompts drawn from it, images generated
from its tags at a chosen tier (and style), and its latents decoded by the model's VAE (the real reference)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from vampdiffusion.generation.generate import decode, sample_latents
from vampdiffusion.latents.vae import VAE_FACTOR


def heldout_batches(ds, rows: np.ndarray, batch_size: int):
    """Loader-format batches of the given dataset rows, one latent size per batch."""
    for b in np.unique(ds.bucket[rows]):
        sel = rows[ds.bucket[rows] == b]
        for i in range(0, len(sel), batch_size):
            yield sel[i:i + batch_size], ds.__getitems__(sel[i:i + batch_size].tolist())


def pick_prompt_rows(ds, n: int, seed: int) -> np.ndarray:
    """n held-out rows (a seeded permutation, repeated when the split is smaller than n); n = 0: every
    held-out row once (in the permutation's order)."""
    perm = np.random.default_rng(seed).permutation(len(ds))
    return perm if n == 0 else np.resize(perm, n)


@torch.no_grad()
def generate_batches(gen, ds, rows: np.ndarray, quality: int, seeds: list[int], batch_size: int,
                     style_override: int | None = None):
    """Yield (positions, images): one image per dataset row from its held-out tags at the given quality
    tier (position k uses seeds[k]), at the row's latent size; batches never mix sizes."""
    s = gen.cfg.sample
    buckets = ds.bucket[rows]
    for b in np.unique(buckets):
        h, w = ds.bucket_shapes[b]
        positions = np.flatnonzero(buckets == b)
        for i in range(0, len(positions), batch_size):
            idx = positions[i:i + batch_size]
            B = len(idx)
            tag_ids = torch.from_numpy(ds.tag_batch(rows[idx]))
            style = None if style_override is None else torch.full((B,), style_override, dtype=torch.long)
            latents = sample_latents(gen, tag_ids, torch.full((B,), quality, dtype=torch.long),
                                     [seeds[k] for k in idx], (int(w) * VAE_FACTOR, int(h) * VAE_FACTOR),
                                     s.steps, s.sampler, s.cfg_scale, s.cfg_rescale, style,
                                     s.negative_quality)
            yield idx, decode(gen, latents)


def generate_rows(gen, ds, rows: np.ndarray, quality: int, seeds: list[int], batch_size: int,
                  style_override: int | None = None) -> list[Image.Image]:
    """generate_batches collected into a list in row order (for small sets: grids)."""
    images: list[Image.Image | None] = [None] * len(rows)
    for idx, batch in generate_batches(gen, ds, rows, quality, seeds, batch_size, style_override):
        for k, im in zip(idx, batch):
            images[k] = im
    return images  # type: ignore[return-value]


@torch.no_grad()
def decode_batches(gen, ds, rows: np.ndarray, batch_size: int):
    """Yield (positions, images): the held-out latents of these rows decoded by the model's VAE (the real reference)."""
    position = {int(r): k for k, r in enumerate(rows)}
    for sel, batch in heldout_batches(ds, rows, batch_size):
        yield np.array([position[int(r)] for r in sel]), decode(gen, batch["latent"])
