"""`vamp`: the command layer on top of the library, imported by nothing in it.

Each command module exposes `add_arguments(parser)` and `main(args) -> int`; `main` parses, calls one library
function, prints. A module is imported only when its command runs, so `vamp --help` stays fast.
Exit codes: 0 done, 1 the work failed (an error the message names), 2 bad input or configuration,
3 `vamp demo` finished but a claim did not pass, 75 `vamp train` stopped by a signal (SIGTERM / SIGINT) after
writing a checkpoint: continue with the same command and --resume, 130 interrupted (Ctrl-C) elsewhere.
docs/errors.md lists the errors a user can meet, what each means and the fix.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings

from vampdiffusion import __version__
from vampdiffusion.config import Config, ConfigError, load_config

# command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("vampdiffusion.cli.demo", "run the whole pipeline on the synthetic Danbooru set and write a report"),
    "plan": ("vampdiffusion.cli.plan", "parameters, FLOPs, memory and hours for a config"),
    "schedule": ("vampdiffusion.cli.schedule", "print the noise schedule and timestep-sampler histograms"),
    "train": ("vampdiffusion.cli.train", "train phase 1, 2 or 3 on encoded latents"),
    "eval": ("vampdiffusion.cli.eval", "FID per tier, CLIP score, routing and oracle metrics"),
    "generate": ("vampdiffusion.cli.generate", "generate images from Danbooru tags"),
    "serve": ("vampdiffusion.cli.serve", "a local web UI for generation (gradio)"),
    "export": ("vampdiffusion.cli.export", "write a model folder as a diffusers pipeline"),
}
DATA_COMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("vampdiffusion.cli.synth", "write a synthetic Danbooru dataset"),
    "prepare": ("vampdiffusion.cli.prepare", "ingest posts + images, filter (5 stages), label, build vocab"),
    "encode": ("vampdiffusion.cli.encode", "encode the manifest's images to VAE latent shards"),
    "verify": ("vampdiffusion.cli.verify", "verify latent shard checksums"),
}


def add_config_arguments(parser: argparse.ArgumentParser, default: str | None = None) -> None:
    """`--config PRESET|FILE` and repeatable `--set section.key=value`."""
    parser.add_argument("--config", default=default, help="a preset (v1, small, tiny) or a YAML file")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config field, e.g. --set model.depth=8 (repeatable)")


def config_from_args(args: argparse.Namespace) -> Config:
    return load_config(args.config, args.overrides)


def fail(command: str, error: Exception | str, code: int = 2) -> int:
    """One line on stderr naming the command and the problem; returns the exit code."""
    print(f"vamp {command}: {error}", file=sys.stderr)
    return code


def _add_commands(sub: argparse._SubParsersAction, table: dict[str, tuple[str, str]], argv_cmd: str | None) -> None:
    for name, (module, help_) in table.items():
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(_module=module)
        if name == argv_cmd:  # import only the module that runs
            importlib.import_module(module).add_arguments(p)


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vamp", description="VampDiffusion-V1: anime latent diffusion with dual MoE")
    parser.add_argument("--version", action="version", version=f"vamp {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    positional = [a for a in argv if not a.startswith("-")]
    first = positional[0] if positional else None
    second = positional[1] if len(positional) > 1 else None
    _add_commands(sub, COMMANDS, first)
    data = sub.add_parser("data", help="data pipeline: synth, prepare, encode, verify")
    data_sub = data.add_subparsers(dest="data_command", metavar="STEP")
    _add_commands(data_sub, DATA_COMMANDS, second if first == "data" else None)
    return parser


def one_line_warnings(command: str):
    """Warnings the library raises about the user's input (a truncated file, an unknown tag) print as one line
    `vamp <command>: warning: ...`, without Python's source-line echo; returns the formatter it replaced."""
    previous = warnings.formatwarning
    warnings.formatwarning = lambda message, category, *_, **__: f"vamp {command}: warning: {message}\n"
    return previous


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    module = getattr(args, "_module", None)
    if module is None:
        parser.print_help()
        return 2
    name = " ".join(x for x in (args.command, getattr(args, "data_command", None)) if x)
    previous_format = one_line_warnings(name)
    try:
        return int(importlib.import_module(module).main(args) or 0)
    except ConfigError as e:
        return fail(name, f"config error: {e}")
    except OSError as e:       # the file system said no (permissions, a full disk, a vanished folder)
        return fail(name, f"{e.strerror or e} ({e.filename or 'a file'}); check the path, its permissions and the free space", 1)
    except KeyboardInterrupt:
        return fail(name, "interrupted", 130)
    finally:
        warnings.formatwarning = previous_format  # a caller in the same process keeps its own
