import imagehash
import numpy as np
from PIL import Image

from vampdiffusion.data import synth
from vampdiffusion.data.phash import grey32, hash_margin, phash, phash_batch, phash_hex


def _images():
    rng = np.random.default_rng(0)
    ims = [Image.fromarray(rng.integers(0, 256, (int(rng.integers(16, 200)), int(rng.integers(16, 200)), 3), dtype=np.uint8))
           for _ in range(20)]
    posts, _ = synth.plan_posts(synth.SynthArgs(n=100, size=64))
    ims += [synth.render_degraded(p, 96) for p in posts[:40] if p["duplicate_of"] is None]
    y, x = np.mgrid[0:120, 0:90]
    ims.append(Image.fromarray(((x * 2 + y) % 256).astype(np.uint8), "L"))  # smooth ramp, many near-ties
    return ims


def test_phash_is_bit_identical_to_imagehash():
    for im in _images():
        assert phash_hex(phash(im)) == str(imagehash.phash(im))


def test_batch_phash_equals_one_at_a_time():
    ims = _images()
    batch = phash_batch(np.stack([grey32(im) for im in ims]))
    assert [int(h) for h in batch] == [phash(im) for im in ims]


def test_hash_margin_is_the_distance_of_the_nearest_coefficient_to_the_median():
    px = np.random.default_rng(0).integers(0, 256, (3, 32, 32), dtype=np.uint8)
    m = hash_margin(px)
    assert m.shape == (3,) and (m > 0).all() and (m < 1e4).all()
