"""Colour accuracy of a model on single-object prompts of the synthetic set, broken down.

The demo's colour check (`evaluate.single_object_reading`: the largest coloured region read must have the
prompted colour) on the first
`--n` single-object rows of a split, at the given tiers, with the model's sampling settings; printed per
style, object size and background, with the coloured regions read per image, the mean sharpness and the
confusion of prompted colour × colour of the largest region.
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
from vampdiffusion.latents.loader import LatentDataset
from vampdiffusion.evaluation.evaluate import generate_batches, read_truth, single_object_reading
from vampdiffusion.evaluation.oracle import PALETTE_NAMES, read_image
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
    ap.add_argument("--device", default="cpu", help="where the model samples (cpu, cuda); the VAE decodes there too")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="sampling override, e.g. sample.cfg_scale=3")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    gen = load_generator(a.model, vae_path=a.vae_path, device=a.device)
    for o in a.set:
        apply_override(gen.cfg, o)
    truth, _ = read_truth(a.truth)
    for split in a.splits.split(","):
        ds = LatentDataset(a.data, split=split, max_tags=gen.cfg.model.max_tags)
        single = np.array([int(i) in truth and len(truth[int(i)]["objects"]) == 1 for i in ds.ids])
        rows = np.flatnonzero(single)[:a.n]
        for q in (int(x) for x in a.tiers.split(",")):
            readings, truths = [], []
            for idx, images in generate_batches(gen, ds, rows, q, list(range(len(rows))), 64):
                readings += [read_image(np.asarray(im.convert("RGB"))) for im in images]
                truths += [truth[int(ds.ids[rows[k]])] for k in idx]
            groups = collections.defaultdict(list)   # the demo's own metric, per style / size / background
            for i, t in enumerate(truths):
                for key in (f"style {t['style']}", t["objects"][0]["size"], t["background"]):
                    groups[key].append(i)
            d = single_object_reading(readings, truths)
            print(f"{split} tier {q}: colour {d['largest_is_prompted']:.3f} (n={d['count']}), prompted colour present "
                  f"{d['prompted_present']:.3f}, regions read {d['mean_regions_read']:.2f}, "
                  f"sharpness {np.nanmean([r.sharpness for r in readings]):.3f}")
            print("    " + "  ".join(
                f"{k} {single_object_reading([readings[i] for i in g], [truths[i] for i in g])['largest_is_prompted']:.2f}"
                f" ({len(g)})" for k, g in sorted(groups.items())), flush=True)
            print_confusion(readings, truths)


def print_confusion(readings: list, truths: list[dict]) -> None:
    """Prompted colour (rows) x colour of the largest region read (columns; "none" = no region)."""
    names = list(PALETTE_NAMES) + ["none"]
    counts = collections.Counter((t["objects"][0]["colour"], r.objects[0].colour if r.objects else "none")
                                 for r, t in zip(readings, truths))
    print("    prompted \\ read  " + " ".join(f"{c[:6]:>6}" for c in names))
    for c in PALETTE_NAMES:
        print(f"    {c:>15}  " + " ".join(f"{counts[(c, g)]:6d}" for g in names))


if __name__ == "__main__":
    main()
