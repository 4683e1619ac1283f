"""What a stream of images leaves behind, batch by batch, so that no evaluation holds all its images: the
first few (for the report's grids), Inception features (FID), oracle readings (colour oracle and style oracle,
from one segmentation), CLIP scores."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from vampdiffusion.evaluation.clip_score import clip_scores
from vampdiffusion.evaluation.inception import inception_features
from vampdiffusion.evaluation.oracle import Palette, reading_of, segment
from vampdiffusion.evaluation.style_oracle import style_of


@dataclass
class Measured:
    """The first `keep` images of a stream, and every image's Inception features, oracle readings and CLIP score."""
    keep: int
    images: dict[int, Image.Image] = field(default_factory=dict)
    features: list[np.ndarray] = field(default_factory=list)
    readings: dict[int, object] = field(default_factory=dict)   # oracle.OracleReading
    styles: dict[int, object] = field(default_factory=dict)     # style_oracle.StyleReading
    clip: list[float] = field(default_factory=list)

    def add(self, positions: np.ndarray, images: list[Image.Image], inception=None, batch_size: int = 32,
            palette: Palette | None = None, clip=None, prompts: list[str] | None = None) -> None:
        """Measure one batch (positions in the stream, their images); the oracle reads only with a palette."""
        for k, im in zip(positions.tolist(), images):
            if k < self.keep:
                self.images[k] = im
            if palette is not None:
                seg = segment(np.asarray(im.convert("RGB")), palette)
                self.readings[k], self.styles[k] = reading_of(seg), style_of(seg, palette)
        if inception is not None:
            x = torch.from_numpy(np.stack([np.asarray(im.convert("RGB")) for im in images])).permute(0, 3, 1, 2)
            self.features.append(inception_features(inception, x.float() / 255.0, batch_size).numpy())
        if clip is not None:
            self.clip += clip_scores(clip, images, [prompts[k] for k in positions.tolist()])

    def kept(self) -> list[Image.Image]:
        return [self.images[k] for k in sorted(self.images)]

    def feature_array(self) -> np.ndarray:
        return np.concatenate(self.features) if self.features else np.zeros((0, 0))
