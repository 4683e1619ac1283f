"""Synthetic Danbooru dataset: procedural illustrations that their tags describe completely.

Each post is one or two coloured shapes on a background, drawn in one of the eight style-cluster
renderings (the style tags are the Danbooru names of style_clusters.yaml, so the real labelling code
finds the style), degraded by blur, noise and JPEG in step with its hidden quality u in [0, 1] (the
post's percentile within its upload year, from which its raw Danbooru score is drawn). The posts file
is in the Danbooru API schema; the set plants every case the pipeline must remove or survive
(too-small images, low scores, low aesthetic, sparse tags, near-duplicates, deleted / banned posts,
malformed lines, missing / truncated / empty / mis-sized images). `truth.jsonl` holds, per post, what
was drawn (objects with shape, colour, rgb and bbox; background; style; degradation) for evaluation.
Deterministic from the seed: the same arguments write byte-identical files.
"""

from __future__ import annotations

import bisect
import calendar
import functools
import hashlib
import io
import json
import math
import multiprocessing
import os
import random
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from scipy.ndimage import gaussian_filter
from scipy.special import ndtri

from vampdiffusion.atomic import atomic_write, atomic_write_json, atomic_write_text
from vampdiffusion.data.labels import style_names

# ----------------------------------------------------------------------------
# The visual vocabulary
# ----------------------------------------------------------------------------

SHAPES = ("circle", "square", "triangle", "star")
# six hues evenly spread around the colour wheel (0, 55, 120, 183, 231, 305 degrees): neighbours ~60 degrees
# apart, farther than the hue drift of a TAESD-XL decode of imprecise 8x8 latents (docs/data.md)
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (225, 30, 30),
    "yellow": (235, 215, 25),
    "green": (40, 175, 45),
    "aqua": (25, 185, 195),
    "blue": (40, 65, 235),
    "pink": (225, 45, 200),
}
# background tag -> (top rgb, bottom rgb); plain backgrounds have top == bottom
BACKGROUNDS: dict[str, tuple[tuple[int, int, int], tuple[int, int, int]]] = {
    "white_background": ((255, 255, 255), (255, 255, 255)),
    "black_background": ((18, 16, 24), (18, 16, 24)),
    "grey_background": ((128, 128, 128), (128, 128, 128)),
    "gradient_background": ((175, 170, 190), (245, 245, 250)),  # neutral: no palette hue (chroma < the oracle's 0.10)
}
# object radius as a share of the image side; a small object spans ~2 latent pixels at 64 px, the least the
# demo model reads reliably (docs/data.md)
SIZES = {"small_object": 0.17, "medium_object": 0.22, "large_object": 0.29}
POSITIONS = {"on_left": 0.3, "centered": 0.5, "on_right": 0.7}  # single object: x centre / side

STYLE_NAMES = tuple(style_names())  # the names of style_clusters.yaml, whose tags the synthetic styles carry
# the Danbooru tags each synthetic style carries (2 or 3 of them): all from style_clusters.yaml
STYLE_TAGS: dict[int, tuple[str, ...]] = {
    0: ("gothic", "dark", "dark_background"),
    1: ("pastel_colors", "soft_focus", "dreamy"),
    2: ("lineart", "manga", "sketch"),
    3: ("painterly", "oil_painting", "traditional_media"),
    4: ("flat_color", "vector_art", "limited_palette"),
    5: ("realistic", "semi-realistic", "detailed_background"),
    6: ("chibi", "cute", "super_deformed"),
    7: ("cyberpunk", "neon_lights", "glitch"),
}
# backgrounds each style may use (gothic and cyberpunk are drawn on black)
STYLE_BACKGROUNDS: dict[int, tuple[str, ...]] = {
    -1: tuple(BACKGROUNDS),
    0: ("black_background",),
    1: ("white_background", "gradient_background"),
    2: ("white_background",),
    3: ("white_background", "grey_background", "gradient_background"),
    4: tuple(BACKGROUNDS),
    5: ("gradient_background", "grey_background"),
    6: ("white_background", "grey_background", "gradient_background"),
    7: ("black_background",),
}
# true-of-every-image general tags, drawn 0..4 per post so that tag density varies
FILLER_TAGS = ("no_humans", "abstract", "geometric", "simple_shapes", "still_life", "minimalism", "symbol")
META_TAGS = ("commentary_request", "highres", "translated")
ARTISTS_PER_STYLE = 3  # each synthetic artist draws in one style

