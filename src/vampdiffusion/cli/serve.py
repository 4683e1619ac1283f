"""`vamp serve --model DIR [--host 127.0.0.1] [--port 7860]`: a local web UI for generation (gradio)."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os

from vampdiffusion.cli import fail


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="model folder: config.json, model.safetensors, vocab.json")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 = every network)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument("--out", default="out", help="folder the generated PNGs are written to (default out/)")
    parser.add_argument("--vae-path", default=None, help="VAE weights (folder / file / hub id) instead of the config's latents.vae_path")
    parser.add_argument("--device", default=None, help="cuda | cpu (default: cuda when available)")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # gradio's own requests to itself at start
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    if not 0 < args.port < 65536:
        return fail("serve", f"--port must be 1..65535, got {args.port}")
    try:
        from vampdiffusion.generation.generate import check_out_dir, load_generator
        out = check_out_dir(args.out)
        gen = load_generator(args.model, args.vae_path, args.device)
    except (ValueError, FileNotFoundError, OSError) as e:
        return fail("serve", e)
    try:
        from vampdiffusion.generation.serve_ui import build, launch
    except ImportError as e:
        return fail("serve", f"the web UI needs gradio ({e}); install it with pip install -e \".[ui]\"")
    if not is_loopback(args.host):
        print(f"vamp serve: warning: listening on {args.host}, not this machine only: anyone who can reach "
              f"port {args.port} can use the UI and the machine's GPU; there is no login")
    print(f"vamp serve: http://{args.host}:{args.port}  (images are written to {out}; Ctrl-C stops)")
    try:
        launch(build(gen, out), args.host, args.port, block=True)
    except OSError as e:
        return fail("serve", f"cannot listen on {args.host}:{args.port} ({e}); pick another --port", code=1)
    except KeyboardInterrupt:
        pass
    return 0
