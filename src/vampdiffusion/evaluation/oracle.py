"""The synthetic-set oracle: read back, by plain image analysis, what a synthetic image shows.

An image of the synthetic Danbooru set is one or two coloured shapes on one of a few backgrounds. The
oracle is given the set's `Palette` (its colours and backgrounds, e.g. read from the set's truth.jsonl) and
measures, with no learned model:

  background  the border rows' colours (top, bottom) → nearest background of the palette
  objects     pixels far from the per-row background → grouped by hue into the six palette colours;
              each colour group with enough pixels is an object
  shape       from the object's mask (its 50%-contrast region, holes filled): the boundary radius r(θ)
              around the centroid has 3-fold (triangle), 4-fold (square) or 5-fold (star) symmetry, or
              none (circle); the strongest normalised Fourier harmonic |c_k|/c_0, k = 3, 4, 5, decides
              (more robust on blurred, small, outlined or glowing objects than bounding-box fill or
              convex-hull solidity; docs/evaluation.md)
  sharpness   RMS Laplacian in a band around the objects' edges divided by the object/background
              contrast, after a 3×3 median that removes pixel noise (1/pixel² at 64 px;
              every image is first box-resized to 64×64)

Hue is what survives every style rendering (gothic darkening, pastel washing, shading, neon glow),
so colour is classified by hue of the saturated pixels, never by raw RGB distance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

# tuning of the analysis (fixed by measurement on the synthetic set itself; docs/evaluation.md)
FOREGROUND_DISTANCE = 0.18    # RGB distance (0..√3) from the row's background that marks an object pixel
MIN_CHROMA = 0.10             # max(rgb) − min(rgb) below this: no reliable hue (black outlines, grey shadows)
MIN_OBJECT_SHARE = 0.006      # a colour group is an object when it holds at least this share of the image
EDGE_LEVEL = 0.5              # an object's mask: pixels at >= this share of its contrast (90th pct distance)
HARMONIC_SCALE = (0.12, 0.08, 0.08)  # typical |c_k|/c_0 of a triangle (k=3), square (4), star (5) at 64 px
SYMMETRY_LEVEL = 0.4          # below this share of its typical strength in every k → circle
DARK_VALUE = 0.3              # max(rgb) below this: an outline / shading pixel (counts when far from the background)
RADIAL_BINS = 36              # angle bins of the boundary radius profile
MIN_CONTRAST = 0.05           # objects fainter than this against the background give no sharpness reading
ANALYSIS_SIDE = 64            # every image is read at this side (box-filtered down or resized up)
SHAPES = ("circle", "square", "triangle", "star")  # what classify_shape can answer


def _hue(rgb: np.ndarray) -> np.ndarray:
    """Hue in degrees [0, 360) of (..., 3) rgb in [0, 1]."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    mx, mn = rgb.max(-1), rgb.min(-1)
    c = np.maximum(mx - mn, 1e-8)
    h = np.where(mx == r, ((g - b) / c) % 6, np.where(mx == g, (b - r) / c + 2, (r - g) / c + 4))
    return (h * 60.0) % 360.0


RGB = tuple[int, int, int]


@dataclass(frozen=True)
class Palette:
    """What the oracle can read: the set's object colours (name -> rgb) and backgrounds (name -> top, bottom rgb)."""
    colours: dict[str, RGB]
    backgrounds: dict[str, tuple[RGB, RGB]]

    @property
    def colour_names(self) -> tuple[str, ...]:
        return tuple(self.colours)

    @property
    def hues(self) -> np.ndarray:
        """(n_colours,) hue of each colour, degrees."""
        return _hue(np.array([self.colours[c] for c in self.colours], np.float64) / 255.0)

    @property
    def background_rgb(self) -> np.ndarray:
        """(n_backgrounds, 2, 3) top and bottom colour of each background in [0, 1]."""
        return np.array([self.backgrounds[b] for b in self.backgrounds], np.float64) / 255.0


def palette_from_summary(summary: dict) -> Palette:
    """The palette of a synthetic set from its synth.json ("colours": name -> rgb, "backgrounds": name -> [top, bottom])."""
    return Palette({k: tuple(v) for k, v in summary["colours"].items()},
                   {k: (tuple(v[0]), tuple(v[1])) for k, v in summary["backgrounds"].items()})


