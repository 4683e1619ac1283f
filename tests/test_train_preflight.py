"""Before the first step: damaged data stops the run, unusable checkpoints are never written over, the model
must fit the device; a signal stops the run with exit code 75; interrupted writes leave no temp files."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from test_train_support import TINY, tiny_config, write_latent_dataset

from vampdiffusion.cli import main as vamp
from vampdiffusion.config import load_config
from vampdiffusion.latents import shards
from vampdiffusion.models.planner import parameter_counts
from vampdiffusion.training import checkpoint as ckpt
from vampdiffusion.training import distributed as D
from vampdiffusion.training import preflight
from vampdiffusion.training import train as T
from vampdiffusion.training.signals import EXIT_PREEMPTED

ONE = D.DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
TINY_ARGS = ["--config", "tiny", *[a for o in TINY for a in ("--set", o)]]


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture
def data(tmp_path) -> Path:
    return write_latent_dataset(tmp_path / "latents", shards=2, checksum=True)


def flip_last_byte(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF
    path.write_bytes(bytes(raw))


def full_state(step: int, **drop) -> dict:
    state = {"model": {}, "optimizer": {}, "ema": {}, "progress": {"step": step}, "data": {}, "rng": [], "phase": 1}
    return {k: v for k, v in state.items() if k not in drop}


# ----------------------------------------------------------------------------
# Damaged data
# ----------------------------------------------------------------------------

def test_a_corrupted_shard_stops_the_run_before_anything_is_written(data, tmp_path):
    flip_last_byte(data / "shards" / "000001.npy")            # same size, loads fine: only the sha256 tells
    run = tmp_path / "run"
    with pytest.raises(ValueError) as e:
        T.train(tiny_config(), 1, data, run)
    msg = str(e.value)
    assert "\n" not in msg and "shard 1: checksum mismatch in shards/000001.npy" in msg
    assert f"`vamp data verify {data}`" in msg and "vamp data encode" in msg
    assert not ckpt.list_checkpoints(run) and not (run / "config.yaml").exists()


@pytest.mark.parametrize("name", ["index.parquet", "shards.json", "shards/000000.npy"])
def test_a_garbage_file_is_exit_2_with_one_line_naming_it(data, tmp_path, name, capsys):
    path = data / name
    path.write_bytes(np.random.default_rng(1).bytes(path.stat().st_size))
    assert vamp(["train", *TINY_ARGS, "--phase", "1", "--data", str(data), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    line = [x for x in err.splitlines() if x.startswith("vamp train: error:")]
    assert len(line) == 1 and name.removeprefix("shards/") in line[0] and "Traceback" not in err


def test_verified_shards_are_not_hashed_again_until_they_change(data, tmp_path, monkeypatch):
    hashed = []
    real = shards.sha256_file
    monkeypatch.setattr(shards, "sha256_file", lambda p: (hashed.append(Path(p).name), real(p))[1])
    run = tmp_path / "run"
    preflight.verify_data(data, run, ONE)
    assert sorted(n for n in hashed if n.endswith(".npy")) == ["000000.npy", "000001.npy"]
    assert set(json.loads((data / "verified.json").read_text())["shards"]) == {"shards/000000.npy",
                                                                              "shards/000001.npy"}
    hashed.clear()
    preflight.verify_data(data, run, ONE)                     # a resume or the next phase
    assert [n for n in hashed if n.endswith(".npy")] == []
    flip_last_byte(data / "shards" / "000001.npy")            # a new mtime: hashed again, and caught
    with pytest.raises(ValueError, match="shard 1: checksum mismatch"):
        preflight.verify_data(data, run, ONE)
    assert [n for n in hashed if n.endswith(".npy")] == ["000001.npy"]


# ----------------------------------------------------------------------------
# Checkpoints that cannot be used
# ----------------------------------------------------------------------------

def test_a_checkpoint_lacking_required_keys_falls_back_to_the_previous(tmp_path):
    ckpt.save_checkpoint(tmp_path, 10, full_state(10), keep_last=3)
    ckpt.save_checkpoint(tmp_path, 20, full_state(20, ema=1, rng=1), keep_last=3)   # verifies and loads
    (state, path), rejected = ckpt.scan_checkpoints(tmp_path, ckpt.REQUIRED_KEYS)
    assert state["progress"]["step"] == 10 and path.name == "step_00000010.pt"
    assert [(p.name, why) for p, why in rejected] == [("step_00000020.pt", "lacks required key(s) ema, rng")]


def test_resume_without_a_usable_checkpoint_stops_then_force_restart_moves_them_aside(data, tmp_path, capsys):
    run = tmp_path / "run"
    truncated = ckpt.save_checkpoint(run, 10, full_state(10), keep_last=3)
    truncated.write_bytes(truncated.read_bytes()[:50])
    ckpt.save_checkpoint(run, 5, full_state(5, optimizer=1), keep_last=3)
    before = {p.name: p.read_bytes() for p in (run / "checkpoints").iterdir()}
    args = ["train", *TINY_ARGS, "--phase", "1", "--data", str(data), "--out", str(run), "--resume"]

    assert vamp(args) == 2
    err = capsys.readouterr().err
    assert "none of the 2 checkpoint(s)" in err and "--force-restart" in err
    assert "step_00000010.pt: size 50 bytes, sidecar says" in err
    assert "step_00000005.pt: lacks required key(s) optimizer" in err
    assert {p.name: p.read_bytes() for p in (run / "checkpoints").iterdir()} == before   # nothing touched

    assert vamp([*args, "--force-restart"]) == 0
    aside = list((run / "checkpoints").glob("unusable-*"))
    assert len(aside) == 1 and {p.name: p.read_bytes() for p in aside[0].iterdir()} == before
    assert [s for s, _ in ckpt.list_checkpoints(run)] == [12, 10]                 # a new run from step 0
    assert "--force-restart: starting phase 1 from step 0" in (run / "train.log").read_text()

    # a newer unusable checkpoint above a usable one: resume from the usable one, the other moved aside
    ckpt.save_checkpoint(run, 20, full_state(20, data=1), keep_last=5)
    assert vamp(args) == 0
    assert "resuming from" in (run / "train.log").read_text().rsplit("--force-restart", 1)[1]
    assert [s for s, _ in ckpt.list_checkpoints(run)] == [12, 10]
    assert sum((p / "step_00000020.pt").is_file() for p in (run / "checkpoints").glob("unusable-*")) == 1


# ----------------------------------------------------------------------------
# Signals and interrupted writes
# ----------------------------------------------------------------------------

def test_sigterm_exits_75_through_the_cli_and_the_next_start_removes_temp_files(data, tmp_path, monkeypatch):
    run = tmp_path / "run"
    stale = [run / "model" / ".model.safetensors.abc.tmp", run / "ema" / ".ema_00000010.safetensors.x.tmp",
             run / "checkpoints" / ".step_00000010.pt.y.tmp"]
    for p in stale:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"half a file")
    real, calls = T.training_loss, []

    def loss_then_sigterm(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:                                   # inside optimizer step 2
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    monkeypatch.setattr(T, "training_loss", loss_then_sigterm)
    assert vamp(["train", *TINY_ARGS, "--phase", "1", "--data", str(data), "--out", str(run)]) == EXIT_PREEMPTED == 75
    assert [s for s, _ in ckpt.list_checkpoints(run)] == [2]
    assert not any(p.exists() for p in stale)
    assert "model size:" in (run / "train.log").read_text()


# ----------------------------------------------------------------------------
# The model must fit
# ----------------------------------------------------------------------------

def test_no_config_uses_v1_and_refuses_a_model_bigger_than_the_memory(data, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(preflight, "device_memory_bytes", lambda device: (2 * 1024 ** 3, "test device's memory"))
    run = tmp_path / "run"
    assert vamp(["train", "--phase", "1", "--data", str(data), "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert "using the v1 preset" in err
    v1 = load_config("v1", ["model.vocab_size=14"]).model                       # vocab_size from the data
    assert f"{parameter_counts(v1)['total'] / 1e6:.1f}M parameters" in err
    error = [x for x in err.splitlines() if x.startswith("vamp train: error:")][0]
    assert "the model will not fit" in error and "the test device's memory is 2.0 GiB" in error
    for fix in ("--config tiny", "--set model.gradient_checkpointing=true", "train.micro_batch", "train.distributed=fsdp"):
        assert fix in error
    assert not (run / "config.yaml").exists()


def test_memory_check_refuses_only_when_the_estimate_exceeds_the_memory(data, monkeypatch):
    cfg = tiny_config()
    need, _ = preflight.memory_estimate(cfg, cfg.train.phase(1), (4, 4), 1, torch.device("cpu"))
    monkeypatch.setattr(preflight, "device_memory_bytes", lambda device: (int(np.ceil(need)), "RAM"))
    preflight.check_memory(cfg, cfg.train.phase(1), data, ONE)                 # exactly enough
    monkeypatch.setattr(preflight, "device_memory_bytes", lambda device: (int(need) - 1, "RAM"))
    with pytest.raises(ValueError, match="will not fit"):
        preflight.check_memory(cfg, cfg.train.phase(1), data, ONE)
