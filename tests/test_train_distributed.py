"""Two gloo processes on CPU train the same model as one process with the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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


def losses(run: Path) -> list[float]:
    return [r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in r]


def test_two_gloo_processes_equal_one_process_with_accumulation(tmp_path):
    torch.set_num_threads(1)
    data = write_latent_dataset(tmp_path / "latents")
    one = tmp_path / "one"
    assert T.train(tiny_config(*COMMON, "train.grad_accum=2"), 1, data, one) == 0

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
