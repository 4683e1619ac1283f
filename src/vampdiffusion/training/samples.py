"""Training previews with the EMA weights: the 4×4 grid of `train.sample_prompts` (rows) × quality tiers 0..3
(columns) with fixed noise, or — with `train.sample_prompts_file` — one image per line of a prompt file in the
line syntax of kohya sd-scripts (`prompt --n negative --w W --h H --d seed --s steps --l cfg --q tier`,
generation/prompts.py), each saved with its A1111 parameters so `vamp generate --from-png` regenerates it
from the exported model.

Decoded with the dataset's VAE; when that cannot be loaded, a latent preview (channels 0-2 as RGB,
upsampled ×8) is saved instead and a warning says why. A preview never stops training. Quality words are
not tags: they are left out of the tags (grid rows) or set the line's tier (prompt file).
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
from vampdiffusion.generation.prompts import DEFAULT_QUALITY, SamplePrompt, read_sample_prompts, split_quality
from vampdiffusion.latents.vae import VAE_FACTOR

log = logging.getLogger("vampdiffusion.train")

GRID_TIERS = (0, 1, 2, 3)  # columns: quality tier


def grid_prompts(cfg: Config) -> list[str]:
    """The grid's row prompts (`train.sample_prompts`, 1-4 of them), repeated to fill 4 rows."""
    prompts = [p.strip() for p in cfg.train.sample_prompts]
    return (prompts * 4)[:4]


def tags_text(prompt: str) -> str:
    """The prompt's tags without its quality words, as one comma-separated prompt."""
    return ", ".join(split_quality(prompt)[0])


def preview_lines(cfg: Config) -> list[SamplePrompt] | None:
    """The lines of train.sample_prompts_file, each size checked against the model; None without a file."""
    if not cfg.train.sample_prompts_file:
        return None
    lines = read_sample_prompts(cfg.train.sample_prompts_file)
    multiple = VAE_FACTOR * cfg.model.patch_size
    for i, line in enumerate(lines, 1):
        for side in (line.width, line.height):
            if side is not None and (side < multiple or side % multiple or side > multiple * cfg.model.max_grid):
                raise ValueError(f"{cfg.train.sample_prompts_file}: prompt {i}: size {side} must be a multiple of "
                                 f"{multiple} in {multiple}..{multiple * cfg.model.max_grid} (--w / --h)")
    return lines


@torch.no_grad()
def sample_grid_latents(model: torch.nn.Module, tag_ids: torch.Tensor, cfg: Config, latent_hw: tuple[int, int],
                        device: torch.device):
    """Grid: tag_ids (4, L) -> latents (16, C, h, w), row-major: prompt r, tier c at index 4r + c.
    Prompt file (train.sample_prompts_file): tag_ids (2n, L), the n lines' tags then their negative tags
    -> a list of n latents (1, C, h_i, w_i). Every rank of a distributed run calls this alike."""
    lines = preview_lines(cfg)
    if lines is not None:
        return [line_latents(model, line, tag_ids[i:i + 1], tag_ids[len(lines) + i:len(lines) + i + 1], cfg,
                             latent_hw, device, i) for i, line in enumerate(lines)]
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


def line_settings(line: SamplePrompt, cfg: Config, latent_hw: tuple[int, int], index: int) -> dict:
    """A prompt-file line's settings, the config's where the line gives none."""
    s = cfg.sample
    _, word_tier = split_quality(line.prompt)
    _, negative_tier = split_quality(line.negative, lowest=True)
    return {"width": line.width or VAE_FACTOR * latent_hw[1], "height": line.height or VAE_FACTOR * latent_hw[0],
            "seed": cfg.train.seed + index if line.seed is None else line.seed,
            "steps": line.steps or s.steps, "cfg_scale": s.cfg_scale if line.cfg_scale is None else line.cfg_scale,
            "quality": line.quality if line.quality is not None else (DEFAULT_QUALITY if word_tier is None else word_tier),
            "negative_quality": s.negative_quality if negative_tier is None else negative_tier}


