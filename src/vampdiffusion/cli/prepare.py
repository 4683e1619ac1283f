"""`vamp data prepare --posts FILE --images DIR --out DIR`: ingest, five filter stages, labels, vocabulary, manifest."""

from __future__ import annotations

import argparse

from vampdiffusion.cli import add_config_arguments, config_from_args, fail


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--posts", required=True, help="posts file: JSON lines / JSON array / parquet, optionally .gz / .zst")
    parser.add_argument("--images", required=True, help="image folder: original/0NNN/<id>.<ext> tree or data-0NNN.tar shards")
    parser.add_argument("--out", required=True, help="output folder (manifest.parquet, vocab.json, tables, report)")
    add_config_arguments(parser)


def main(args: argparse.Namespace) -> int:
    from vampdiffusion.data.prepare import prepare
    try:
        prepare(config_from_args(args), args.posts, args.images, args.out)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        return fail("data prepare", e)
    return 0
