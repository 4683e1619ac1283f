"""`vamp generate --model DIR --tags "1girl, solo, gothic, dark" --quality 3 …` or `--from-png FILE [--set K=V]`:
PNGs with their A1111 parameters."""

from __future__ import annotations

import argparse
import logging

from vampdiffusion.cli import fail


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="model folder: config.json, model.safetensors, vocab.json")
    parser.add_argument("--tags", help='comma-separated Danbooru tags, e.g. "1girl, solo, gothic, dark, masterpiece"')
    parser.add_argument("--prompts", help="text file, one prompt (comma-separated tags) per line; # comments")
    parser.add_argument("--from-png", dest="from_png", metavar="FILE",
                        help="regenerate the image FILE from its PNG parameters (vamp generate, vamp serve, A1111)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="with --from-png: change one parameter, e.g. --set Seed=5 --set 'CFG scale=7' (repeatable)")
    parser.add_argument("--negative", default=None, help='negative prompt, e.g. "worst quality, blurry" (default none)')
    parser.add_argument("--quality", type=int, default=None,
                        help="quality tier 0..3 (3 = Ultra; default: the prompt's quality word, else 3)")
    parser.add_argument("--style", default=None,
                        help="force style expert K (0..7), or mix two: '2:0.7 5:0.3'; default: routed")
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's sample.steps)")
    parser.add_argument("--sampler", default=None,
                        help="ddim | euler | dpmpp2m, or DDIM | Euler | 'DPM++ 2M' (default: the model's sample.sampler)")
    parser.add_argument("--cfg", type=float, default=None, help="guidance scale w (default: sample.cfg_scale)")
    parser.add_argument("--cfg-rescale", type=float, default=None, help="guidance rescale φ in 0..1 (default: sample.cfg_rescale)")
    parser.add_argument("--negative-quality", type=int, default=None,
                        help="quality tier of the unguided branch, like a 'worst quality' negative prompt "
                             "(0); -1 = the prompt's tier (default: the negative prompt's quality word, "
                             "else sample.negative_quality)")
    parser.add_argument("--seed", type=int, default=None, help="seed of image 0; image i uses seed + i (default 0)")
    parser.add_argument("--n", type=int, default=1, help="images per prompt (default 1)")
    parser.add_argument("--size", default=None, help="WIDTHxHEIGHT in pixels (default: the model's latents.resolution square)")
    parser.add_argument("--batch-size", type=int, default=4, help="images per sampler batch (default 4)")
    parser.add_argument("--out", default="out", help="output folder (default out/)")
    parser.add_argument("--vae-path", default=None, help="VAE weights (folder / file / hub id) instead of the config's latents.vae_path")
    parser.add_argument("--device", default=None, help="cuda | cpu (default: cuda when available)")


# options that --from-png takes from the PNG instead (changed there with --set)
PNG_OPTIONS = ("negative", "quality", "style", "steps", "sampler", "cfg", "cfg_rescale", "negative_quality", "seed",
               "size")


def build_requests(args: argparse.Namespace) -> list:
    """The requests the arguments describe; ValueError naming the problem and the fix."""
    from vampdiffusion.generation.generate import Request, parse_size, read_prompts
    from vampdiffusion.generation.infotext import read_png_parameters, request_from_infotext
    if sum(x is not None for x in (args.tags, args.prompts, args.from_png)) != 1:
        raise ValueError("give exactly one of --tags \"1girl, solo, …\", --prompts FILE or --from-png FILE")
    if args.from_png is not None:
        given = [f"--{o.replace('_', '-')}" for o in PNG_OPTIONS if getattr(args, o) is not None]
        if given:
            raise ValueError(f"--from-png takes {', '.join(given)} from the PNG; change a parameter with "
                             f"--set KEY=VALUE (e.g. --set Seed=5)")
        req = request_from_infotext(read_png_parameters(args.from_png), args.sets)
        req.n = args.n
        return [req]
    if args.sets:
        raise ValueError("--set KEY=VALUE changes the parameters of --from-png FILE; without it use the options "
                         "(--seed, --steps, …)")
    prompts = [args.tags] if args.tags is not None else read_prompts(args.prompts)
    size = parse_size(args.size) if args.size is not None else None
    return [Request(p, args.quality, args.style, args.steps, args.sampler, args.cfg, args.cfg_rescale,
                    0 if args.seed is None else args.seed, args.n, size, args.negative_quality, args.negative or "")
            for p in prompts]


def main(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from vampdiffusion.generation.generate import generate_files
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    bar, total = None, 0

    def on_disk(k: int) -> None:
        nonlocal bar
        if bar is None:  # opened once sampling starts, so a refused request prints only its error line
            bar = tqdm(total=total, unit="img")
        bar.update(k)

    try:
        requests = build_requests(args)
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
