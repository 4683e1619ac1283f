"""The synthetic set's style oracle: which of the eight renderings (data/synth.py `render_clean`) an image shows,
by plain image analysis on the colour oracle's segmentation (oracle.py `segment`: background, object masks).

Sixteen features, each aimed at what one rendering draws (per object: `core` = the mask eroded by 2 px, the
mean over objects; NaN without an object):

  bg_value        median value max(rgb) of the background (>= 4 px from every object): gothic, cyberpunk on black
  bg_texture      std of the grey high-pass (grey − Gaussian σ 1.5) in the background: painterly brush strokes
  bg_streaks      log(vertical / horizontal gradient energy) of (grey − Gaussian σ 3) in the background:
                  the brush strokes run horizontally
  fill_value      median value in the core / the palette colour's: gothic 0.7, neon fill 0.25, pastel > 1
  fill_saturation median saturation in the core / the palette colour's: pastel washes towards white
  edge_band       median value of the mask's outer 2-px band / the core's: lineart's black outline (< 1),
                  the neon stroke (> 1)
  outside_glow    median value of the 3-px band outside the object − the background's: neon glow (+), shadow (−)
  texture         std of the value high-pass (σ 1) in the core / the core's value: hatching, brush, eyes
  highlight       98th percentile − median of min(rgb) in the core: the realistic specular spot
  shading         (upper-left half − lower-right half) mean value of the core / the core's: light from the upper left
  face            colour distance (3×3 mean) from the fill of the core's most distinct point and of its mirror
                  image about the object's vertical axis, the lesser, / |fill|: a pair of eyes (chibi)
  deep_value      mean value of the mask's deepest quarter (inner distance / its maximum > 0.75) / the palette's
  rim_value       the brightest mean value of the outer three quarters / the palette's: with deep_value, the
                  neon outline's hollow centre, which survives blur and the VAE where the thin stroke does not
  second_object   pixels of the second object / the first's (0 with one): chibi draws one object
  off_centre      |x centre − 0.5| of the largest object: chibi's is centred
  area            the largest object's share of the image: chibi's is large

Decision: the style whose diagonal Gaussian fits best, i.e. nearest centroid in per-style standardised space,
argmin_k Σ_f ((x_f − c_kf) / s_kf)² + 2 ln s_kf, a feature without a value left out. The centroids c and scales s
(the per-style std, floored at 0.3 × the std over all styles, so that no feature can veto a style alone) are
measured on the set's own images, as rendered and after a TAESD-XL round trip, by benchmarks/style_oracle.py
(docs/evaluation.md#style-oracle). Scanlines, hatching and the glitch band are left out: they do not survive the
VAE at 64 px (8×8 latents). READABLE_STYLES: the styles the oracle reads after that round trip (all eight).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from vampdiffusion.evaluation.oracle import Palette, Segmentation, segment

STYLE_FEATURES = ("bg_value", "bg_texture", "bg_streaks", "fill_value", "fill_saturation", "edge_band",
                  "outside_glow", "texture", "highlight", "shading", "face", "deep_value", "rim_value",
                  "second_object", "off_centre", "area")
NUM_STYLES = 8
BACKGROUND_GAP = 4            # background pixels are at least this far (px at 64) from every object
MIN_BACKGROUND = 200          # fewer background pixels than this: the top and bottom 3 rows instead
SCALE_FLOOR = 0.3             # a style's scale is at least this share of the feature's std over all styles
# "dark" as the research document's gothic prompt means it: a dark background and a darkened fill (gothic
# draws 0.7 × the colour on black; every other rendering but cyberpunk's fills at >= 0.85 of it, and
# backgrounds other than black read >= 0.45; python benchmarks/style_oracle.py prints the per-style means)
DARK_BACKGROUND_VALUE = 0.3
DARK_FILL_VALUE = 0.8

# measured by `python benchmarks/style_oracle.py --fit` (seed 101: the set's files and their TAESD-XL round trips)
STYLE_CENTROIDS: dict[int, tuple[float, ...]] = {
    0: (0.11832, 0.0031928, -0.0057891, 0.65503, 0.90627, 0.81858, 0.061425, 0.015302, 0.037332, -0.0042114, 0.12169, 0.67226, 0.6654, 0.26913, 0.15143, 0.11726),
    1: (0.89949, 0.0030244, 0.085162, 1.0454, 0.47943, 0.99172, 7.9202e-05, 0.0057435, 0.049568, -0.0006711, 0.058105, 1.0488, 1.0557, 0.31508, 0.16092, 0.10986),
    2: (0.95421, 0.0070683, 0.10216, 0.72211, 0.85505, 0.35883, -0.13145, 0.097412, 0.11167, 0.013362, 0.74212, 0.87552, 0.82002, 0.30231, 0.16049, 0.12368),
    3: (0.77933, 0.029184, 2.0456, 0.94127, 0.90356, 0.96736, 0.017103, 0.02369, 0.095489, -0.0014194, 0.12885, 0.94552, 0.95902, 0.31502, 0.16924, 0.10715),
    4: (0.61709, 0.0032832, 0.022605, 0.95578, 0.92819, 0.93376, 0.033886, 0.010968, 0.058558, -0.0025282, 0.099086, 0.96235, 0.9686, 0.3011, 0.1622, 0.11195),
    5: (0.684, 0.0038814, 0.12179, 0.82518, 0.8708, 0.86381, -0.031137, 0.016261, 0.24829, 0.2685, 0.20921, 0.90085, 0.87818, 0.26715, 0.15199, 0.11837),
    6: (0.74513, 0.0029971, 0.0021344, 0.93388, 0.92176, 0.97513, 0.026109, 0.0382, 0.087711, 0.003482, 0.55412, 0.86996, 0.93489, 0.00059375, 0.040453, 0.20396),
    7: (0.12747, 0.006938, 0.99538, 0.6729, 0.8422, 1.1888, 0.11785, 0.071292, 0.1592, -0.0046581, 0.72269, 0.3656, 0.83234, 0.31767, 0.15915, 0.16833),
}
STYLE_SCALES: dict[int, tuple[float, ...]] = {
    0: (0.1017, 0.0030502, 0.2493, 0.04816, 0.047174, 0.087272, 0.038277, 0.012962, 0.026492, 0.030107, 0.10063, 0.065203, 0.038249, 0.37067, 0.094024, 0.067672),
    1: (0.1017, 0.0030502, 0.2493, 0.059094, 0.047174, 0.087272, 0.028471, 0.012962, 0.026492, 0.030107, 0.10063, 0.065203, 0.064973, 0.38936, 0.099362, 0.063715),
    2: (0.1017, 0.005271, 0.2493, 0.14593, 0.091649, 0.21986, 0.1298, 0.077651, 0.068552, 0.099581, 0.35123, 0.093953, 0.11507, 0.39056, 0.092678, 0.064446),
    3: (0.18025, 0.015101, 0.76879, 0.04816, 0.096421, 0.087272, 0.045277, 0.012962, 0.042305, 0.034964, 0.10063, 0.065203, 0.040986, 0.3835, 0.092873, 0.063621),
    4: (0.31131, 0.0030502, 0.2493, 0.04816, 0.048553, 0.087272, 0.05067, 0.012962, 0.035027, 0.030107, 0.10063, 0.065203, 0.038249, 0.3862, 0.097356, 0.066328),
    5: (0.16203, 0.0030502, 0.2493, 0.055493, 0.074374, 0.10153, 0.047701, 0.012962, 0.11086, 0.064491, 0.10063, 0.078046, 0.060306, 0.36786, 0.095698, 0.066701),
    6: (0.18406, 0.0030502, 0.2493, 0.04816, 0.04756, 0.087272, 0.039674, 0.022038, 0.055326, 0.030107, 0.19228, 0.065203, 0.044042, 0.11266, 0.029375, 0.062722),
    7: (0.1017, 0.0030502, 0.95858, 0.15338, 0.047174, 0.48888, 0.030975, 0.04552, 0.067952, 0.033199, 0.38527, 0.11463, 0.072545, 0.41831, 0.093638, 0.076955),
}
# a style is readable when the oracle reads it right in at least READABLE_MIN_ACCURACY of its TAESD-XL round trips
# (seed 202, constants fitted on seed 101; docs/evaluation.md#style-oracle): measured 95.5 % (flat color) to
# 100 % (gothic, pastel, lineart), so all eight are; a style below it would be listed as unreadable, with no number
READABLE_MIN_ACCURACY = 0.5   # four times chance (1/8)
READABLE_STYLES: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6, 7)

# the 99th percentile of the nearest style's score over the seed-202 round trips (benchmarks/style_oracle.py):
# an image scored above it is unlike every rendering of the set as it reads after the VAE (StyleReading.typical)
TYPICAL_SCORE = -21.1


@dataclass
class StyleReading:
    style: int                    # the nearest style, 0..NUM_STYLES-1
    scores: tuple[float, ...]     # per style: Σ ((x − c) / s)² + 2 ln s (lower = nearer)
    features: tuple[float, ...]   # in STYLE_FEATURES order (NaN: no object to measure)

    def feature(self, name: str) -> float:
        return self.features[STYLE_FEATURES.index(name)]

    @property
    def typical(self) -> bool:
        """Whether the image is as near its style as the set's own round trips are (99 % of them)."""
        return min(self.scores) <= TYPICAL_SCORE

    @property
    def dark(self) -> bool:
        """A dark background and a darkened fill (False when no object was read)."""
        return bool(self.feature("bg_value") < DARK_BACKGROUND_VALUE and self.feature("fill_value") < DARK_FILL_VALUE)


