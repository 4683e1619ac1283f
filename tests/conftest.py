import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def taesdxl_dir() -> Path:
    """Real TAESD-XL weights: $VAMP_TAESDXL, else ../shared/weights/taesdxl beside the checkout."""
    env = os.environ.get("VAMP_TAESDXL")
    return Path(env) if env else REPO.parent / "shared" / "weights" / "taesdxl"


@pytest.fixture(scope="session")
def taesdxl_path() -> Path:
    p = taesdxl_dir()
    if not (p / "diffusers" / "config.json").is_file():
        pytest.fail(f"TAESD-XL weights not found at {p}; set VAMP_TAESDXL to the folder holding diffusers/ and original/")
    return p


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