def palette_from_truth(truth: dict[int, dict] | list[dict]) -> Palette:
    """The palette a synthetic set's truth records show (their objects' rgb, their backgrounds' rgb): the
    colours and backgrounds that occur in them."""
    records = truth.values() if isinstance(truth, dict) else truth
    colours: dict[str, RGB] = {}
    backgrounds: dict[str, tuple[RGB, RGB]] = {}
    for t in records:
        for o in t.get("objects", []):
            colours.setdefault(o["colour"], tuple(o["rgb"]))
        top, bottom = t["background_rgb"]
        backgrounds.setdefault(t["background"], (tuple(top), tuple(bottom)))
    if not colours or not backgrounds:
        raise ValueError("the truth records name no object colour or no background: not a synthetic set's truth.jsonl")
    return Palette(dict(sorted(colours.items())), dict(sorted(backgrounds.items())))


@dataclass
class OracleObject:
    colour: str
    shape: str
    pixels: int
    harmonics: tuple[float, float, float]  # |c_k| / c_0 of the boundary radius r(θ), k = 3, 4, 5
    cx: float         # centre x as a share of the width


@dataclass
class OracleReading:
    background: str
    objects: list[OracleObject]   # largest first
    sharpness: float


# ----------------------------------------------------------------------------
# Pieces
# ----------------------------------------------------------------------------

