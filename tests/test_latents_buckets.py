"""Aspect-ratio buckets and the resize + centre crop."""

import numpy as np
import pytest
from PIL import Image

from vampdiffusion.config import LatentConfig
from vampdiffusion.latents.buckets import aspect_buckets, assign_buckets, bucket_set, resize_and_crop


def test_aspect_buckets_have_step_multiple_sides_bounded_area_and_aspect():
    buckets = aspect_buckets(1024, 64, 2.0)
    for w, h in buckets:
        assert w % 64 == 0 and h % 64 == 0
        assert 0.9 * 1024 ** 2 <= w * h <= 1024 ** 2  # ≈ equal pixel area, never more than the square
        assert max(w, h) / min(w, h) <= 2.0
    assert (1024, 1024) in buckets
    assert {(h, w) for w, h in buckets} == set(buckets)  # portrait and landscape alike
    assert {(832, 1216), (896, 1152), (768, 1344), (1216, 832)} <= set(buckets)  # the usual SDXL buckets
    assert max(w / h for w, h in buckets) == 2.0


def test_square_config_gives_one_bucket():
    assert bucket_set(LatentConfig(buckets="square", resolution=1024)) == [(1024, 1024)]


def test_each_image_gets_the_bucket_nearest_its_aspect_ratio():
    buckets = aspect_buckets(1024, 64, 2.0)
    chosen = [buckets[i] for i in assign_buckets(np.array([1000, 500, 800, 3000]), np.array([500, 1000, 800, 1000]), buckets)]
    assert chosen == [(1408, 704), (704, 1408), (1024, 1024), (1408, 704)]  # 3:1 falls back to the widest


def test_resize_keeps_aspect_covers_the_bucket_and_crops_the_centre():
    # 300x100: red | green | blue thirds; into 64x64 -> resized to 192x64, centre 64 columns are green
    thirds = np.zeros((100, 300, 3), np.uint8)
    thirds[:, :100, 0] = thirds[:, 100:200, 1] = thirds[:, 200:, 2] = 255
    out = np.asarray(resize_and_crop(Image.fromarray(thirds), (64, 64)))
    assert out.shape == (64, 64, 3)
    assert (out[:, 4:60, 1] > 200).all() and (out[:, 4:60, [0, 2]] < 60).all()


def test_resize_upscales_small_images_to_cover():
    out = resize_and_crop(Image.new("RGB", (10, 20), (9, 9, 9)), (48, 80))
    assert out.size == (48, 80)


def test_a_resolution_off_the_vae_grid_is_a_clear_error():
    with pytest.raises(ValueError, match="multiples of 8"):
        bucket_set(LatentConfig(resolution=100))


@pytest.mark.parametrize("override, message", [("latents.buckets=round", "'aspect', 'square'"),
                                               ("latents.max_aspect=0.5", "latents.max_aspect must be in")])
def test_bad_bucket_config_is_refused_when_loaded(override, message):
    from vampdiffusion.config import ConfigError, load_config
    with pytest.raises(ConfigError, match=message):
        load_config("tiny", [override])
