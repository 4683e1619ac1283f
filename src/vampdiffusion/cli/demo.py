"""`vamp demo [--out DIR] [--seed N] [--config small --size 256]`: the whole pipeline on the synthetic Danbooru set;
exit 0 when every claim passes."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from vampdiffusion.cli import fail


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from vampdiffusion.demo import DemoArgs
    d = DemoArgs()
    parser.add_argument("--out", default=str(d.out), help=f"output folder (default {d.out}); a second run reuses "
                        "finished stages")
    parser.add_argument("--n", type=int, default=d.n, help=f"synthetic posts (default {d.n})")
    parser.add_argument("--size", type=int, default=None, help="synthetic image side, px (default: the preset's "
                        f"latents.resolution, {d.size} for {d.config})")
    parser.add_argument("--seed", type=int, default=d.seed, help="seed of the synthetic set and of training")
    parser.add_argument("--config", default=d.config, help=f"preset or YAML file (default {d.config}; small: "
                        "d 384, depth 12, for --size 256 on one GPU)")
    parser.add_argument("--device", default=d.device, help="where encoding and evaluation run (default: cuda when "
                        "available, as training, else cpu)")
    parser.add_argument("--vae-path", default="", help="TAESD-XL weights: a local folder or a hub id; default "
                        "$VAMP_TAESDXL, else downloads madebyollin/taesdxl")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a field of the preset, e.g. --set train.phase1.steps=300 for a quick run "
                             "(the claims are measured at the preset's steps)")


def main(args: argparse.Namespace) -> int:
    from vampdiffusion.config import load_config
    from vampdiffusion.demo import DemoArgs, run_demo
    from vampdiffusion.evaluation.evaluate import summary_text
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        size = args.size or load_config(args.config).latents.resolution
        a = DemoArgs(out=Path(args.out), n=args.n, size=size, seed=args.seed, vae_path=args.vae_path,
                     config=args.config, device=args.device)
        result = run_demo(a, args.overrides)
    except (FileNotFoundError, ValueError) as e:   # the arguments, the config or the data said no
        return fail("demo", e)
    except RuntimeError as e:                      # a stage's work failed
        return fail("demo", e, 1)
    from vampdiffusion.evaluation.evaluate import Evaluation
    print(summary_text(Evaluation(result.results)))
    print("\nwhat the model learned:")
    for c in result.checks:
        print(f"  [{'PASS' if c['passed'] else 'FAIL'}] {c['check']}: {c['value']} (threshold {c['threshold']}, "
              f"chance {c['chance']})")
    print(f"\nreport: {result.report}")
    return 0 if result.passed else 3