# ----------------------------------------------------------------------------
# Features
# ----------------------------------------------------------------------------

def background_mask(masks: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Pixels at least BACKGROUND_GAP from every object; the top and bottom rows when too few are left."""
    union = np.zeros(shape, bool)
    for m in masks:
        union |= m
    bg = ~ndimage.binary_dilation(union, iterations=BACKGROUND_GAP) if union.any() else ~union
    if bg.sum() < MIN_BACKGROUND:
        bg = np.zeros(shape, bool)
        bg[:3], bg[-3:] = True, True
    return bg


def streak_ratio(grey: np.ndarray, where: np.ndarray) -> float:
    """log(vertical / horizontal gradient energy) of grey's detail (σ 3 high-pass) inside `where`."""
    detail = grey - ndimage.gaussian_filter(grey, 3.0)
    vertical = np.diff(detail, axis=0)[where[1:] & where[:-1]]
    horizontal = np.diff(detail, axis=1)[where[:, 1:] & where[:, :-1]]
    if not len(vertical) or not len(horizontal):
        return 0.0
    return float(np.log((np.mean(vertical ** 2) + 1e-6) / (np.mean(horizontal ** 2) + 1e-6)))


def background_features(img: np.ndarray, bg: np.ndarray) -> dict[str, float]:
    grey = img.mean(-1)
    detail = grey - ndimage.gaussian_filter(grey, 1.5)
    return {"bg_value": float(np.median(img.max(-1)[bg])), "bg_texture": float(np.std(detail[bg])),
            "bg_streaks": streak_ratio(grey, bg)}


def face_score(img: np.ndarray, core: np.ndarray, cx: float) -> float:
    """The lesser colour distance from the fill of the core's most distinct 3×3 spot and of the spot mirrored
    about x = cx, / |fill|: high for a pair of eyes, low for one dark side (shading) or none."""
    fill = np.median(img[core], axis=0)
    dist = np.linalg.norm(ndimage.uniform_filter(img, (3, 3, 0)) - fill, axis=-1)
    y, x = np.unravel_index(np.argmax(np.where(core, dist, -1.0)), core.shape)
    xm = int(round(2 * cx - x))
    window = np.zeros_like(core)
    window[max(0, y - 2):y + 3, max(0, xm - 2):xm + 3] = True
    window &= core
    mirrored = dist[window].max() if window.any() else 0.0
    return float(min(dist[y, x], mirrored) / max(np.linalg.norm(fill), 0.1))


def depth_profile(value: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """(mean value of the mask's deepest quarter, brightest mean of its outer three quarters), by inner distance
    over its maximum: a hollow outline is bright outside and dark deep inside."""
    depth = ndimage.distance_transform_edt(mask)
    depth = depth / max(depth.max(), 1.0)
    bands = []
    for lo, hi in ((0.0, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.01)):
        band = mask & (depth > lo) & (depth <= hi)
        bands.append(float(value[band].mean()) if band.any() else np.nan)
    return bands[3], float(np.nanmax(bands[:3])) if not np.isnan(bands[:3]).all() else np.nan


def object_features(img: np.ndarray, mask: np.ndarray, others: np.ndarray, bg_value: float,
                    rgb: np.ndarray) -> dict[str, float]:
    """The per-object features of one mask; `others` = every object's pixels, `rgb` the palette colour in [0, 1]."""
    value, low = img.max(-1), img.min(-1)
    saturation = (value - low) / np.maximum(value, 1e-3)
    core = ndimage.binary_erosion(mask, iterations=2)
    if core.sum() < 8:  # thin or tiny objects: the whole mask
        core = mask
    fill = float(np.median(value[core]))
    f0 = max(fill, 0.05)
    edge = mask & ~ndimage.binary_erosion(mask, iterations=2)
    outside = ndimage.binary_dilation(mask, iterations=3) & ~others
    if not outside.any():
        outside = ndimage.binary_dilation(mask, iterations=3) & ~mask
    yy, xx = np.nonzero(mask)
    cy, cx = yy.mean(), xx.mean()
    rows, cols = np.mgrid[0:mask.shape[0], 0:mask.shape[1]]
    diagonal = (cols - cx) + (rows - cy)
    upper_left, lower_right = core & (diagonal < 0), core & (diagonal > 0)
    shading = (value[upper_left].mean() - value[lower_right].mean()) / f0 if upper_left.any() and lower_right.any() else 0.0
    detail = value - ndimage.gaussian_filter(value, 1.0)
    deep, rim = depth_profile(value, mask)
    colour_value = float(rgb.max())
    return {"fill_value": fill / colour_value,
            "fill_saturation": float(np.median(saturation[core])) / ((rgb.max() - rgb.min()) / rgb.max()),
            "edge_band": float(np.median(value[edge] if edge.any() else value[mask])) / f0,
            "outside_glow": float(np.median(value[outside])) - bg_value if outside.any() else 0.0,
            "texture": float(np.std(detail[core])) / f0,
            "highlight": float(np.percentile(low[core], 98) - np.median(low[core])),
            "shading": float(shading), "face": face_score(img, core, cx),
            "deep_value": deep / colour_value, "rim_value": rim / colour_value}


def style_features(seg: Segmentation, palette: Palette) -> np.ndarray:
    """(len(STYLE_FEATURES),) features of a segmented image (NaN for the per-object ones without an object)."""
    img, masks = seg.img, seg.masks
    bg = background_mask(masks, img.shape[:2])
    f = background_features(img, bg)
    others = np.logical_or.reduce(masks) if masks else np.zeros(img.shape[:2], bool)
    per = [object_features(img, m, others, f["bg_value"], np.asarray(palette.colours[c], np.float64) / 255.0)
           for c, m in zip(seg.colours, masks)]
    for name in STYLE_FEATURES[3:13]:
        f[name] = float(np.mean([p[name] for p in per])) if per else np.nan
    if masks:
        _, xs = np.nonzero(masks[0])
        f["second_object"] = float(masks[1].sum() / masks[0].sum()) if len(masks) > 1 else 0.0
        f["off_centre"] = float(abs(xs.mean() / img.shape[1] - 0.5))
        f["area"] = float(masks[0].mean())
    else:
        f["second_object"] = f["off_centre"] = f["area"] = np.nan
    return np.array([f[name] for name in STYLE_FEATURES])


# ----------------------------------------------------------------------------
# The decision
# ----------------------------------------------------------------------------

def style_scores(features: np.ndarray, centroids: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """(n_styles,) Σ_f ((x_f − c_kf) / s_kf)² + 2 ln s_kf over the features that have a value."""
    ok = np.isfinite(features)
    z = (features[ok] - centroids[:, ok]) / scales[:, ok]
    return (z ** 2 + 2 * np.log(scales[:, ok])).sum(axis=1)


def constants() -> tuple[np.ndarray, np.ndarray]:
    """(centroids, scales), each (NUM_STYLES, len(STYLE_FEATURES))."""
    if len(STYLE_CENTROIDS) != NUM_STYLES:
        raise RuntimeError("the style oracle has no constants: run python benchmarks/style_oracle.py --fit")
    return (np.array([STYLE_CENTROIDS[k] for k in range(NUM_STYLES)]),
            np.array([STYLE_SCALES[k] for k in range(NUM_STYLES)]))


def classify_style(features: np.ndarray, centroids: np.ndarray | None = None,
                   scales: np.ndarray | None = None) -> StyleReading:
    """The nearest style of a feature vector (the module's constants unless centroids and scales are given)."""
    if centroids is None or scales is None:
        centroids, scales = constants()
    scores = style_scores(np.asarray(features, np.float64), centroids, scales)
    return StyleReading(style=int(np.argmin(scores)), scores=tuple(float(s) for s in scores),
                        features=tuple(float(x) for x in features))


def style_of(seg: Segmentation, palette: Palette) -> StyleReading:
    """The style of an image the colour oracle has segmented (oracle.py `segment`)."""
    return classify_style(style_features(seg, palette))


def read_style(img: np.ndarray, palette: Palette) -> StyleReading:
    """img (H, W, 3) uint8, or float in [0, 1] → the style it is drawn in."""
    return style_of(segment(img, palette), palette)


def fit_constants(features: np.ndarray, styles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-style means and scales (per-style std floored at SCALE_FLOOR × the std over all styles) of the
    feature rows of labelled images (styles 0..NUM_STYLES-1); NaN features are left out."""
    spread = np.nanstd(features, axis=0) + 1e-9
    centroids = np.stack([np.nanmean(features[styles == k], axis=0) for k in range(NUM_STYLES)])
    scales = np.stack([np.maximum(np.nanstd(features[styles == k], axis=0), SCALE_FLOOR * spread)
                       for k in range(NUM_STYLES)])
    return centroids, scales