def classify_background(img: np.ndarray, palette: Palette) -> tuple[str, np.ndarray]:
    """img (H, W, 3) in [0, 1] → (background name, per-row background colour (H, 3)) from the border rows."""
    H = img.shape[0]
    k = max(1, H // 32)
    top = np.median(img[:k].reshape(-1, 3), axis=0)
    bottom = np.median(img[-k:].reshape(-1, 3), axis=0)
    rgb = palette.background_rgb                                                     # (n, 2, 3)
    d = np.linalg.norm(rgb[:, 0] - top, axis=1) + np.linalg.norm(rgb[:, 1] - bottom, axis=1)
    t = np.linspace(0.0, 1.0, H)[:, None]
    return tuple(palette.backgrounds)[int(d.argmin())], top * (1 - t) + bottom * t


def radial_harmonics(mask: np.ndarray, bins: int = RADIAL_BINS) -> tuple[float, float, float]:
    """Boundary radius r(θ) around the centroid (farthest pixel per angle bin) → |c_k|/c_0 for k = 3, 4, 5:
    a triangle has 3-fold symmetry, a square 4, a star 5, a circle none."""
    ys, xs = np.nonzero(mask)
    y0, x0 = ys.mean(), xs.mean()
    dx, dy = xs - x0, ys - y0
    theta = np.arctan2(dy, dx)
    b = ((theta + np.pi) / (2 * np.pi) * bins).astype(int) % bins
    r = np.zeros(bins)
    np.maximum.at(r, b, np.hypot(dx, dy) + 0.5)     # + half a pixel: the pixel's outer edge
    if (r == 0).any():                                # empty bins (tiny masks): interpolate around the circle
        idx = np.nonzero(r)[0]
        r = np.interp(np.arange(bins), idx, r[idx], period=bins)
    c = np.abs(np.fft.rfft(r)) / bins
    return float(c[3] / c[0]), float(c[4] / c[0]), float(c[5] / c[0])


def classify_shape(harmonics: tuple[float, float, float]) -> str:
    """3-, 4- or 5-fold symmetry, whichever stands out most against its typical strength; none → circle."""
    z = np.asarray(harmonics) / np.asarray(HARMONIC_SCALE)
    return "circle" if z.max() < SYMMETRY_LEVEL else ("triangle", "square", "star")[int(z.argmax())]


def edge_sharpness(img: np.ndarray, masks: list[np.ndarray], bg_rows: np.ndarray) -> float:
    """RMS Laplacian in a band around the objects' edges / object–background contrast (units of 1/pixel²
    at ANALYSIS_SIDE). A 3×3 median first removes pixel noise, which would otherwise read as detail."""
    grey = img.mean(-1)
    lap = ndimage.laplace(ndimage.median_filter(grey, size=3))
    values = []
    for m in masks:
        edge = m ^ ndimage.binary_erosion(m)
        band = ndimage.binary_dilation(edge, iterations=2)
        inside = ndimage.binary_erosion(m, iterations=2)
        if not inside.any():
            continue
        contrast = abs(np.median(grey[inside]) - np.median(bg_rows.mean(-1)[np.nonzero(m)[0]]))
        if contrast < MIN_CONTRAST:
            continue
        values.append(np.sqrt(np.mean(lap[band] ** 2)) / contrast)
    return float(np.mean(values)) if values else float("nan")


# ----------------------------------------------------------------------------
# The oracle
# ----------------------------------------------------------------------------

@dataclass
class Segmentation:
    """An image as the oracle reads it: the 64×64 float image, its background and its objects' masks."""
    img: np.ndarray               # (ANALYSIS_SIDE, ANALYSIS_SIDE, 3) float in [0, 1]
    background: str
    bg_rows: np.ndarray           # (ANALYSIS_SIDE, 3) the per-row background colour
    colours: list[str]            # per object, largest first
    masks: list[np.ndarray]       # per object (bool, holes filled), largest first


def analysis_image(img: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8, or float in [0, 1] → (ANALYSIS_SIDE, ANALYSIS_SIDE, 3) float64 in [0, 1]."""
    img = np.asarray(img)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"the oracle reads (H, W, 3) RGB images, got shape {img.shape}")
    if img.dtype != np.uint8:
        img = (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if img.shape[:2] != (ANALYSIS_SIDE, ANALYSIS_SIDE):  # one scale for every reading (box filter averages noise)
        img = np.asarray(Image.fromarray(img).resize((ANALYSIS_SIDE, ANALYSIS_SIDE), Image.Resampling.BOX))
    return img.astype(np.float64) / 255.0


def object_mask(k: int, cores: list[np.ndarray], contrast: float, dist: np.ndarray, chroma: np.ndarray,
                value: np.ndarray, near: list[np.ndarray]) -> np.ndarray | None:
    """Object k's mask: where it stands out by half its contrast (the 50% edge, unbiased under blur), connected
    to its own hue core; pixels two objects both claim go to the nearer core; None when nothing is left."""
    # dark pixels (outlines, hatching, eyes) belong to the object; on a dark background they are too close to it
    region = (dist > EDGE_LEVEL * contrast) & ((chroma > MIN_CHROMA) | (value < DARK_VALUE))
    lab, n = ndimage.label(region)
    keep = np.unique(lab[cores[k] & region])
    m = np.isin(lab, keep[keep > 0])
    for j in range(len(cores)):
        if j != k:
            m &= near[k] <= near[j]
    lab, n = ndimage.label(m)
    if n == 0:
        return None
    sizes = ndimage.sum(m, lab, index=range(1, n + 1))
    m = lab == (1 + int(np.argmax(sizes)))
    closed = ndimage.binary_closing(m, iterations=2)
    return m | (ndimage.binary_fill_holes(closed) & ~closed) | ndimage.binary_fill_holes(m)  # interior of a broken outline


def segment(img: np.ndarray, palette: Palette) -> Segmentation:
    """img (H, W, 3) uint8, or float in [0, 1] → the background and each object's colour and mask."""
    img = analysis_image(img)
    H, W, _ = img.shape
    background, bg_rows = classify_background(img, palette)
    names = palette.colour_names
    dist = np.linalg.norm(img - bg_rows[:, None, :], axis=-1)                       # (H, W)
    chroma = img.max(-1) - img.min(-1)                                               # (H, W)
    value = img.max(-1)                                                              # (H, W)
    hue = _hue(img)                                                                  # (H, W) degrees
    dh = np.abs((hue[..., None] - palette.hues + 180.0) % 360.0 - 180.0)            # (H, W, n_colours)
    group = dh.argmin(-1)
    candidate = (dist > FOREGROUND_DISTANCE) & (chroma > MIN_CHROMA)
    found, cores, contrasts = [], [], []
    for c in range(len(names)):
        core = candidate & (group == c)
        if core.sum() >= MIN_OBJECT_SHARE * H * W:
            found.append(c)
            cores.append(core)
            contrasts.append(np.percentile(dist[core], 90))
    near = [ndimage.distance_transform_edt(~core) for core in cores]
    colours, masks = [], []
    for k, c in enumerate(found):
        m = object_mask(k, cores, contrasts[k], dist, chroma, value, near)
        if m is not None:
            colours.append(names[c])
            masks.append(m)
    order = np.argsort([-int(m.sum()) for m in masks])
    return Segmentation(img=img, background=background, bg_rows=bg_rows, colours=[colours[i] for i in order],
                        masks=[masks[i] for i in order])


def read_image(img: np.ndarray, palette: Palette) -> OracleReading:
    """img (H, W, 3) uint8, or float in [0, 1] → background, objects (colour, shape), sharpness."""
    return reading_of(segment(img, palette))


def reading_of(seg: Segmentation) -> OracleReading:
    """The colour / shape / background / sharpness reading of a segmented image."""
    objects = []
    for colour, m in zip(seg.colours, seg.masks):
        harmonics = radial_harmonics(m)
        _, xs = np.nonzero(m)
        objects.append(OracleObject(colour=colour, shape=classify_shape(harmonics), pixels=int(m.sum()),
                                    harmonics=tuple(round(a, 4) for a in harmonics), cx=float(xs.mean() / m.shape[1])))
    return OracleReading(background=seg.background, objects=objects,
                         sharpness=edge_sharpness(seg.img, seg.masks, seg.bg_rows))
