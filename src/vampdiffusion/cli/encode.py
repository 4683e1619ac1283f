"""`vamp data encode --manifest DIR --out DIR [--vae sdxl|taesdxl] [--vae-path P]` (torchrun: one rank per GPU)."""

from __future__ import annotations

import argparse
import os

from vampdiffusion.cli import add_config_arguments, config_from_args, fail


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--manifest", required=True, help="manifest.parquet, or the `vamp data prepare` folder holding it")
    parser.add_argument("--out", required=True, help="latent dataset folder (created; an unfinished one is resumed)")
    parser.add_argument("--vae", choices=("sdxl", "taesdxl"), help="VAE backend (default: latents.vae); also sets "
                        "latents.scaling_factor to the backend's unless --set latents.scaling_factor=... is given")
    parser.add_argument("--vae-path", help="hub id, local folder or file of the VAE weights (default: latents.vae_path)")
    parser.add_argument("--device", help="cpu | cuda | cuda:N (default: cuda:LOCAL_RANK when available, else cpu)")
    add_config_arguments(parser)


def main(args: argparse.Namespace) -> int:
    import torch

    from vampdiffusion.latents.encode import NonFiniteLatentError, encode
    from vampdiffusion.latents.vae import with_backend
    cfg = config_from_args(args).latents
    if args.vae or args.vae_path:
        kept = any(o.strip().startswith("latents.scaling_factor") for o in args.overrides)
        cfg = with_backend(cfg, args.vae or cfg.vae, args.vae_path,
                           cfg.scaling_factor if kept or not args.vae else None)
    rank, world_size = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    device = args.device or (f"cuda:{os.environ.get('LOCAL_RANK', 0)}" if torch.cuda.is_available() else "cpu")
    try:
        summary = encode(args.manifest, args.out, cfg, torch.device(device), rank, world_size)
    except NonFiniteLatentError as e:          # the VAE failed on this data: the work, not the input
        return fail("data encode", e, 1)
    except (FileNotFoundError, ValueError) as e:
        return fail("data encode", e)
    if rank == 0:
        reasons = ", ".join(f"{k} {v}" for k, v in summary["skipped_by_reason"].items()) or "none"
        print(f"encoded {summary['encoded']} images into {summary['shards']} shard(s) in {args.out}; "
              f"skipped {summary['skipped']} unreadable image(s) ({reasons}; listed in {args.out}/encode_report.json)")
    return 0
