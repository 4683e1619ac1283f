"""`vamp train --config C --phase 1|2|3 --data LATENTS --out RUN [--init-from RUN] [--resume [--force-restart]]`.

Exit codes: 0 the phase finished; 1 it stopped on train.max_nonfinite non-finite steps in a row; 2 bad input or
configuration (a damaged dataset, no usable checkpoint to resume, a model the device cannot hold);
75 (EX_TEMPFAIL) stopped by SIGTERM / SIGINT after writing a checkpoint: run the same command with --resume.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vampdiffusion.cli import add_config_arguments, fail
from vampdiffusion.config import ConfigError, load_config

DEFAULT_PRESET = "v1"  # the preset that spells out the config's defaults


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
                        help="continue from the latest usable checkpoint in --out (fresh start when there is none; "
                             "an error when there are checkpoints and none is usable)")
    parser.add_argument("--force-restart", dest="force_restart", action="store_true",
                        help="when no checkpoint in --out is usable: move them into checkpoints/unusable-<time>/ "
                             "(nothing is deleted) and start from step 0")


def main(args: argparse.Namespace) -> int:
    """The exit code of train(): 0, 1, or 75 after a signal; 2 for bad input."""
    from vampdiffusion.training.train import train
    if args.config is None:
        print(f"vamp train: no --config given, using the {DEFAULT_PRESET} preset (the defaults; "
              f"on a CPU try --config tiny)", file=sys.stderr)
    try:
        cfg = load_config(args.config or DEFAULT_PRESET, args.overrides)
        return train(cfg, args.phase, Path(args.data), Path(args.out), args.init_from, args.resume,
                     args.force_restart)
    except (ValueError, FileNotFoundError, ConfigError) as e:
        return fail("train", f"error: {e}")
