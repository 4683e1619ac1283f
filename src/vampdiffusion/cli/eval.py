"""`vamp eval --model DIR --data DIR --out DIR [--truth FILE]`: the evaluation (docs/evaluation.md) on the held-out split, eval.json + report."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from vampdiffusion.cli import add_config_arguments, fail


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="model folder (config.json, model.safetensors, vocab.json)")
    parser.add_argument("--data", required=True, help="latent dataset folder (`vamp data encode` output); its eval split is used")
    parser.add_argument("--out", required=True, help="output folder for eval.json, report.html and sample grids")
    parser.add_argument("--truth", help="synthetic dataset truth.jsonl: enables the oracle metrics")
    parser.add_argument("--logs", nargs="*", default=[], help="training metrics.jsonl files for the loss curves "
                        "(default: metrics.jsonl beside the model folder)")
    parser.add_argument("--vae-path", help="local VAE weights (default: the model config's latents.vae_path)")
    parser.add_argument("--device", help="cpu | cuda (default: cuda when available)")
    add_config_arguments(parser)


def main(args: argparse.Namespace) -> int:
    from vampdiffusion.config import load_config
    from vampdiffusion.evaluation.evaluate import evaluate, summary_text, write_outputs
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for path, what in ((args.model, "model folder"), (args.data, "latent dataset folder")):
        if not Path(path).is_dir():
            return fail("eval", f"{what} {path} does not exist")
    eval_config = load_config(args.config).eval if args.config else None
    try:
        ev = evaluate(args.model, args.data, truth=args.truth, logs=args.logs, overrides=args.overrides,
                      eval_config=eval_config, vae_path=args.vae_path, device=args.device)
    except (FileNotFoundError, ValueError, OSError) as e:
        return fail("eval", e)
    paths = write_outputs(ev, args.out, columns=ev.results["eval"]["grid_columns"])
    print(summary_text(ev))
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    return 0
