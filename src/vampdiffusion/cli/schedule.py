"""`vamp schedule --config C`: the noise schedule and a histogram of each timestep sampler."""

from __future__ import annotations

import argparse

from vampdiffusion.cli import add_config_arguments, config_from_args, fail


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--samples", type=int, default=100_000, help="draws per timestep sampler (default 100000)")
    parser.add_argument("--bins", type=int, default=20, help="histogram bins over 0..T-1 (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the draws (default 0)")


def main(args: argparse.Namespace) -> int:
    from vampdiffusion.diffusion.schedule_table import schedule_report
    try:
        print(schedule_report(config_from_args(args), args.samples, args.bins, args.seed))
    except ValueError as e:
        return fail("schedule", e)
    return 0
