"""The 4×4 sample grid: fixed prompts (rows) × quality tiers 0..3 (columns), EMA weights, fixed noise.

Decoded with the dataset's VAE; when that cannot be loaded, a latent preview (channels 0-2 as RGB,
upsampled ×8) is saved instead and a warning says why. A preview never stops training.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from vampdiffusion.atomic import atomic_write_bytes
from vampdiffusion.config import Config
from vampdiffusion.latents.latent_space import to_stored_space
from vampdiffusion.diffusion.guidance import guided_predictor
from vampdiffusion.diffusion.samplers import sample
from vampdiffusion.diffusion.schedule import NoiseSchedule

log = logging.getLogger("vampdiffusion.train")

GRID_TIERS = (0, 1, 2, 3)  # columns: quality tier


def grid_prompts(cfg: Config) -> list[str]:
    """The grid's row prompts (`train.sample_prompts`, 1-4 of them), repeated to fill 4 rows."""
    prompts = [p.strip() for p in cfg.train.sample_prompts]
    return (prompts * 4)[:4]


@torch.no_grad()
def sample_grid_latents(model: torch.nn.Module, tag_ids: torch.Tensor, cfg: Config, latent_hw: tuple[int, int],
                        device: torch.device) -> torch.Tensor:
    """tag_ids (4, L) -> latents (16, C, h, w), row-major: prompt r, tier c at index 4r + c."""
    rows = tag_ids.shape[0]
    tags = tag_ids.repeat_interleave(len(GRID_TIERS), dim=0).to(device)             # (16, L)
    quality = torch.tensor(GRID_TIERS, device=device).repeat(rows)                    # (16,)
    gen = torch.Generator().manual_seed(cfg.train.seed)                               # same noise every grid
    x_T = torch.randn(len(tags), cfg.model.in_channels, *latent_hw, generator=gen).to(device)
    schedule = NoiseSchedule(cfg.diffusion)
    predict_v = guided_predictor(model, tags, quality, cfg.sample.cfg_scale, cfg.sample.cfg_rescale,
                                 negative_quality=cfg.sample.negative_quality)
    x0 = sample(cfg.sample.sampler, predict_v, x_T, schedule, cfg.sample.steps, cfg.sample.alpha_bar_min)
    return to_stored_space(x0, cfg.latents)


def latent_preview(latents: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) latents -> (B, 3, 8h, 8w) in [-1, 1]: channels 0-2 scaled by their spread."""
    x = latents[:, :3].float()
    x = x / (3 * x.std().clamp_min(1e-6))
    return torch.nn.functional.interpolate(x, scale_factor=8, mode="nearest").clamp(-1, 1)


def tile(images: torch.Tensor, rows: int) -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] -> one (rows·H, cols·W, 3) uint8 image."""
    B, _, H, W = images.shape
    cols = B // rows
    x = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()
    x = x.view(rows, cols, 3, H, W).permute(0, 3, 1, 4, 2).reshape(rows * H, cols * W, 3)
    return x.numpy()


def write_png(path: str | Path, image: np.ndarray, text: dict[str, str]) -> Path:
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    for k, v in text.items():
        info.add_text(k, v)
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", pnginfo=info)
    return atomic_write_bytes(path, buf.getvalue())


class SampleGrid:
    """Makes and saves grids; loads the VAE once, on first use."""

    def __init__(self, cfg: Config, run_dir: Path, tokenize: Callable[[list[str]], torch.Tensor],
                 load_vae: Callable[[], object]):
        self.cfg = cfg
        self.folder = Path(run_dir) / "samples"
        self.prompts = grid_prompts(cfg)
        self.tag_ids = tokenize(self.prompts)                                         # (4, L)
        self._load_vae = load_vae
        self._vae = None
        self._vae_failed = False

    def decode(self, latents: torch.Tensor) -> tuple[torch.Tensor, str]:
        if self._vae is None and not self._vae_failed:
            try:
                self._vae = self._load_vae()
            except Exception as e:  # any failure to find / read the VAE
                self._vae_failed = True
                log.warning("sample grids: cannot load the VAE (%s: %s); saving latent previews instead",
                            type(e).__name__, e)
        if self._vae is None:
            return latent_preview(latents), "latent preview (VAE unavailable)"
        return self._vae.decode(latents.to(self._vae.device)).float().cpu(), "decoded"

    def make(self, model: torch.nn.Module, step: int, latent_hw: tuple[int, int], device: torch.device):
        """Sample, decode and save `samples/step_NNNNNNNN.png`; returns (path, image) or None on failure."""
        try:
            latents = sample_grid_latents(model, self.tag_ids, self.cfg, latent_hw, device)
            images, how = self.decode(latents)
            grid = tile(images, rows=len(self.prompts))
            text = {"prompts": " | ".join(self.prompts), "columns": "quality " + ",".join(map(str, GRID_TIERS)),
                    "step": str(step), "sampler": self.cfg.sample.sampler, "steps": str(self.cfg.sample.steps),
                    "cfg_scale": str(self.cfg.sample.cfg_scale), "images": how}
            path = write_png(self.folder / f"step_{step:08d}.png", grid, text)
            return path, grid
        except Exception as e:  # a preview must never crash training
            log.warning("sample grid at step %d failed: %s: %s", step, type(e).__name__, e)
            return None
