"""`vamp data prepare --posts FILE --images DIR --out DIR`: ingest, five filter stages, labels, vocabulary, manifest."""

from __future__ import annotations

import argparse

from vampdiffusion.cli import add_config_arguments, config_from_args, fail


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--posts", action="append", default=[], metavar="FILE",
                        help="posts file: JSON lines / JSON array / parquet / SQLite, optionally .gz / .zst; repeat for "
                             "several (an id in a later file replaces the earlier record)")
    parser.add_argument("--images", action="append", default=[], metavar="DIR",
                        help="image folder: an original/0NNN/<id>.<ext> tree or *.tar shards with <id>.<ext> members; "
                             "repeat for several (an image in a later folder wins)")
    parser.add_argument("--captioned", action="append", default=[], metavar="DIR",
                        help="a captioned folder: <name>.<ext> with <name>.txt tags (and an optional <name>.json); "
                             "its own posts and images; repeatable")
    parser.add_argument("--image-index", metavar="DIR", help="tar index JSONs (deepghs/hfutils format) mirroring the "
                        "tars' relative paths, when they are not beside the tars")
    parser.add_argument("--out", required=True, help="output folder (manifest.parquet, vocab.json, tables, report)")
    add_config_arguments(parser)


def main(args: argparse.Namespace) -> int:
    from vampdiffusion.data.prepare import prepare
    try:
        prepare(config_from_args(args), args.posts, args.images, args.out, args.image_index, args.captioned)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        return fail("data prepare", e)
    return 0
