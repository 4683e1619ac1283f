"""`verify_dataset` / `vamp data verify`: every problem one line, no traceback on damaged files, shards.json checksum."""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_train_support import write_latent_dataset

from vampdiffusion.cli.verify import main as verify_main
from vampdiffusion.latents.shards import (
    SHARDS_SIDECAR,
    read_shards_json,
    verify_dataset,
)

DAMAGED = ["index.parquet", "shards.json", "shards/000000.npy"]


@pytest.fixture
def data(tmp_path):
    return write_latent_dataset(tmp_path / "latents", n=24, shards=2, checksum=True)


def damage(path, how: str) -> None:
    if how == "garbage":
        path.write_bytes(np.random.default_rng(0).bytes(path.stat().st_size))
    else:  # truncated
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def set_index_rows(root, shard: list[int], row: list[int]) -> None:
    table = pq.read_table(root / "index.parquet")
    for name, values in (("shard", shard), ("row", row)):
        table = table.set_column(table.column_names.index(name), name, pa.array(values, pa.int64()))
    pq.write_table(table, root / "index.parquet")


def test_a_whole_dataset_verifies(data, capsys):
    assert verify_dataset(data) == []
    assert verify_main(argparse.Namespace(dir=str(data))) == 0
    assert "OK" in capsys.readouterr().out


@pytest.mark.parametrize("how", ["garbage", "truncated"])
@pytest.mark.parametrize("name", DAMAGED)
def test_damaged_file_is_one_line_naming_it_never_a_traceback(data, name, how, capsys):
    if name == "shards.json":
        (data / SHARDS_SIDECAR).unlink()  # the file itself must be parsed (the checksum test is below)
    damage(data / name, how)
    problems = verify_dataset(data)
    assert problems and all("\n" not in p for p in problems)
    assert any(name.removeprefix("shards/") in p for p in problems), problems
    assert verify_main(argparse.Namespace(dir=str(data))) == 1
    out, err = capsys.readouterr()
    assert out.count("FAIL ") == len(problems) and "Traceback" not in out + err
    assert "vamp data encode" in err


def test_every_shard_problem_is_reported(data):
    shard0 = data / "shards" / "000000.npy"
    raw = bytearray(shard0.read_bytes())
    raw[-1] ^= 0xFF                                         # still loads; only the checksum tells
    shard0.write_bytes(bytes(raw))
    (data / "shards" / "000001.npy").unlink()
    problems = verify_dataset(data)
    assert len(problems) == 2
    assert "shard 0: checksum mismatch" in problems[0] and "shard 1:" in problems[1] and "missing" in problems[1]


def test_index_rows_are_checked_against_shards_json(data):
    # 12 rows per shard: shard 0 names row 0 twice and row 99, shard 1 loses a row to an unknown shard 7
    shard = [0] * 12 + [1] * 11 + [7]
    row = [0, 0, *range(2, 11), 99] + list(range(11)) + [0]
    set_index_rows(data, shard, row)
    problems = verify_dataset(data)
    text = "\n".join(problems)
    assert "names shard 7, which shards.json does not list" in text
    assert "1 row(s) point outside shard 0, which has 12 rows (e.g. id 11 -> row 99)" in text
    assert "1 row(s) of shard 0 are named more than once (e.g. row 0 by ids [0, 1])" in text
    assert "has 11 row(s) of shard 1, shards.json records 12" in text
    assert len(problems) == 4


def test_shards_json_is_covered_by_its_checksum(data):
    doc = json.loads((data / "shards.json").read_text())
    assert (data / SHARDS_SIDECAR).read_text().split()[1] == "shards.json"      # `sha256sum -c` format
    doc["shards"][0]["rows"] = 11                                               # valid JSON, wrong content
    doc["shards"][0]["shape"][0] = 11
    (data / "shards.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="does not match shards.json.sha256"):
        read_shards_json(data)
    problems = verify_dataset(data)
    assert len(problems) == 1 and "shards.json does not match shards.json.sha256" in problems[0]


def test_malformed_records_are_named(data):
    (data / SHARDS_SIDECAR).unlink()
    doc = json.loads((data / "shards.json").read_text())
    doc["shards"][1]["sha256"] = "abc"
    doc["shards"].append(dict(doc["shards"][0]))                                # shard 0 twice
    (data / "shards.json").write_text(json.dumps(doc))
    problems = verify_dataset(data)
    assert "entry 1 (shard 1) has a missing or invalid sha256" in problems[0]
    assert "shards.json lists shard 0 twice" in problems[1]


def test_a_missing_folder_is_a_problem_not_an_error(tmp_path, capsys):
    assert verify_main(argparse.Namespace(dir=str(tmp_path / "nope"))) == 1
    assert "is not a folder" in capsys.readouterr().out
    os.makedirs(tmp_path / "empty")
    assert "shards.json is missing" in verify_dataset(tmp_path / "empty")[0]
