"""`vamp generate --model DIR --tags "1girl, solo, gothic, dark" --quality 3 …`: PNGs with their parameters."""

from __future__ import annotations

import argparse
import logging

from vampdiffusion.cli import fail


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="model folder: config.json, model.safetensors, vocab.json")
    parser.add_argument("--tags", help='comma-separated Danbooru tags, e.g. "1girl, solo, gothic, dark"')
    parser.add_argument("--prompts", help="text file, one prompt (comma-separated tags) per line; # comments")
    parser.add_argument("--quality", type=int, default=3, help="quality tier 0..3 (3 = Ultra; default 3)")
    parser.add_argument("--style", type=int, default=None, help="force style expert K (0..7); default: routed")
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's sample.steps)")
    parser.add_argument("--sampler", default=None, help="ddim | euler | dpmpp2m (default: the model's sample.sampler)")
    parser.add_argument("--cfg", type=float, default=None, help="guidance scale w (default: sample.cfg_scale)")
    parser.add_argument("--cfg-rescale", type=float, default=None, help="guidance rescale φ in 0..1 (default: sample.cfg_rescale)")
    parser.add_argument("--negative-quality", type=int, default=None,
                        help="quality tier of the unguided branch, like a 'worst quality' negative prompt "
                             "(0); -1 = the prompt's tier (default: sample.negative_quality)")
    parser.add_argument("--seed", type=int, default=0, help="seed of image 0; image i uses seed + i (default 0)")
    parser.add_argument("--n", type=int, default=1, help="images per prompt (default 1)")
    parser.add_argument("--size", default=None, help="WIDTHxHEIGHT in pixels (default: the model's latents.resolution square)")
    parser.add_argument("--batch-size", type=int, default=4, help="images per sampler batch (default 4)")
    parser.add_argument("--out", default="out", help="output folder (default out/)")
    parser.add_argument("--vae-path", default=None, help="VAE weights (folder / file / hub id) instead of the config's latents.vae_path")
    parser.add_argument("--device", default=None, help="cuda | cpu (default: cuda when available)")


def main(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from vampdiffusion.generation.generate import Request, generate_files, parse_size, read_prompts
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    bar, total = None, 0

    def on_disk(k: int) -> None:
        nonlocal bar
        if bar is None:  # opened once sampling starts, so a refused request prints only its error line
            bar = tqdm(total=total, unit="img")
        bar.update(k)

    try:
        if (args.tags is None) == (args.prompts is None):
            raise ValueError("give exactly one of --tags \"1girl, solo, …\" or --prompts FILE")
        prompts = [args.tags] if args.tags is not None else read_prompts(args.prompts)
        size = parse_size(args.size) if args.size is not None else None
        requests = [Request(p, args.quality, args.style, args.steps, args.sampler, args.cfg, args.cfg_rescale,
                            args.seed, args.n, size, args.negative_quality) for p in prompts]
        total = sum(r.n for r in requests)
        paths = generate_files(args.model, requests, args.out, args.batch_size, args.vae_path, args.device,
                               progress=on_disk)
    except (ValueError, FileNotFoundError, OSError) as e:
        close(bar)
        return fail("generate", e)
    except KeyboardInterrupt:
        close(bar)
        done = 0 if bar is None else bar.n
        return fail("generate", f"interrupted; the {done} finished image(s) are in {args.out}", code=1)
    close(bar)
    for path in paths:
        print(f"wrote {path}")
    return 0


def close(bar) -> None:
    """End the progress bar's line before anything else is printed."""
    if bar is not None:
        bar.close()
