import io

import numpy as np
import pytest
from PIL import Image

from vampdiffusion.data.synth import BACKGROUNDS, COLOURS, SynthArgs, plan_posts, render_clean, render_file
from vampdiffusion.evaluation.oracle import Palette, classify_shape, radial_harmonics
from vampdiffusion.evaluation.oracle import read_image as read_with

PALETTE = Palette(COLOURS, BACKGROUNDS)


def read_image(img):
    return read_with(img, PALETTE)


def synthetic_images(size: int, n_posts: int = 240, seed: int = 0):
    """Rendered, encoded and decoded images of the normal posts kept by the score stage (u >= 0.3)."""
    posts, _ = plan_posts(SynthArgs(n=n_posts, size=size, seed=seed))
    for p in posts:
        if p["kind"] == "normal" and p["u"] >= 0.3:
            img = np.asarray(Image.open(io.BytesIO(render_file(p))).convert("RGB"))
            yield p, img


def tier(u: float) -> int:
    return 3 if u >= 0.8 else 2 if u >= 0.6 else 1 if u >= 0.4 else 0


@pytest.fixture(scope="module", params=[64, 128])
def readings(request):
    return [(p, read_image(img)) for p, img in synthetic_images(request.param, seed=request.param)]


def test_background_accuracy_on_synthetic_images(readings):
    acc = np.mean([r.background == p["background"] for p, r in readings])
    assert acc >= 0.95, acc


def test_colour_accuracy_on_synthetic_images(readings):
    hits = [o["colour"] in {d.colour for d in r.objects[:len(p["objects"])]} for p, r in readings for o in p["objects"]]
    assert np.mean(hits) >= 0.95, np.mean(hits)


def test_shape_accuracy_on_synthetic_images(readings):
    hits = []
    for p, r in readings:
        found = {d.colour: d.shape for d in r.objects[:len(p["objects"])]}
        hits += [found.get(o["colour"]) == o["shape"] for o in p["objects"]]
    assert np.mean(hits) >= 0.95, np.mean(hits)


def test_sharpness_rises_with_quality_tier(readings):
    means = [np.nanmean([r.sharpness for p, r in readings if tier(p["u"]) == t]) for t in range(4)]
    assert means[0] < means[1] < means[2] < means[3], means


def test_blur_lowers_sharpness_and_noise_does_not_raise_it():
    p = next(p for p, _ in synthetic_images(64, n_posts=100) if p["style"] == 4)
    clean = render_clean(p, 64, np.random.default_rng(0))
    from scipy.ndimage import gaussian_filter
    blurred = gaussian_filter(clean, (1.5, 1.5, 0))
    noisy = np.clip(blurred + np.random.default_rng(1).normal(0, 0.06, clean.shape), 0, 1)
    s_clean, s_blur, s_noisy = (read_image(x).sharpness for x in (clean, blurred, noisy))
    assert s_blur < 0.6 * s_clean
    assert s_noisy < 0.6 * s_clean


def test_radial_harmonics_of_ideal_masks():
    yy, xx = np.mgrid[0:64, 0:64] - 31.5
    circle = np.hypot(xx, yy) < 20
    square = (np.abs(xx) < 16) & (np.abs(yy) < 16)
    assert classify_shape(radial_harmonics(circle)) == "circle"
    assert classify_shape(radial_harmonics(square)) == "square"


def test_oracle_rejects_non_rgb_input():
    with pytest.raises(ValueError, match="RGB"):
        read_image(np.zeros((64, 64)))


def test_blank_image_has_background_and_no_objects():
    r = read_image(np.full((64, 64, 3), 255, np.uint8))
    assert r.background == "white_background" and r.objects == [] and np.isnan(r.sharpness)


def test_an_attribute_is_withheld_with_the_reason_that_applies():
    from vampdiffusion.evaluation.conditioning import attribute_accuracy
    per_tier = {"0": {"colour": (0, 0)}}
    no_prompts = attribute_accuracy("colour", {"colour": (0, 0)}, {"colour": (18, 18)}, per_tier, 1 / 6, 0.9)
    assert "accuracy" not in no_prompts and "no generated image" in no_prompts["status"]
    weak = attribute_accuracy("colour", {"colour": (5, 10)}, {"colour": (8, 10)}, per_tier, 1 / 6, 0.9)
    assert "80.0% right, below" in weak["status"]
    ok = attribute_accuracy("colour", {"colour": (5, 10)}, {"colour": (10, 10)}, {"0": {"colour": (5, 10)}}, 1 / 6, 0.9)
    assert ok["status"] == "ok" and ok["accuracy"] == 0.5
