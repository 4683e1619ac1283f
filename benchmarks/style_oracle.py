"""How well the style oracle (evaluation/style_oracle.py) reads the synthetic set's own images.

Every normal, style-labelled post that the score stage keeps (u >= 0.3) of a synthetic set, read three ways at
64 px: drawn clean (`render_clean`, before degradation), as `vamp data synth` writes it (degraded in step with its
quality band), and that file after a TAESD-XL encode/decode round trip (what `vamp eval` reads). Accuracy per
style and per quality band (tier by u, as benchmarks/oracle.py), the confusion matrix, the percentiles of the
nearest style's score (the round trips' 99th is the module's TYPICAL_SCORE), and the per-style means of the
features behind "dark" (composition check).

    python benchmarks/style_oracle.py --fit --vae-path $VAMP_TAESDXL     # prints the module's constants (seed 101)
    python benchmarks/style_oracle.py --vae-path $VAMP_TAESDXL --json benchmarks/style_oracle.json   # seed 202

The constants are fitted on one set (--fit-seed, its files and their round trips) and measured on another
(--seed): the accuracies are on images the constants never saw.
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
from vampdiffusion.data.synth import BACKGROUNDS, COLOURS, STYLE_NAMES, SynthArgs, plan_posts, render_clean, render_file
from vampdiffusion.evaluation import style_oracle as SO
from vampdiffusion.evaluation.oracle import Palette, segment

PALETTE = Palette(COLOURS, BACKGROUNDS)  # the set's own palette, as its synth.json gives it


def tier(u: float) -> int:
    return 3 if u >= 0.8 else 2 if u >= 0.6 else 1 if u >= 0.4 else 0


def labelled_posts(n: int, seed: int) -> list[dict]:
    posts, _ = plan_posts(SynthArgs(n=n, size=64, seed=seed))
    return [p for p in posts if p["kind"] == "normal" and p["u"] >= 0.3 and p["style"] >= 0]


def images_of(posts: list[dict], vae) -> dict[str, np.ndarray]:
    """{"clean", "file", "round trip"}: (N, 64, 64, 3) uint8 each."""
    clean = np.stack([(render_clean(p, 64, np.random.default_rng(p["seed"])) * 255 + 0.5).astype(np.uint8) for p in posts])
    files = np.stack([np.asarray(Image.open(io.BytesIO(render_file(p))).convert("RGB")) for p in posts])
    x = torch.from_numpy(files).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        rec = torch.cat([vae.decode(vae.encode(x[i:i + 64])) for i in range(0, len(x), 64)])
    rec = ((rec.permute(0, 2, 3, 1).numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
    return {"clean": clean, "file": files, "round trip": rec}


def features_of(images: np.ndarray) -> tuple[np.ndarray, float]:
    """(N, n_features) and the milliseconds per image (segmentation + features)."""
    t0 = time.perf_counter()
    f = np.stack([SO.style_features(segment(im, PALETTE), PALETTE) for im in images])
    return f, 1000 * (time.perf_counter() - t0) / len(images)


def score(features: np.ndarray, styles: np.ndarray, tiers: np.ndarray, centroids=None, scales=None) -> dict:
    readings = [SO.classify_style(f, centroids, scales) for f in features]
    read = np.array([r.style for r in readings])
    nearest = np.array([min(r.scores) for r in readings])
    confusion = np.zeros((SO.NUM_STYLES, SO.NUM_STYLES), int)
    np.add.at(confusion, (styles, read), 1)
    return {"images": len(styles), "accuracy": float(np.mean(read == styles)),
            "per_style": {f"{k} {STYLE_NAMES[k]}": float(np.mean(read[styles == k] == k)) for k in range(SO.NUM_STYLES)},
            "per_tier": {str(q): float(np.mean(read[tiers == q] == styles[tiers == q])) for q in range(4)},
            "per_style_tier": {f"{k} {STYLE_NAMES[k]}": [float(np.mean(read[(styles == k) & (tiers == q)] == k))
                                                         for q in range(4)] for k in range(SO.NUM_STYLES)},
            "worst_style_tier": float(min(np.mean(read[(styles == k) & (tiers == q)] == k)
                                          for k in range(SO.NUM_STYLES) for q in range(4))),
            "confusion": confusion.tolist(),
            "nearest_score_percentiles": {str(q): float(np.percentile(nearest, q)) for q in (50, 95, 99)},
            "typical_share": float(np.mean(nearest <= SO.TYPICAL_SCORE))}


def constants_text(centroids: np.ndarray, scales: np.ndarray) -> str:
    rows = lambda a: "\n".join(f"    {k}: ({', '.join(f'{v:.5g}' for v in a[k])})," for k in range(len(a)))
    return f"STYLE_CENTROIDS: dict[int, tuple[float, ...]] = {{\n{rows(centroids)}\n}}\n" \
           f"STYLE_SCALES: dict[int, tuple[float, ...]] = {{\n{rows(scales)}\n}}"


def dark_means(features: np.ndarray, styles: np.ndarray) -> dict:
    i, j = SO.STYLE_FEATURES.index("bg_value"), SO.STYLE_FEATURES.index("fill_value")
    return {f"{k} {STYLE_NAMES[k]}": {"bg_value": float(np.nanmean(features[styles == k, i])),
                                      "fill_value": float(np.nanmean(features[styles == k, j])),
                                      "dark_share": float(np.mean((features[styles == k, i] < SO.DARK_BACKGROUND_VALUE)
                                                                  & (features[styles == k, j] < SO.DARK_FILL_VALUE)))}
            for k in range(SO.NUM_STYLES)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--posts", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=202, help="the set measured")
    ap.add_argument("--fit", action="store_true", help="fit the constants on --fit-seed's set and print them")
    ap.add_argument("--fit-seed", type=int, default=101)
    ap.add_argument("--vae-path", default=os.environ.get("VAMP_TAESDXL", "madebyollin/taesdxl"))
    ap.add_argument("--json", default="benchmarks/style_oracle.json")
    a = ap.parse_args()
    torch.set_num_threads(1)
    from vampdiffusion.latents.vae import load_vae
    vae = load_vae(LatentConfig(vae="taesdxl", vae_path=a.vae_path, scaling_factor=1.0))
    posts = labelled_posts(a.posts, a.fit_seed if a.fit else a.seed)
    styles, tiers = np.array([p["style"] for p in posts]), np.array([tier(p["u"]) for p in posts])
    images = images_of(posts, vae)
    if a.fit:  # the files and their round trips: what the set holds and what eval reads
        f = np.concatenate([features_of(images[k])[0] for k in ("file", "round trip")])
        print(constants_text(*SO.fit_constants(f, np.concatenate([styles, styles]))))
        return
    rows = {}
    for kind, ims in images.items():
        f, ms = features_of(ims)
        rows[kind] = {**score(f, styles, tiers), "ms_per_image": ms}
        if kind == "round trip":
            rows[kind]["dark_features"] = dark_means(f, styles)
    print(f"{'images':<12}{'n':>6}{'all':>7}  " + " ".join(f"{k}:{STYLE_NAMES[k][:8]:<8}" for k in range(8))
          + "   tier 0..3                nearest score p99, typical")
    for kind, r in rows.items():
        print(f"{kind:<12}{r['images']:>6}{r['accuracy']:>7.3f}  " + " ".join(f"{v:>10.3f}" for v in r["per_style"].values())
              + "   " + " ".join(f"{v:.3f}" for v in r["per_tier"].values())
              + f"   {r['nearest_score_percentiles']['99']:8.1f} {r['typical_share']:.3f}")
    atomic_write_json(a.json, {"command": f"python benchmarks/style_oracle.py --posts {a.posts} --seed {a.seed} "
                                          f"--vae-path $VAMP_TAESDXL --json {a.json}",
                               "fit": f"--fit --posts {a.posts} --fit-seed {a.fit_seed}", "posts": a.posts,
                               "seed": a.seed, "fit_seed": a.fit_seed, "tiers": "u >= 0.8: 3, >= 0.6: 2, >= 0.4: 1, else 0",
                               "rows": rows})


if __name__ == "__main__":
    main()