# quality bands: u below each edge -> (blur sigma in pixels at 64 px, noise std in [0,1], JPEG quality)
DEGRADATION_EDGES = (0.3, 0.4, 0.6, 0.8, 1.01)
# blur strong and pixel noise light, so that the tiers differ at the 8x latent scale too (strong pixel noise would
# put back the high frequencies the blur removes): the TAESD-XL latents' Laplacian energy rises with the tier
# (python benchmarks/oracle.py; docs/benchmarks.md#oracle)
DEGRADATION = ((2.6, 0.05, 20), (1.7, 0.02, 35), (1.2, 0.015, 55), (0.6, 0.006, 80), (0.0, 0.0, 95))

YEARS = tuple(range(2015, 2025))
# fractions of special posts (at least one each)
KIND_FRACTIONS = {
    "too_small": 0.03, "sparse_tags": 0.03, "duplicate": 0.03, "deleted": 0.004, "banned": 0.002,
    "missing_image": 0.001, "truncated_image": 0.001, "empty_image": 0.0004, "size_mismatch": 0.001,
}
MALFORMED_FRACTION = 0.001  # garbage lines in posts.jsonl
UNLABELED_FRACTION = 0.1    # posts drawn plainly, with no style tags (style label -1)


@dataclass
class SynthArgs:
    n: int = 5000          # posts
    size: int = 128        # image side, pixels
    seed: int = 0
    tar: bool = False      # write data-0NNN.tar shards instead of original/0NNN/<id>.<ext>
    workers: int = 2       # rendering processes


# ----------------------------------------------------------------------------
# Planning: every random choice, made once in the main process
# ----------------------------------------------------------------------------

def _degradation(u: float, r: random.Random) -> tuple[float, float, int]:
    band = bisect.bisect_right(DEGRADATION_EDGES, u)
    blur, noise, q = DEGRADATION[min(band, len(DEGRADATION) - 1)]
    jitter = r.uniform(0.9, 1.1)
    return round(blur * jitter, 3), round(noise * jitter, 4), int(q)


def _raw_score(u: float, year: int) -> int:
    # recency bias: the median raw score grows from e^1.8 ≈ 6 (2015) to e^3.15 ≈ 23 (2024)
    mu = 1.8 + 0.15 * (year - YEARS[0])
    z = float(ndtri(min(max(u, 1e-4), 1 - 1e-4)))
    return int(round(math.exp(mu + 0.9 * z))) - 2


def _objects(style: int, r: random.Random) -> list[dict]:
    if style == 6:  # chibi: one large centred object
        n_obj, size = 1, "large_object"
    else:
        n_obj = 1 if r.random() < 0.6 else 2
        size = r.choice(list(SIZES)) if n_obj == 1 else "small_object"  # two objects never overlap
    colours = r.sample(list(COLOURS), n_obj)
    objs = []
    for k in range(n_obj):
        r_k = SIZES[size] * r.uniform(0.88, 1.12 if n_obj == 1 else 1.0)
        if n_obj == 2:  # centres >= 0.46 apart, shapes <= 2 x 1.14 r = 0.39 wide: a gap of >= 4 px at 64 px
            cx, position = (0.25, 0.75)[k] + r.uniform(-0.02, 0.02), None
        elif size == "large_object":
            cx, position = 0.5 + r.uniform(-0.08, 0.08), "centered"
        else:
            position = r.choice(list(POSITIONS))
            cx = POSITIONS[position] + r.uniform(-0.1, 0.1)
        margin = 1.15 * r_k + 0.03  # keep the object inside the frame
        cy = 0.5 + r.uniform(-1, 1) * max(0.0, min(0.22, 0.5 - margin))
        cx = min(max(cx, margin), 1 - margin)
        objs.append({"shape": r.choice(SHAPES), "colour": colours[k], "size": size, "position": position,
                     "cx": round(cx, 4), "cy": round(cy, 4), "r": round(r_k, 4)})
    return objs


