"""`vamp data verify DIR`: shards.json and its checksum, every shard's file, shape and sha256, and index.parquet
against shards.json. One line per problem; exit 0 when the dataset is whole, 1 when it is not."""

from __future__ import annotations

import argparse

from vampdiffusion.cli import fail


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", help="latent dataset folder written by `vamp data encode`")


def main(args: argparse.Namespace) -> int:
    from vampdiffusion.latents.shards import REENCODE, load_shards_json, verify_dataset
    problems = verify_dataset(args.dir)  # reads every byte: no cache of earlier checks
    for p in problems:
        print(f"FAIL {p}")
    if problems:
        return fail("data verify", f"{len(problems)} problem(s) in {args.dir}; {REENCODE}", 1)
    records, _, _ = load_shards_json(args.dir)
    rows = sum(r["rows"] for r in records)
    print(f"OK {args.dir}: {len(records)} shards, {rows} latents, all checksums match, index.parquet matches shards.json")
    return 0
