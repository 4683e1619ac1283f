import io

import imagehash
import numpy as np
from PIL import Image

from vampdiffusion.data import synth
from vampdiffusion.data.phash import DRAFT_MIN_SIDE, grey32, phash, phash_batch, phash_draft, phash_hex


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


def test_draft_decoding_returns_the_full_decode_hash_or_declines():
    posts, _ = synth.plan_posts(synth.SynthArgs(n=100, size=64))
    used = 0
    for p in [p for p in posts if p["duplicate_of"] is None][:12]:
        buf = io.BytesIO()
        synth.render_degraded(p, 2 * DRAFT_MIN_SIDE).save(buf, format="JPEG", quality=90)
        h = phash_draft(Image.open(io.BytesIO(buf.getvalue())))
        full = phash(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
        if h is not None:
            used += 1
            assert h == full
    assert used >= 1
