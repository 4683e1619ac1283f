"""CPU expert runner: per-expert weight slices by unbind (current) vs by indexing (before), in one process.

    python benchmarks/expert_grads.py --config tiny --batch 64 --resolution 64

Indexing a stacked (E, d, 4d) weight as w[e] makes autograd zero-fill a full-size gradient for every
expert and add them up; unbind's backward stacks the E slices once. Times a whole tiny-model training
step (forward + backward + AdamW) with either runner, alternating step by step (the
shared machine's noise hits both alike), and prints the medians and their ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from vampdiffusion.config import load_config
from vampdiffusion.models import moe
from vampdiffusion.models.dit import VampDiT


def experts_segments_indexed(ffn, x, experts, gates):
    """The runner before the change: ffn.w1[e] etc. inside the loop."""
    B, N, d = x.shape
    k = experts.shape[1]
    E, H = ffn.num_experts, ffn.hidden
    b1, b2 = ffn.b1.view(E, H), ffn.b2.view(E, d)
    slot_expert = experts.reshape(-1)
    order = torch.argsort(slot_expert, stable=True)
    counts = torch.bincount(slot_expert, minlength=E).tolist()
    xs = x[order // k]
    ys = []
    for e, xe in enumerate(xs.split(counts)):
        if xe.shape[0]:
            h = F.gelu(xe @ ffn.w1[e] + b1[e], approximate="tanh")
            ys.append(h @ ffn.w2[e] + b2[e])
    y = torch.cat(ys)
    return moe._combine(y[torch.argsort(order)], gates)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="tiny")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--steps", type=int, default=80, help="timed steps per runner (alternating step by step)")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cfg = load_config(a.config)
    model = VampDiT(cfg.model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=True)
    s = a.resolution // 8
    B = a.batch
    x, t = torch.randn(B, cfg.model.in_channels, s, s), torch.randint(0, 1000, (B,))
    tags, q = torch.randint(4, cfg.model.vocab_size, (B, cfg.model.max_tags)), torch.randint(0, 4, (B,))
    current = moe.experts_segments
    runners = {"unbind (current)": current, "indexed (before)": experts_segments_indexed}

    def step() -> None:
        v, aux = model(x, t, tags, q)
        (v.square().mean() + aux.balance_style).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    times = {name: [] for name in runners}
    try:
        for r in range(a.steps + 5):
            for name, fn in runners.items():
                moe.experts_segments = fn
                t0 = time.perf_counter()
                step()
                if r >= 5:  # 5 warm-up steps each
                    times[name].append(time.perf_counter() - t0)
    finally:
        moe.experts_segments = current
    med = {name: statistics.median(v) for name, v in times.items()}
    out = {"config": a.config, "batch": B, "resolution": a.resolution, "threads": a.threads,
           "seconds_per_step": med, "indexed_over_unbind": med["indexed (before)"] / med["unbind (current)"]}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
