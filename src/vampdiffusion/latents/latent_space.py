"""The model's latent space: stored latents, optionally normalised per channel (`latents.normalize`).

Stored latents are what `vamp data encode` writes (VAE latents × scaling_factor) and what the VAE
decodes. With `latents.normalize: channel` the diffusion model trains and samples on

    x = (z − mean_c) / std_c        (per latent channel c; z = stored latent)

with mean_c, std_c measured on the training latents (`channel_stats`, written to dataset.json by
`vamp data encode`) and saved in the model's config, so every channel has zero mean and unit variance
and the noise schedule gives every channel the same SNR (EDM2, Karras et al. 2024, normalises SD
latents the same way). TAESD-XL's channels differ by 2× in spread (std 1.33 / 0.71 / 0.82 / 0.63 on the
demo set), so without it the low-variance channels are drowned at a lower noise level than the others.
Samplers return stored latents: everything after sampling (decode, saved latents) is in stored space.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from vampdiffusion.config import ConfigError, LatentConfig

STATS_MAX_ROWS = 10_000   # latents behind the channel statistics (evenly spread over the training rows)


def channel_affine(lc: LatentConfig, channels: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(mean, std) as (1, C, 1, 1) tensors for `latents.normalize: channel`, None for "none"."""
    if lc.normalize == "none":
        return None
    mean, std = lc.channel_mean, lc.channel_std
    if len(mean) != channels or len(std) != channels:
        raise ConfigError(f"latents.normalize=channel needs {channels} values in latents.channel_mean and "
                          f"latents.channel_std, got {len(mean)} and {len(std)}; train from a latent folder written "
                          f"by `vamp data encode` (its dataset.json holds them) or set both lists")
    if not all(np.isfinite(mean)) or not all(np.isfinite(s) and s > 0 for s in std):
        raise ConfigError(f"latents.channel_mean must be finite and latents.channel_std positive, got {mean} / {std}")
    return (torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1),
            torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))


def standardise(z: torch.Tensor, affine: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
    """Stored latents (B, C, h, w) -> the model's, with channel_affine's (mean, std) computed once (hot paths)."""
    if affine is None:
        return z
    mean, std = (a.to(z.device, z.dtype) for a in affine)   # no copy when already on z's device and dtype
    return (z - mean) / std


def to_model_space(z: torch.Tensor, lc: LatentConfig) -> torch.Tensor:
    """Stored latents (B, C, h, w) -> what the diffusion model sees."""
    return standardise(z, channel_affine(lc, z.shape[1]))


def to_stored_space(x: torch.Tensor, lc: LatentConfig) -> torch.Tensor:
    """The model's latents (B, C, h, w) -> stored latents (what the VAE decodes)."""
    affine = channel_affine(lc, x.shape[1])
    if affine is None:
        return x
    mean, std = (a.to(x.device, x.dtype) for a in affine)
    return x * std + mean


def channel_stats(root: str | Path, max_rows: int = STATS_MAX_ROWS) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of a finished latent dataset's training rows (every row when the index
    has no split column), over up to max_rows latents evenly spread over them; float64 sums."""
    import pyarrow.parquet as pq
    from vampdiffusion.latents.shards import open_shard, read_shards_json
    root = Path(root)
    records = {r["shard"]: r for r in read_shards_json(root)}
    index = pq.read_table(root / "index.parquet")
    shard, row = index["shard"].to_numpy(), index["row"].to_numpy()
    if "split" in index.column_names:
        train = np.asarray(index["split"].to_pylist()) == "train"
        if train.any():
            shard, row = shard[train], row[train]
    if len(shard) == 0:
        raise ValueError(f"{root}: no latents to measure channel statistics on")
    pick = np.unique(np.linspace(0, len(shard) - 1, min(max_rows, len(shard))).round().astype(np.int64))
    total = sq = count = 0.0
    for s in np.unique(shard[pick]):
        rows = np.sort(row[pick][shard[pick] == s])
        x = np.asarray(open_shard(root, records[int(s)])[rows], np.float64)      # (n, C, h, w)
        total = total + x.sum(axis=(0, 2, 3))
        sq = sq + (x * x).sum(axis=(0, 2, 3))
        count += x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / count
    std = np.sqrt(np.maximum(sq / count - mean * mean, 0.0))
    return [round(float(m), 6) for m in mean], [round(float(v), 6) for v in std]


__all__ = ["STATS_MAX_ROWS", "channel_affine", "channel_stats", "standardise", "to_model_space",
           "to_stored_space"]
