"""`vamp data verify DIR`: every shard's checksum and the index against the shard records."""

from __future__ import annotations

import argparse

from vampdiffusion.cli import fail


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", help="latent dataset folder written by `vamp data encode`")


def main(args: argparse.Namespace) -> int:
    from vampdiffusion.latents.shards import read_shards_json, verify_dataset
    try:
        records = read_shards_json(args.dir)
        problems = verify_dataset(args.dir)
    except FileNotFoundError as e:
        return fail("data verify", e, 1)
    for p in problems:
        print(f"FAIL {p}")
    rows = sum(r["rows"] for r in records)
    if problems:
        print(f"{len(problems)} problem(s) in {args.dir} ({len(records)} shards, {rows} latents)")
        return 1
    print(f"OK {args.dir}: {len(records)} shards, {rows} latents, all checksums match")
    return 0
