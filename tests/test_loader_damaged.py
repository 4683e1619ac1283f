"""LatentDataset on a damaged index.parquet: a ValueError naming the file and the fix, not a pyarrow traceback."""

from __future__ import annotations

import pytest
from test_train_support import write_latent_dataset

from vampdiffusion.latents.loader import LatentDataset


@pytest.mark.parametrize("how", ["garbage", "truncated"])
def test_a_damaged_index_is_a_value_error_naming_it(tmp_path, how):
    root = write_latent_dataset(tmp_path / "latents", n=8)
    index = root / "index.parquet"
    raw = index.read_bytes()
    index.write_bytes(b"\x00not parquet" * 40 if how == "garbage" else raw[: len(raw) // 2])
    with pytest.raises(ValueError) as e:
        LatentDataset(root)
    msg = str(e.value)
    assert "index.parquet is not a readable parquet file" in msg and "vamp data verify" in msg and "\n" not in msg