def _general_tags(p: dict, r: random.Random) -> list[str]:
    tags = []
    for o in p["objects"]:
        tags += [f"{o['colour']}_{o['shape']}", o["shape"]]
    tags.append(p["objects"][0]["size"])
    if p["objects"][0]["position"]:
        tags.append(p["objects"][0]["position"])
    tags.append(p["background"])
    if p["style"] >= 0:
        tags += r.sample(STYLE_TAGS[p["style"]], r.randint(2, 3))
    tags += r.sample(FILLER_TAGS, r.randint(0, 4))
    if p["kind"] == "sparse_tags":  # the object and its background only
        tags = [f"{p['objects'][0]['colour']}_{p['objects'][0]['shape']}", p["background"]]
    return sorted(dict.fromkeys(tags))


def _assign_kinds(n: int, r: random.Random) -> list[str]:
    kinds = ["normal"] * n
    order = list(range(n))
    r.shuffle(order)
    for kind, f in KIND_FRACTIONS.items():
        c = max(1, int(round(f * n)))
        # duplicates come later than their originals: take them from the later half
        pick = [i for i in order if kinds[i] == "normal" and (kind != "duplicate" or i >= n // 2)][:c]
        for i in pick:
            kinds[i] = kind
    return kinds


def plan_posts(a: SynthArgs) -> tuple[list[dict], list[int]]:
    """All posts' attributes and metadata, plus the line numbers where malformed lines go."""
    r = random.Random(a.seed)
    n = a.n
    # upload times: more posts in later years; ids grow with time as on Danbooru
    year_w = [1.0 + k / (len(YEARS) - 1) for k in range(len(YEARS))]
    times = sorted((y, r.randrange(365 * 86400)) for y in r.choices(YEARS, weights=year_w, k=n))
    ids, next_id = [], 100_000
    for _ in range(n):
        next_id += r.randint(1, 39)
        ids.append(next_id)
    kinds = _assign_kinds(n, r)
    posts = []
    for i in range(n):
        posts.append({"index": i, "id": ids[i], "year": times[i][0], "second": times[i][1], "kind": kinds[i],
                      "u": r.random(), "style": -1 if r.random() < UNLABELED_FRACTION else r.randrange(8),
                      "seed": [a.seed, 2, i]})
    normal_good = [p["index"] for p in posts if p["kind"] == "normal" and p["u"] > 0.45]
    for p in posts:
        if p["kind"] == "duplicate":
            src = posts[normal_good[r.randrange(bisect.bisect_left(normal_good, p["index"]))]]
            p["duplicate_of"] = src["id"]
            for key in ("style", "objects", "background", "general", "blur", "noise", "jpeg", "seed", "artist"):
                p[key] = src[key]
            p["u"] = min(max(src["u"] + r.gauss(0, 0.03), 0.46), 0.999)
            p["copy"] = r.choice(["recompress", "upscale"])
            p["copy_jpeg"] = r.randint(70, 90)
            p["side_src"] = a.size
            p["side"] = int(round(a.size * 1.25)) if p["copy"] == "upscale" else a.size
        else:
            p["duplicate_of"] = None
            p["objects"] = _objects(p["style"], r)
            p["background"] = r.choice(STYLE_BACKGROUNDS[p["style"]])
            p["general"] = _general_tags(p, r)
            p["blur"], p["noise"], p["jpeg"] = _degradation(p["u"], r)
            p["side"] = a.size // 2 if p["kind"] == "too_small" else a.size
            style_slot = p["style"] if p["style"] >= 0 else 8
            p["artist"] = f"synth_artist_{style_slot * ARTISTS_PER_STYLE + r.randrange(ARTISTS_PER_STYLE):02d}"
        p["ext"] = r.choices(["jpg", "png", "webp"], weights=[0.6, 0.3, 0.1])[0]
        p["score"] = _raw_score(p["u"], p["year"])
        # LAION-style aesthetic score, correlated with quality
        p["aesthetic"] = round(min(max(3.6 + 3.5 * p["u"] + r.gauss(0, 0.35), 1.0), 9.5), 3)
        p["rating"] = r.choices(["g", "s", "q"], weights=[0.85, 0.12, 0.03])[0]
        p["meta"] = sorted(r.sample(META_TAGS, r.randint(0, 2)))
        down = min(int(r.expovariate(1.0) * (0.1 * abs(p["score"]) + 0.3)), 50)
        p["up_score"], p["down_score"] = p["score"] + down, -down
        p["fav_count"] = max(0, int(round(1.3 * p["score"] + r.gauss(0, 1))))
    malformed_at = sorted(r.sample(range(n), max(1, int(round(MALFORMED_FRACTION * n)))))
    return posts, malformed_at


# ----------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------

LIGHTING_WAVES = 3
LIGHTING_AMPLITUDE = 0.1  # brightness share of the lighting field (white becomes 230..255)
SUPERSAMPLE = 3  # masks are drawn at 3x and box-filtered down (anti-aliasing)


def _vertices(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if shape == "square":
        h = 0.86 * r
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if shape == "triangle":
        R = 1.2 * r
        return [(cx + R * math.cos(math.radians(a)), cy + 0.2 * R + R * math.sin(math.radians(a)))
                for a in (-90, 30, 150)]
    if shape == "star":
        R, ri = 1.2 * r, 0.42 * 1.2 * r
        return [(cx + (R if k % 2 == 0 else ri) * math.cos(math.radians(-90 + 36 * k)),
                 cy + (R if k % 2 == 0 else ri) * math.sin(math.radians(-90 + 36 * k))) for k in range(10)]
    raise ValueError(f"unknown shape {shape!r}")


def _bbox(o: dict, side: int) -> list[int]:
    if o["shape"] == "circle":
        x0, y0, x1, y1 = o["cx"] - o["r"], o["cy"] - o["r"], o["cx"] + o["r"], o["cy"] + o["r"]
    else:
        v = np.array(_vertices(o["shape"], o["cx"], o["cy"], o["r"]))
        (x0, y0), (x1, y1) = v.min(0), v.max(0)
    return [int(math.floor(x0 * side)), int(math.floor(y0 * side)), int(math.ceil(x1 * side)), int(math.ceil(y1 * side))]


def _mask(o: dict, side: int, outline: float = 0.0) -> np.ndarray:
    """(side, side) float coverage of the shape; outline > 0 draws only a stroke of that width (share of side)."""
    S = side * SUPERSAMPLE
    im = Image.new("L", (S, S), 0)
    d = ImageDraw.Draw(im)
    w = max(1, int(round(outline * S)))
    if o["shape"] == "circle":
        box = [(o["cx"] - o["r"]) * S, (o["cy"] - o["r"]) * S, (o["cx"] + o["r"]) * S, (o["cy"] + o["r"]) * S]
        d.ellipse(box, fill=None if outline else 255, outline=255 if outline else None, width=w if outline else 1)
    else:
        pts = [(x * S, y * S) for x, y in _vertices(o["shape"], o["cx"], o["cy"], o["r"])]
        if outline:
            d.line(pts + [pts[0]], fill=255, width=w, joint="curve")
        else:
            d.polygon(pts, fill=255)
    return np.asarray(im.resize((side, side), Image.Resampling.BOX), dtype=np.float32) / 255.0


@functools.lru_cache(maxsize=32)
def _background_cached(name: str, side: int) -> np.ndarray:
    top, bottom = (np.array(c, np.float32) / 255.0 for c in BACKGROUNDS[name])
    t = np.linspace(0.0, 1.0, side, dtype=np.float32)[:, None, None]
    return np.broadcast_to(top * (1 - t) + bottom * t, (side, side, 3)).copy()


def _background(name: str, side: int) -> np.ndarray:
    return _background_cached(name, side).copy()


@functools.lru_cache(maxsize=8)
def _grid(side: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32) / side
    return yy, xx


def _over(img: np.ndarray, m: np.ndarray, rgb: np.ndarray) -> np.ndarray:
    return img * (1 - m[..., None]) + rgb * m[..., None]


def render_clean(p: dict, side: int, rng: np.random.Generator) -> np.ndarray:
    """(side, side, 3) float in [0, 1]: the post's objects on its background in its style, before degradation."""
    img = _background(p["background"], side)
    s = side / 64.0  # pixel lengths are specified at 64 px
    yy, xx = _grid(side)
    style = p["style"]
    if style == 5:  # realistic: soft drop shadow under every object
        for o in p["objects"]:
            sh = _mask(dict(o, cx=o["cx"] + 0.035, cy=o["cy"] + 0.035), side)
            img *= 1 - 0.35 * gaussian_filter(sh, 1.5 * s)[..., None]
    for o in p["objects"]:
        rgb = np.array(COLOURS[o["colour"]], np.float32) / 255.0
        m = _mask(o, side)
        if style == 0:  # gothic: deep, darkened colour
            img = _over(img, m, rgb * 0.7)
        elif style == 1:  # pastel: washed towards white
            img = _over(img, m, 0.55 * rgb + 0.45)
        elif style == 2:  # bold lineart: fill, screen-tone hatching, thick black outline
            hatch = ((np.arange(side)[:, None] + np.arange(side)[None, :]) % max(3, int(6 * s)) == 0)
            img = _over(img, m, rgb)
            img = _over(img, m * hatch * 0.35, np.zeros(3, np.float32))
            img = _over(img, _mask(o, side, outline=0.05), np.zeros(3, np.float32))
        elif style == 5:  # realistic: light from the upper left, specular highlight
            d = np.hypot(xx - (o["cx"] - 0.35 * o["r"]), yy - (o["cy"] - 0.35 * o["r"])) / o["r"]
            shade = np.clip(1.25 - 0.55 * d, 0.5, 1.2)[..., None]
            spec = 0.55 * np.exp(-(d / 0.25) ** 2)[..., None]
            img = _over(img, m, np.clip(rgb * shade + spec, 0, 1))
        elif style == 6:  # chibi: a cute face on the object
            img = _over(img, m, rgb)
            for ex in (-0.09, 0.09):
                eye = dict(shape="circle", cx=o["cx"] + ex, cy=o["cy"] - 0.01, r=0.035)
                img = _over(img, _mask(eye, side), np.full(3, 0.05, np.float32))
            cheek = np.exp(-(((xx - o["cx"]) / 0.05) ** 2 + ((yy - o["cy"] - 0.08) / 0.02) ** 2))
            img = _over(img, m * cheek * 0.6, np.array([0.05, 0.05, 0.05], np.float32))
        elif style == 7:  # cyberpunk: neon stroke with glow, faint fill
            stroke = _mask(o, side, outline=0.05)
            img = _over(img, m, rgb * 0.25)
            img = np.clip(img + rgb * gaussian_filter(stroke, 2.0 * s)[..., None] * 1.2, 0, 1)
            img = _over(img, stroke, np.clip(rgb * 1.1 + 0.1, 0, 1))
        elif style == -1:  # unlabeled: plain fill, thin dark outline
            img = _over(img, m, rgb)
            img = _over(img, _mask(o, side, outline=0.02), np.full(3, 0.15, np.float32))
        else:  # 3 painterly (texture added below), 4 flat color
            img = _over(img, m, rgb)
    if style == 0:  # vignette
        r2 = (xx - 0.5) ** 2 + (yy - 0.5) ** 2
        img *= (1 - 0.9 * r2)[..., None]
    elif style == 1:  # soft focus: glow of a blurred copy
        img = 0.6 * img + 0.4 * gaussian_filter(img, (1.5 * s, 1.5 * s, 0))
    elif style == 3:  # brush strokes: streaky multiplicative texture
        tex = gaussian_filter(rng.standard_normal((side, side)).astype(np.float32), (0.6 * s, 3.0 * s))
        tex /= tex.std() + 1e-6
        img = img * (1 + 0.12 * tex[..., None])
    elif style == 7:  # scanlines and one glitched band
        img[::3] *= 0.7
        y0 = int(rng.integers(side // 8, side - side // 4))
        h = max(2, side // 16)
        img[y0:y0 + h] = np.roll(img[y0:y0 + h], int(round(0.03 * side)), axis=1)
    img = _lighting(img, rng)
    return np.clip(img, 0.0, 1.0)


def _lighting(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Faint per-image low-frequency lighting (a few % of brightness): it gives every image its own pHash,
    as real illustrations have, so that only the planted copies are near-duplicates."""
    side = img.shape[0]
    yy, xx = _grid(side)
    f = np.zeros((side, side), np.float32)
    for _ in range(LIGHTING_WAVES):
        fx, fy = rng.uniform(-2.0, 2.0, size=2)  # cycles per image
        f += np.cos(2 * np.pi * (fx * xx + fy * yy) + rng.uniform(0, 2 * np.pi)).astype(np.float32)
    g = ((f / (np.abs(f).max() + 1e-6) + 1) / 2)[..., None]  # in [0, 1]
    return img * (1 - 2 * LIGHTING_AMPLITUDE * g) + LIGHTING_AMPLITUDE * g


def _jpeg_roundtrip(im: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def render_degraded(p: dict, side: int) -> Image.Image:
    """The post's image with its quality band's blur, noise and JPEG artefacts (JPEG applied when saving)."""
    rng = np.random.default_rng(p["seed"])
    img = render_clean(p, side, rng)
    im = Image.fromarray((img * 255 + 0.5).astype(np.uint8), "RGB")
    if p["blur"] > 0:  # PIL's radius is the Gaussian's standard deviation
        im = im.filter(ImageFilter.GaussianBlur(p["blur"] * side / 64.0))
    if p["noise"] > 0:
        noisy = np.asarray(im, np.float32) + (255 * p["noise"]) * rng.standard_normal((side, side, 3), dtype=np.float32)
        im = Image.fromarray(np.clip(noisy + 0.5, 0, 255).astype(np.uint8), "RGB")
    return im


def _encode(im: Image.Image, ext: str, jpeg_quality: int) -> bytes:
    buf = io.BytesIO()
    if ext == "jpg":
        im.save(buf, format="JPEG", quality=jpeg_quality)
        return buf.getvalue()
    if jpeg_quality < 95:  # lossless container, lossy past
        im = _jpeg_roundtrip(im, jpeg_quality)
    if ext == "png":
        im.save(buf, format="PNG", compress_level=1)
    else:
        im.save(buf, format="WEBP", lossless=True, method=0)
    return buf.getvalue()


def render_file(p: dict) -> bytes:
    """The encoded file of one post (duplicates: the source image, resized or re-compressed)."""
    if p["duplicate_of"] is None:
        return _encode(render_degraded(p, p["side"]), p["ext"], p["jpeg"])
    src = Image.open(io.BytesIO(_encode(render_degraded(p, p["side_src"]), "png", p["jpeg"]))).convert("RGB")
    if p["copy"] == "upscale":
        src = src.resize((p["side"], p["side"]), Image.Resampling.BICUBIC)
    return _encode(src, "jpg" if p["ext"] == "jpg" else p["ext"], p["copy_jpeg"])


# ----------------------------------------------------------------------------
# Records
# ----------------------------------------------------------------------------

def _created_at(year: int, second: int) -> str:
    t = time.gmtime(calendar.timegm((year, 1, 1, 0, 0, 0, 0, 0, 0)) + second)
    return f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}.000-05:00"


def post_record(p: dict, md5: str, width: int, height: int) -> dict:
    """The post in the Danbooru JSON API schema."""
    general, artist, meta = p["general"], [p["artist"]], p["meta"]
    copyright_ = ["original"]
    return {
        "id": p["id"], "created_at": _created_at(p["year"], p["second"]),
        "score": p["score"], "up_score": p["up_score"], "down_score": p["down_score"], "fav_count": p["fav_count"],
        "rating": p["rating"], "md5": md5, "file_ext": p["ext"], "image_width": width, "image_height": height,
        "tag_string": " ".join(sorted(general + artist + copyright_ + meta)),
        "tag_string_general": " ".join(general), "tag_string_character": "",
        "tag_string_copyright": " ".join(copyright_), "tag_string_artist": " ".join(artist),
        "tag_string_meta": " ".join(meta), "tag_count_general": len(general),
        "is_deleted": p["kind"] == "deleted", "is_banned": p["kind"] == "banned",
        "parent_id": p["duplicate_of"], "has_children": False, "aesthetic": p["aesthetic"],
    }


def truth_record(p: dict, where: tuple[str, str] | None) -> dict:
    """What post p shows; `where` = (file relative to the set, tar member or ""), None for a missing image."""
    side = p["side"]
    scale = side / p.get("side_src", side)
    objects = []
    for o in p["objects"]:
        x0, y0, x1, y1 = _bbox(o, p.get("side_src", side))
        objects.append({"shape": o["shape"], "colour": o["colour"], "rgb": list(COLOURS[o["colour"]]),
                        "size": o["size"], "position": o["position"],
                        "bbox": [int(x0 * scale), int(y0 * scale), int(math.ceil(x1 * scale)), int(math.ceil(y1 * scale))]})
    return {
        "id": p["id"], "kind": p["kind"], "path": where[0] if where else None,
        "member": where[1] if where else None, "width": side, "height": side,
        "tags": p["general"], "prompt": ", ".join(t.replace("_", " ") for t in p["general"]),
        "objects": objects, "background": p["background"], "background_rgb": [list(c) for c in BACKGROUNDS[p["background"]]],
        "style": p["style"], "style_name": STYLE_NAMES[p["style"]] if p["style"] >= 0 else "unlabeled",
        "u": round(p["u"], 4), "blur_sigma": p["blur"] * side / 64.0, "noise_std": p["noise"], "jpeg_quality": p["jpeg"],
        "score": p["score"], "year": p["year"], "aesthetic": p["aesthetic"], "duplicate_of": p["duplicate_of"],
        "copy": p.get("copy"),
    }


def _render_job(p: dict) -> bytes:
    return render_file(p)


def synthesize(a: SynthArgs, out: Path) -> dict:
    """Write posts.jsonl, the images, truth.jsonl and synth.json to `out`; return the summary."""
    if a.n < 100:
        raise ValueError(f"--n must be >= 100 so every planted case occurs at least once, got {a.n}")
    if a.size < 32:
        raise ValueError(f"--size must be >= 32 pixels, got {a.size}")
    t0 = time.time()
    out.mkdir(parents=True, exist_ok=True)
    posts, malformed_at = plan_posts(a)
    pool = multiprocessing.get_context("fork").Pool(a.workers) if a.workers > 1 else None
    files = pool.imap(_render_job, posts, chunksize=32) if pool else map(render_file, posts)
    records, truths, members = [], [], {}  # members: tar layout only (a shard is written whole)
    try:
        for p, data in zip(posts, files):  # in post order: the output does not depend on the workers
            side = p["side"]
            if p["kind"] == "truncated_image":
                data = data[: len(data) * 2 // 5]
            elif p["kind"] == "empty_image":
                data = b""
            md5 = hashlib.md5(data).hexdigest()
            w = side + 7 if p["kind"] == "size_mismatch" else side
            records.append(post_record(p, md5, w, side))
            shard = p["id"] % 1000
            name = f"{p['id']}.{p['ext']}"
            rel = (f"data-{shard:04d}.tar", name) if a.tar else (f"original/{shard:04d}/{name}", "")
            if p["kind"] != "missing_image":
                if a.tar:
                    members.setdefault(shard, []).append((name, data))
                else:
                    _write_image(out / "original" / f"{shard:04d}" / name, data)
            truths.append(truth_record(p, None if p["kind"] == "missing_image" else rel))
    finally:
        if pool:
            pool.terminate()
    for shard, items in sorted(members.items()):
        atomic_write(out / f"data-{shard:04d}.tar", lambda tmp, items=items: _write_tar(tmp, items))
    os.sync()  # one flush for all image files instead of an fsync each (regenerable data)

    lines = [json.dumps(r, separators=(",", ":")) for r in records]
    garbage = ['{"id": 12, "score": ', "not json at all", '["an", "array"]', '{"id": "x-not-an-id", "md5": 5}']
    for k, at in enumerate(reversed(malformed_at)):
        lines.insert(at, garbage[k % len(garbage)])
    atomic_write_text(out / "posts.jsonl", "\n".join(lines) + "\n")
    atomic_write_text(out / "truth.jsonl", "\n".join(json.dumps(t, separators=(",", ":")) for t in truths) + "\n")
    kinds: dict[str, int] = {}
    for p in posts:
        kinds[p["kind"]] = kinds.get(p["kind"], 0) + 1
    summary = {
        "n": a.n, "size": a.size, "seed": a.seed, "layout": "tar" if a.tar else "folder",
        "kinds": kinds, "malformed_lines": len(malformed_at), "colours": COLOURS, "shapes": list(SHAPES),
        "backgrounds": {k: [list(c) for c in v] for k, v in BACKGROUNDS.items()},
        "styles": {str(k): {"name": STYLE_NAMES[k], "tags": list(v)} for k, v in STYLE_TAGS.items()},
        "degradation": {"edges": list(DEGRADATION_EDGES), "blur_noise_jpeg": [list(d) for d in DEGRADATION]},
        "seconds": round(time.time() - t0, 2),
    }
    atomic_write_json(out / "synth.json", summary)
    return summary


def _write_image(path: Path, data: bytes) -> None:
    """temp file + rename (never a torn file); durability comes from the single os.sync() after all images."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _write_tar(tmp: Path, items: list[tuple[str, bytes]]) -> None:
    with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tf:
        for name, data in items:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tf.addfile(info, io.BytesIO(data))
