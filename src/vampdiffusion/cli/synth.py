"""`vamp data synth --n N --size PX --out DIR [--tar]`: a synthetic Danbooru dataset with its ground truth."""

from __future__ import annotations

import argparse
from pathlib import Path

from vampdiffusion.cli import fail


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n", type=int, default=5000, help="number of posts (>= 100)")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels (>= 32)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--tar", action="store_true", help="write data-0NNN.tar shards instead of original/0NNN/")
    parser.add_argument("--workers", type=int, default=2, help="rendering processes")


def main(args: argparse.Namespace) -> int:
    from vampdiffusion.data.synth import SynthArgs, synthesize
    try:
        s = synthesize(SynthArgs(n=args.n, size=args.size, seed=args.seed, tar=args.tar, workers=args.workers),
                       Path(args.out))
    except ValueError as e:
        return fail("data synth", e)
    print(f"wrote {s['n']} synthetic posts ({s['size']} px, {s['layout']} layout) to {args.out} in {s['seconds']} s")
    print("  planted: " + ", ".join(f"{k} {v}" for k, v in sorted(s["kinds"].items()))
          + f", malformed_lines {s['malformed_lines']}")
    return 0
