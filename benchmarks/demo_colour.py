"""Colour accuracy of a model on single-object prompts of the synthetic set, broken down.

The demo's colour check (the largest coloured region read must have the prompted colour) on the first
`--n` single-object rows of a split, at the given tiers, with the model's sampling settings; printed per
style, object size and background, with the coloured regions read per image and the mean sharpness.
Used to compare training settings quickly (docs/benchmarks.md "demo"):

    python benchmarks/demo_colour.py --model RUN/model --data DEMO/latents --truth DEMO/synth/truth.jsonl \
        --vae-path ../shared/weights/taesdxl --n 128 --tiers 3 --splits eval
"""

from __future__ import annotations

import argparse
import collections

import numpy as np
import torch

from vampdiffusion.config import apply_override
from vampdiffusion.data.loader import LatentDataset
from vampdiffusion.evaluation.evaluate import generate_batches, read_truth
from vampdiffusion.evaluation.oracle import read_image
from vampdiffusion.generation.generate import load_generator


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--truth", required=True)
    ap.add_argument("--vae-path", default=None)
    ap.add_argument("--n", type=int, default=128, help="single-object prompts per split")
    ap.add_argument("--tiers", default="3", help="comma list of quality tiers")
    ap.add_argument("--splits", default="eval", help="comma list of train, eval")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="sampling override, e.g. sample.cfg_scale=3")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    gen = load_generator(a.model, vae_path=a.vae_path, device="cpu")
    for o in a.set:
        apply_override(gen.cfg, o)
    truth, _ = read_truth(a.truth)
    for split in a.splits.split(","):
        ds = LatentDataset(a.data, split=split, max_tags=gen.cfg.model.max_tags)
        single = np.array([int(i) in truth and len(truth[int(i)]["objects"]) == 1 for i in ds.ids])
        rows = np.flatnonzero(single)[:a.n]
        for q in (int(x) for x in a.tiers.split(",")):
            hits, regions, sharp = collections.defaultdict(list), [], []
            for idx, images in generate_batches(gen, ds, rows, q, list(range(len(rows))), 64):
                for k, im in zip(idx, images):
                    t = truth[int(ds.ids[rows[k]])]
                    r = read_image(np.asarray(im.convert("RGB")))
                    ok = bool(r.objects) and r.objects[0].colour == t["objects"][0]["colour"]
                    for key in ("all", f"style {t['style']}", t["objects"][0]["size"], t["background"]):
                        hits[key].append(ok)
                    regions.append(len(r.objects))
                    sharp.append(np.nan if r.sharpness is None else r.sharpness)
            print(f"{split} tier {q}: colour {np.mean(hits['all']):.3f} (n={len(hits['all'])}), "
                  f"regions read {np.mean(regions):.2f}, sharpness {np.nanmean(sharp):.3f}")
            print("    " + "  ".join(f"{k} {np.mean(v):.2f} ({len(v)})" for k, v in sorted(hits.items()) if k != "all"),
                  flush=True)


if __name__ == "__main__":
    main()
