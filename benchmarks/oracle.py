"""How well the synthetic-set oracle reads the synthetic dataset's own images.

Accuracy of background, colour and shape (every object of every normal post kept by the score stage,
u >= 0.3) at 64 and 128 px, as rendered and encoded by `vamp data synth`, and at 64 px after a
TAESD-XL encode/decode round trip (what generated images go through); mean sharpness per quality tier, and the
latents' mean squared Laplacian per tier (how far apart the tiers are at the scale the model works at).

    python benchmarks/oracle.py --posts 1000 --vae-path $VAMP_TAESDXL --json benchmarks/oracle.json
"""

from __future__ import annotations

import argparse
import io
import os
import time

import numpy as np
import torch
from PIL import Image

from vampdiffusion.atomic import atomic_write_json
from vampdiffusion.config import LatentConfig
from vampdiffusion.data.synth import BACKGROUNDS, COLOURS, SynthArgs, plan_posts, render_file
from vampdiffusion.evaluation.oracle import Palette, read_image

PALETTE = Palette(COLOURS, BACKGROUNDS)  # the set's own palette, as its synth.json gives it


def tier(u: float) -> int:
    return 3 if u >= 0.8 else 2 if u >= 0.6 else 1 if u >= 0.4 else 0


def kept_posts(n: int, size: int, seed: int) -> tuple[list[dict], np.ndarray]:
    posts, _ = plan_posts(SynthArgs(n=n, size=size, seed=seed))
    keep = [p for p in posts if p["kind"] == "normal" and p["u"] >= 0.3]
    images = np.stack([np.asarray(Image.open(io.BytesIO(render_file(p))).convert("RGB")) for p in keep])
    return keep, images


def score(posts: list[dict], images: np.ndarray) -> dict:
    ok = {"background": [], "colour": [], "shape": []}
    sharp: dict[int, list[float]] = {q: [] for q in range(4)}
    t0 = time.perf_counter()
    for p, img in zip(posts, images):
        r = read_image(img, PALETTE)
        ok["background"].append(r.background == p["background"])
        found = {o.colour: o.shape for o in r.objects[:len(p["objects"])]}
        for o in p["objects"]:
            ok["colour"].append(o["colour"] in found)
            if o["colour"] in found:
                ok["shape"].append(found[o["colour"]] == o["shape"])
        if np.isfinite(r.sharpness):
            sharp[tier(p["u"])].append(r.sharpness)
    ms = 1000 * (time.perf_counter() - t0) / len(posts)
    return {"images": len(posts), **{k: float(np.mean(v)) for k, v in ok.items()},
            "sharpness_per_tier": [float(np.mean(sharp[q])) for q in range(4)], "ms_per_image": ms}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--posts", type=int, default=1500)
    ap.add_argument("--vae-path", default=os.environ.get("VAMP_TAESDXL", "madebyollin/taesdxl"))
    ap.add_argument("--json", default="benchmarks/oracle.json")
    a = ap.parse_args()
    torch.set_num_threads(2)
    rows = {}
    for size in (64, 128):
        posts, images = kept_posts(a.posts, size, seed=size)
        rows[f"synthetic {size} px"] = score(posts, images)
    from vampdiffusion.latents.vae import load_vae
    vae = load_vae(LatentConfig(vae="taesdxl", vae_path=a.vae_path, scaling_factor=1.0))
    posts, images = kept_posts(a.posts, 64, seed=64)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        lat = torch.cat([vae.encode(x[i:i + 64]) for i in range(0, len(x), 64)])
        rec = torch.cat([vae.decode(lat[i:i + 64]) for i in range(0, len(lat), 64)])
    rec = ((rec.permute(0, 2, 3, 1).numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
    rows["TAESD-XL round trip 64 px"] = score(posts, rec)
    # how far apart the tiers are where the model works: the latents' mean squared 4-neighbour Laplacian
    lap = 4 * lat[..., 1:-1, 1:-1] - lat[..., :-2, 1:-1] - lat[..., 2:, 1:-1] - lat[..., 1:-1, :-2] - lat[..., 1:-1, 2:]
    energy = lap.pow(2).mean((1, 2, 3)).numpy()
    tiers = np.array([tier(p["u"]) for p in posts])
    rows["TAESD-XL round trip 64 px"]["latent_laplacian_energy_per_tier"] = [
        float(energy[tiers == q].mean()) for q in range(4)]
    print(f"{'images':<28}{'n':>6}{'background':>12}{'colour':>9}{'shape':>9}   sharpness tier 0..3        ms/img")
    for name, r in rows.items():
        s = " ".join(f"{v:.3f}" for v in r["sharpness_per_tier"])
        print(f"{name:<28}{r['images']:>6}{r['background']:>12.3f}{r['colour']:>9.3f}{r['shape']:>9.3f}   {s}   {r['ms_per_image']:.1f}")
    e = rows["TAESD-XL round trip 64 px"]["latent_laplacian_energy_per_tier"]
    print("TAESD-XL latents (8x8): mean squared Laplacian per tier 0..3: " + " ".join(f"{v:.3f}" for v in e))
    atomic_write_json(a.json, rows)


if __name__ == "__main__":
    main()
