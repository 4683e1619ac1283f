"""Kill the trainer with SIGKILL in the middle of a checkpoint write, resume: nothing is lost or changed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from test_train_support import tiny_config, write_latent_dataset

from vampdiffusion.training import checkpoint as ckpt
from vampdiffusion.training import train as T

TESTS = Path(__file__).resolve().parent
STEPS = ["train.phase1.steps=20", "train.ckpt_every=5", "train.ema_every=5"]

# Runs phase 1 in a child process; with KILL_AT=s the child SIGKILLs itself halfway through writing
# the step-s checkpoint (the temp file is half written, nothing renamed, no sidecar).
CHILD = r"""
import os, signal, sys
sys.path.insert(0, {tests!r})
import torch
torch.set_num_threads(1)
from test_train_support import tiny_config
from pathlib import Path
from vampdiffusion.training import checkpoint as ckpt
from vampdiffusion.training import train as T
kill_at = int(os.environ.get("KILL_AT", "0"))
real_save = torch.save
def save_then_die(obj, f, *a, **k):
    if isinstance(obj, dict) and obj.get("progress", {{}}).get("step") == kill_at:
        data = open(f, "wb"); data.write(b"x" * 1000); data.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    return real_save(obj, f, *a, **k)
ckpt.torch.save = save_then_die
sys.exit(T.train(tiny_config(*{steps!r}), 1, Path(sys.argv[1]), Path(sys.argv[2]), resume="--resume" in sys.argv))
"""


def run_child(data: Path, run: Path, *flags: str, kill_at: int = 0) -> int:
    env = dict(os.environ, KILL_AT=str(kill_at), OMP_NUM_THREADS="1")
    code = CHILD.format(tests=str(TESTS), steps=STEPS)
    return subprocess.run([sys.executable, "-c", code, str(data), str(run), *flags], env=env,
                          capture_output=True, text=True, timeout=300).returncode


def losses(run: Path) -> dict[int, list[float]]:
    out: dict[int, list[float]] = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        if "loss" in row:
            out.setdefault(row["step"], []).append(row["loss"])
    return out


def test_sigkill_mid_checkpoint_then_resume_is_exact(tmp_path):
    torch.set_num_threads(1)
    data = write_latent_dataset(tmp_path / "latents")
    straight = tmp_path / "straight"
    assert T.train(tiny_config(*STEPS), 1, data, straight) == 0

    run = tmp_path / "killed"
    assert run_child(data, run, kill_at=15) == -signal.SIGKILL
    assert [s for s, _ in ckpt.list_checkpoints(run)] == [10, 5]      # step 15 never became a checkpoint
    assert list((run / "checkpoints").glob(".*.tmp"))                  # the torn temp file is there
    assert run_child(data, run, "--resume") == 0
    assert not list((run / "checkpoints").glob(".*.tmp"))

    expected, got = losses(straight), losses(run)
    assert sorted(got) == list(range(1, 21))
    assert max(len(v) for v in got.values()) == 2                      # steps 11-15 ran twice
    for step, values in got.items():
        assert values == [expected[step][0]] * len(values), f"loss of step {step} differs after resume"
    for name in ("model_live.safetensors", "model.safetensors"):       # live and EMA weights
        a, b = load_file(str(straight / "model" / name)), load_file(str(run / "model" / name))
        for k in a:
            assert torch.equal(a[k], b[k]), f"{name}: {k} differs after kill + resume"
