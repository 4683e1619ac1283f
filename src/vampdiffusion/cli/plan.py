"""`vamp plan --config v1 --gpu h100 --gpus 8`: parameters, FLOPs, memory per GPU, hours per phase."""

from __future__ import annotations

import argparse

from vampdiffusion.cli import add_config_arguments, config_from_args, fail


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from vampdiffusion.models.planner import GPUS
    add_config_arguments(parser)
    parser.add_argument("--gpu", choices=sorted(GPUS), default="rtx4090", help="GPU model (default: the document's rtx4090)")
    parser.add_argument("--gpus", type=int, default=2, help="number of GPUs (default 2)")
    parser.add_argument("--micro-batch", type=int, default=None, help="images per GPU per forward (default: train.micro_batch)")
    parser.add_argument("--checkpointing", action="store_true", default=None,
                        help="per-block gradient checkpointing (default: model.gradient_checkpointing)")
    parser.add_argument("--resolution", type=int, default=None, help="image side in pixels (default: latents.resolution)")
    parser.add_argument("--mfu", type=float, default=0.4, help="assumed model FLOPs utilisation (default 0.4)")
    parser.add_argument("--effective-batch", type=int, default=256, help="images per optimizer step (document: 256)")
    parser.add_argument("--json", default=None, help="also write the plan as JSON to this file")


def main(args: argparse.Namespace) -> int:
    from vampdiffusion.atomic import atomic_write_json
    from vampdiffusion.models.planner import format_plan, plan
    try:
        r = plan(config_from_args(args), args.gpu, args.gpus, args.micro_batch, args.checkpointing, args.resolution,
                 args.mfu, args.effective_batch)
    except ValueError as e:
        return fail("plan", e)
    print(format_plan(r))
    if args.json:
        atomic_write_json(args.json, r)
    return 0