def line_latents(model, line: SamplePrompt, tag_ids: torch.Tensor, negative_ids: torch.Tensor, cfg: Config,
                 latent_hw: tuple[int, int], device: torch.device, index: int) -> torch.Tensor:
    """One prompt-file image (1, C, h, w) in stored space, noise as `vamp generate` draws it for that seed."""
    from vampdiffusion.generation.generate import initial_noise
    k = line_settings(line, cfg, latent_hw, index)
    x_T = initial_noise([k["seed"]], (cfg.model.in_channels, k["height"] // VAE_FACTOR, k["width"] // VAE_FACTOR))
    x_T = x_T.to(device)
    quality = torch.tensor([k["quality"]], device=device)
    negative = negative_ids.to(device) if line.negative.strip() else None
    predict_v = guided_predictor(model, tag_ids.to(device), quality, k["cfg_scale"], cfg.sample.cfg_rescale,
                                 negative_quality=k["negative_quality"], negative_tag_ids=negative)
    x0 = sample(cfg.sample.sampler, predict_v, x_T, NoiseSchedule(cfg.diffusion), k["steps"], cfg.sample.alpha_bar_min)
    return to_stored_space(x0, cfg.latents)


def line_parameters(line: SamplePrompt, cfg: Config, latent_hw: tuple[int, int], index: int, model_name: str) -> str:
    """The A1111 parameters of a prompt-file image (what `vamp generate --from-png` reads)."""
    from vampdiffusion.generation.generate import Request, parameters_text
    k = line_settings(line, cfg, latent_hw, index)
    req = Request(line.prompt, k["quality"], None, k["steps"], cfg.sample.sampler, k["cfg_scale"],
                  cfg.sample.cfg_rescale, k["seed"], 1, (k["width"], k["height"]), k["negative_quality"],
                  line.negative)
    return parameters_text(line.prompt, req, k["seed"], "", model_name)


def contact_sheet(images: list[torch.Tensor]) -> np.ndarray:
    """Images (1, 3, H_i, W_i) in [-1, 1] side by side on one row, top-aligned on black: (max H, ΣW, 3) uint8."""
    H, W = max(im.shape[2] for im in images), sum(im.shape[3] for im in images)
    sheet = np.zeros((H, W, 3), np.uint8)
    x = 0
    for im in images:
        tile_ = tile(im, rows=1)
        sheet[:tile_.shape[0], x:x + tile_.shape[1]] = tile_
        x += tile_.shape[1]
    return sheet


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
        self.run_name = Path(run_dir).name
        self.lines = preview_lines(cfg)
        if self.lines is None:
            self.prompts = grid_prompts(cfg)
            self.tag_ids = tokenize([tags_text(p) for p in self.prompts])                 # (4, L)
        else:
            self.prompts = [line.prompt for line in self.lines]
            self.tag_ids = tokenize([tags_text(line.prompt) for line in self.lines]
                                    + [tags_text(line.negative) for line in self.lines])  # (2n, L)
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
        """Sample, decode and save `samples/step_NNNNNNNN.png` (prompt file: also one PNG per line,
        step_NNNNNNNN-KK.png, with its parameters); returns (path, image) or None on failure."""
        try:
            if self.lines is not None:
                return self.make_lines(model, step, latent_hw, device)
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

    def make_lines(self, model: torch.nn.Module, step: int, latent_hw: tuple[int, int], device: torch.device):
        decoded = [self.decode(z) for z in sample_grid_latents(model, self.tag_ids, self.cfg, latent_hw, device)]
        for i, (line, (image, _)) in enumerate(zip(self.lines, decoded)):
            text = {"parameters": line_parameters(line, self.cfg, latent_hw, i, self.run_name), "step": str(step)}
            write_png(self.folder / f"step_{step:08d}-{i:02d}.png", tile(image, rows=1), text)
        sheet = contact_sheet([image for image, _ in decoded])
        text = {"prompts": " | ".join(self.prompts), "step": str(step), "images": decoded[0][1],
                "prompt_file": self.cfg.train.sample_prompts_file}
        return write_png(self.folder / f"step_{step:08d}.png", sheet, text), sheet
