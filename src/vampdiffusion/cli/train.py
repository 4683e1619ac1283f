"""`vamp train --config C --phase 1|2|3 --data LATENTS --out RUN [--init-from RUN] [--resume]`."""

from __future__ import annotations

import argparse
from pathlib import Path

from vampdiffusion.cli import add_config_arguments, config_from_args, fail
from vampdiffusion.config import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--phase", type=int, choices=(1, 2, 3), required=True,
                        help="1 = everything, 2 = expert FFNs + routers only, 3 = everything on the curated subset")
    parser.add_argument("--data", required=True, help="latent dataset folder written by `vamp data encode`")
    parser.add_argument("--out", required=True, help="run folder: checkpoints, logs, samples, model/")
    parser.add_argument("--init-from", dest="init_from", default=None,
                        help="start from these weights with a fresh optimizer and schedule: a run folder, "
                             "a model folder, or a checkpoint .pt")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the latest valid checkpoint in --out (fresh start when there is none)")


def main(args: argparse.Namespace) -> int:
    from vampdiffusion.training.train import train
    try:
        return train(config_from_args(args), args.phase, Path(args.data), Path(args.out), args.init_from, args.resume)
    except (ValueError, FileNotFoundError, ConfigError) as e:
        return fail("train", f"error: {e}")
