"""Aspect-ratio buckets (docs/latents.md): ≈ equal pixel area, sides multiples of `bucket_step`, or one square.

A bucket is (width, height) in pixels. Each image goes to the bucket nearest its aspect ratio
(in log space, so 2:1 and 1:2 are equally far from 1:1), is resized keeping its aspect ratio
so it just covers the bucket, and is centre-cropped to it.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from vampdiffusion.config import LatentConfig
from vampdiffusion.latents.vae import VAE_FACTOR



def aspect_buckets(resolution: int, step: int, max_aspect: float) -> list[tuple[int, int]]:
    """Buckets with area <= resolution², sides multiples of `step`, long/short <= max_aspect, sorted by w/h."""
    area = resolution * resolution
    landscape = []
    for w in range(resolution - resolution % step, int(resolution * math.sqrt(max_aspect)) + step + 1, step):
        h = (area // w) // step * step            # the tallest multiple of step with w*h <= resolution²
        if h >= step and h <= w and w / h <= max_aspect + 1e-9:
            landscape.append((w, h))
    buckets = set(landscape) | {(h, w) for w, h in landscape}
    return sorted(buckets, key=lambda b: b[0] / b[1])


def square_buckets(resolution: int) -> list[tuple[int, int]]:
    return [(resolution, resolution)]


def bucket_set(cfg: LatentConfig) -> list[tuple[int, int]]:
    """The buckets named by `latents.buckets` ("aspect" | "square"), validated against the VAE's factor 8."""
    if cfg.resolution % VAE_FACTOR or cfg.bucket_step % VAE_FACTOR:
        raise ValueError(f"latents.resolution ({cfg.resolution}) and latents.bucket_step ({cfg.bucket_step}) "
                         f"must be multiples of {VAE_FACTOR}, the VAE's downsampling factor")
    if cfg.buckets == "square":
        return square_buckets(cfg.resolution)
    return aspect_buckets(cfg.resolution, cfg.bucket_step, cfg.max_aspect)


def assign_buckets(widths: np.ndarray, heights: np.ndarray, buckets: list[tuple[int, int]]) -> np.ndarray:
    """Index of the bucket nearest each image's aspect ratio: argmin |log(w/h) - log(bw/bh)|; ties -> lower index."""
    image_log_ar = np.log(np.asarray(widths, np.float64) / np.asarray(heights, np.float64))  # (N,)
    bucket_log_ar = np.log(np.array([w / h for w, h in buckets], np.float64))                 # (K,)
    return np.abs(image_log_ar[:, None] - bucket_log_ar[None, :]).argmin(axis=1)               # (N,)


def resize_and_crop(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Resize keeping the aspect ratio so the image covers `size` = (w, h), then centre-crop to it."""
    W, H = image.size
    w, h = size
    scale = max(w / W, h / H)
    new_w, new_h = max(w, round(W * scale)), max(h, round(H * scale))
    if (new_w, new_h) != (W, H):
        image = image.resize((new_w, new_h), Image.Resampling.LANCZOS)
    left, top = (new_w - w) // 2, (new_h - h) // 2
    return image.crop((left, top, left + w, top + h))


__all__ = ["aspect_buckets", "assign_buckets", "bucket_set", "resize_and_crop", "square_buckets"]
