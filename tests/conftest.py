import os
from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="session")
def taesdxl_path() -> Path:
    """Real TAESD-XL weights: the folder $VAMP_TAESDXL names (holding diffusers/ and original/)."""
    env = os.environ.get("VAMP_TAESDXL")
    if not env or not (Path(env) / "diffusers" / "config.json").is_file():
        pytest.fail(f"TAESD-XL weights not found at {env or '(VAMP_TAESDXL is unset)'}; "
                    "set VAMP_TAESDXL to the folder holding diffusers/ and original/")
    return Path(env)


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
