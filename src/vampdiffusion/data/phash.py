"""64-bit pHash, bit for bit `imagehash.phash` (hash_size 8, highfreq_factor 4), vectorised over a batch.

Definition: greyscale (PIL "L"), Lanczos resize to 32x32, 2-D DCT-II (scipy.fftpack, unnormalised),
the top-left 8x8 coefficients incl. DC, bit = coefficient > their median; bits read row-major, first bit
most significant (so `phash_hex(h) == str(imagehash.phash(img))`).

Draft decoding: a JPEG can be decoded at 1/2, 1/4 or 1/8 scale (PIL `draft`), which is much faster,
but the 32x32 thumbnail then differs slightly. `phash_draft` uses the draft only when every one of the
64 coefficients is further than `DRAFT_MARGIN` from the median (so a small perturbation cannot flip a
bit) and falls back to the full decode otherwise; benchmarks/dedup.py measures the speed-up and checks
the equality on the synthetic set.
"""

from __future__ import annotations

import numpy as np
import scipy.fftpack
from PIL import Image

HASH_SIZE = 8
IMG_SIZE = 32                    # HASH_SIZE * highfreq_factor 4
DRAFT_MIN_SIDE = 256             # draft decodes to no less than this many pixels per side (8x the thumbnail)
DRAFT_MARGIN = 64.0              # |coefficient - median| every bit must clear to trust a draft decode


def grey32(img: Image.Image) -> np.ndarray:
    """(32, 32) uint8: imagehash's thumbnail."""
    return np.asarray(img.convert("L").resize((IMG_SIZE, IMG_SIZE), Image.Resampling.LANCZOS))


def low_dct(px: np.ndarray) -> np.ndarray:
    """(N, 32, 32) uint8 -> (N, 64) float64: the top-left 8x8 DCT-II coefficients."""
    x = np.asarray(px, dtype=np.float64)
    # D = DCT(DCT(pixels, axis=rows), axis=cols), exactly imagehash's order
    d = scipy.fftpack.dct(scipy.fftpack.dct(x, axis=-2), axis=-1)
    return d[..., :HASH_SIZE, :HASH_SIZE].reshape(-1, HASH_SIZE * HASH_SIZE)


def bits_to_uint64(bits: np.ndarray) -> np.ndarray:
    """(N, 64) bool, first bit most significant -> (N,) uint64."""
    return np.packbits(bits, axis=1).view(">u8").ravel().astype(np.uint64)


def phash_batch(px: np.ndarray) -> np.ndarray:
    """(N, 32, 32) uint8 thumbnails -> (N,) uint64 pHashes."""
    low = low_dct(px)
    med = np.median(low, axis=1, keepdims=True)
    return bits_to_uint64(low > med)


def phash(img: Image.Image) -> int:
    return int(phash_batch(grey32(img)[None])[0])


def phash_hex(h: int) -> str:
    return f"{int(h):016x}"


def hash_margin(px: np.ndarray) -> np.ndarray:
    """(N, 32, 32) -> (N,) smallest |coefficient - median|: how far the hash is from flipping a bit."""
    low = low_dct(px)
    return np.abs(low - np.median(low, axis=1, keepdims=True)).min(axis=1)


def phash_draft(im: Image.Image) -> int | None:
    """pHash of an opened, not yet loaded JPEG via a reduced decode; None when the margin test cannot
    vouch that the draft leaves the hash unchanged (decode fully then)."""
    if im.format != "JPEG" or min(im.size) < 2 * DRAFT_MIN_SIDE:
        return None
    im.draft("RGB", (max(DRAFT_MIN_SIDE, im.width // 8), max(DRAFT_MIN_SIDE, im.height // 8)))
    px = grey32(im.convert("RGB"))[None]
    if hash_margin(px)[0] > DRAFT_MARGIN:
        return int(phash_batch(px)[0])
    return None


__all__ = ["DRAFT_MARGIN", "grey32", "hash_margin", "low_dct", "phash", "phash_batch", "phash_draft", "phash_hex"]
