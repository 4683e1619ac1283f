"""`vamp export diffusers MODEL_DIR OUT_DIR`: a model folder as a diffusers pipeline folder (model_index.json)."""

from __future__ import annotations

import argparse
import logging

from vampdiffusion.cli import fail


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("format", choices=["diffusers"], help="the format to write (diffusers)")
    parser.add_argument("model", help="model folder: config.json, model.safetensors, vocab.json")
    parser.add_argument("out", help="folder to write (new, empty, or an earlier export)")
    parser.add_argument("--vae-path", default=None, help="VAE weights (folder / file / hub id) instead of the config's latents.vae_path")
    parser.add_argument("--sampler", default=None,
                        help="the pipeline's scheduler: ddim | euler | dpmpp2m (A1111 names too; default: the model's sample.sampler)")


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        from vampdiffusion.generation.pipeline import export_diffusers
        out = export_diffusers(args.model, args.out, args.vae_path, args.sampler)
    except (ValueError, FileNotFoundError, OSError) as e:
        return fail("export", e)
    print(f"wrote {out} (load it with VampDiffusionPipeline.from_pretrained({str(out)!r}))")
    return 0
