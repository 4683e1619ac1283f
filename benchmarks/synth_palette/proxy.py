"""How robust is the colour reading to latent imprecision, per synthetic-set variant (variants.py)?

Single-object posts of the synthetic set (normal, u >= 0.3), rendered as `vamp data synth` writes them at 64 px
→ TAESD-XL latents + Gaussian noise of std sigma (raw latent units) → decode → the oracle: share of images whose
largest coloured region has the drawn colour, and coloured regions read per image. The demo model's generated
images read like latents about 0.3 off (docs/benchmarks.md "demo", session 3).

    python benchmarks/synth_palette/proxy.py --vae-path ../shared/weights/taesdxl --posts 700
"""

import argparse
import io
import os
import sys

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import variants  # noqa: E402

from vampdiffusion.config import LatentConfig  # noqa: E402
from vampdiffusion.data import synth  # noqa: E402
from vampdiffusion.latents.vae import load_vae  # noqa: E402
from vampdiffusion.evaluation import oracle  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vae-path", required=True)
    ap.add_argument("--posts", type=int, default=700)
    ap.add_argument("--sigmas", default="0,0.2,0.3,0.4")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    vae = load_vae(LatentConfig(vae="taesdxl", vae_path=a.vae_path, scaling_factor=1.0))
    defaults = (dict(synth.COLOURS), dict(synth.BACKGROUNDS), dict(synth.SIZES))
    print("variant  images  " + "  ".join(f"sigma {s}: colour / regions" for s in a.sigmas.split(",")))
    for name in variants.NAMES:
        for target, saved in zip((synth.COLOURS, synth.BACKGROUNDS, synth.SIZES), defaults):
            target.clear()
            target.update(saved)
        synth._background_cached.cache_clear()
        variants.apply(name)
        posts, _ = synth.plan_posts(synth.SynthArgs(n=a.posts, size=64, seed=3))
        keep = [p for p in posts if p["kind"] == "normal" and p["u"] >= 0.3 and len(p["objects"]) == 1]
        imgs = np.stack([np.asarray(Image.open(io.BytesIO(synth.render_file(p))).convert("RGB")) for p in keep])
        x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 127.5 - 1
        z = torch.cat([vae.encode(x[i:i + 64]) for i in range(0, len(x), 64)])
        g = torch.Generator().manual_seed(0)
        cells = []
        for sigma in (float(s) for s in a.sigmas.split(",")):
            zn = z + sigma * torch.randn(z.shape, generator=g)
            dec = torch.cat([vae.decode(zn[i:i + 64]) for i in range(0, len(zn), 64)])
            out = ((dec.permute(0, 2, 3, 1).numpy() + 1) * 127.5 + 0.5).clip(0, 255).astype(np.uint8)
            reads = [oracle.read_image(o) for o in out]
            ok = np.mean([bool(r.objects) and r.objects[0].colour == p["objects"][0]["colour"]
                          for r, p in zip(reads, keep)])
            cells.append(f"{ok:.3f} / {np.mean([len(r.objects) for r in reads]):.2f}")
        print(f"{name:8s} {len(keep):6d}  " + "  ".join(f"{c:>26s}" for c in cells), flush=True)


if __name__ == "__main__":
    main()
