"""Two gloo processes on CPU train the same model as one process with the same global batch."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from test_train_support import tiny_config, write_latent_dataset

from vampdiffusion.training import train as T

TESTS = Path(__file__).resolve().parent
# balance losses off: under DDP f and P are global (all-reduced) while gradient accumulation computes them
# per micro-batch, so only with λ_S = λ_Q = 0 are the two runs the same computation
COMMON = ["train.phase1.steps=6", "train.ckpt_every=6", "diffusion.lambda_style=0", "diffusion.lambda_quality=0",
          "train.micro_batch=8"]
CHILD = r"""
import sys
sys.path.insert(0, {tests!r})
import torch
torch.set_num_threads(1)
from pathlib import Path
from test_train_support import tiny_config
from vampdiffusion.training import train as T
sys.exit(T.train(tiny_config(*{overrides!r}), 1, Path(sys.argv[1]), Path(sys.argv[2])))
"""
ATOL = 1e-6  # (g1+g2)/2 all-reduced vs g1/2 + g2/2 accumulated: observed difference 0 (bitwise equal) on CPU


FSDP_ATOL = 1e-6  # reduce-scatter vs accumulation: observed difference 0 (bitwise equal) on CPU


def losses(run: Path) -> list[float]:
    return [r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in r]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, Path]:
    """(data, run) of the 1-process run: micro-batch 8 × accumulation 2."""
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("ref")
    data = write_latent_dataset(tmp / "latents")
    assert T.train(tiny_config(*COMMON, "train.grad_accum=2"), 1, data, tmp / "one") == 0
    return data, tmp / "one"


def test_two_gloo_processes_equal_one_process_with_accumulation(reference, tmp_path):
    data, one = reference

    two = tmp_path / "two"
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(tests=str(TESTS), overrides=[*COMMON, "train.grad_accum=1"]))
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script), str(data), str(two)], env=dict(os.environ, OMP_NUM_THREADS="1"),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    a = load_file(str(one / "model" / "model_live.safetensors"))
    b = load_file(str(two / "model" / "model_live.safetensors"))
    model_cfg = tiny_config(*COMMON).model
    model_cfg.vocab_size = 14                              # as the runs set it from vocab.json
    torch.manual_seed(0)                                   # train.seed + rank 0, as the runs start
    init = T.VampDiT(model_cfg).state_dict()
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    moved = max(float((a[k] - init[k]).abs().max()) for k in a)
    print(f"max |w_1proc - w_2proc| = {worst:.3g}, max |w - w_init| = {moved:.3g}")
    assert moved > 1e-3                                    # training changed the weights
    assert worst < ATOL, f"2-process weights differ from 1-process by {worst}"
    la, lb = losses(one), losses(two)
    assert len(la) == len(lb) == 6
    assert max(abs(x - y) for x, y in zip(la, lb)) < 1e-5


# FSDP2: run 6 steps (checkpoint every 3); copy the run without its step-6 checkpoint and resume it from
# step 3 in a second launch: both must end where the 1-process run did, and the resumed one exactly
# where the straight one did.
FSDP_CHILD = r"""
import sys
sys.path.insert(0, {tests!r})
import torch
torch.set_num_threads(1)
from pathlib import Path
from test_train_support import tiny_config
from vampdiffusion.training import train as T
sys.exit(T.train(tiny_config(*{overrides!r}), 1, Path(sys.argv[1]), Path(sys.argv[2]), resume="--resume" in sys.argv))
"""


def torchrun(script: Path, *args: str) -> subprocess.CompletedProcess:
    """Two processes under torchrun; on a timeout the whole process group is killed (no orphans)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script), *args]
    proc = subprocess.Popen(cmd, env=dict(os.environ, OMP_NUM_THREADS="1"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


@pytest.mark.slow
def test_fsdp2_two_processes_match_one_process_and_resume(reference, tmp_path):
    data, one = reference
    script = tmp_path / "child.py"
    overrides = [*COMMON, "train.grad_accum=1", "train.distributed=fsdp", "train.ckpt_every=3"]
    script.write_text(FSDP_CHILD.format(tests=str(TESTS), overrides=overrides))
    a, b = tmp_path / "a", tmp_path / "b"
    proc = torchrun(script, str(data), str(a))
    assert proc.returncode == 0, proc.stderr[-3000:]
    shutil.copytree(a, b)
    for p in (b / "checkpoints").glob("step_00000006*"):
        p.unlink()
    shutil.rmtree(b / "model")
    proc = torchrun(script, str(data), str(b), "--resume")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resuming from" in (b / "train.log").read_text()

    ref = load_file(str(one / "model" / "model_live.safetensors"))
    for run in (a, b):
        got = load_file(str(run / "model" / "model_live.safetensors"))
        worst = max(float((ref[k] - got[k]).abs().max()) for k in ref)
        print(f"FSDP2 {run.name}: max |w_1proc - w_fsdp| = {worst:.3g}")
        assert set(got) == set(ref) and worst < FSDP_ATOL
    ema_a = load_file(str(a / "model" / "model.safetensors"))
    ema_b = load_file(str(b / "model" / "model.safetensors"))
    assert all(torch.equal(ema_a[k], ema_b[k]) for k in ema_a)          # resume under FSDP2 is exact
    assert max(abs(x - y) for x, y in zip(losses(one), losses(a))) < 1e-5
