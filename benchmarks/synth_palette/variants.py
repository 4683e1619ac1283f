"""Synthetic-set variants of the session-6 colour experiment (docs/benchmarks.md "demo"), patched into
`data.synth` and `evaluation.oracle` in place:

  old       the first palette (red, orange, yellow, green, blue, purple), blue-to-white gradient background,
            object radii 0.13 / 0.19 / 0.29 (sessions 1-5)
  wheel     the current palette and neutral gradient, the first object radii
  wheelbig  the current defaults (no patch)

The GPU runs also used the first two-object placement (centres 0.26 / 0.74 ± 0.05); the code now places two
objects at 0.25 / 0.75 ± 0.02, which only the two-object posts see (the colour check reads single-object ones).
"""

from __future__ import annotations

import os

import numpy as np

OLD_COLOURS = {"red": (225, 30, 30), "orange": (250, 135, 15), "yellow": (240, 215, 20), "green": (30, 165, 60),
               "blue": (35, 85, 235), "purple": (150, 45, 205)}
OLD_GRADIENT = ((110, 160, 235), (245, 245, 250))
OLD_SIZES = {"small_object": 0.13, "medium_object": 0.19, "large_object": 0.29}
NAMES = ("old", "wheel", "wheelbig")


def apply(name: str | None = None) -> str:
    """Patch the named variant in (default: $VARIANT, else wheelbig = the current defaults)."""
    name = name or os.environ.get("VARIANT", "wheelbig")
    if name not in NAMES:
        raise ValueError(f"unknown variant {name!r}; one of {NAMES}")
    from vampdiffusion.data import synth
    from vampdiffusion.evaluation import oracle
    if name == "old":
        synth.COLOURS.clear()
        synth.COLOURS.update(OLD_COLOURS)
        synth.BACKGROUNDS["gradient_background"] = OLD_GRADIENT
        synth._background_cached.cache_clear()
    if name in ("old", "wheel"):
        synth.SIZES.clear()
        synth.SIZES.update(OLD_SIZES)
    oracle.PALETTE_NAMES = tuple(synth.COLOURS)
    oracle.PALETTE_HUES = oracle._hue(np.array([synth.COLOURS[c] for c in oracle.PALETTE_NAMES], np.float64) / 255.0)
    oracle.BACKGROUND_RGB = np.array([synth.BACKGROUNDS[b] for b in oracle.BACKGROUND_NAMES], np.float64) / 255.0
    return name
