"""AdamW on the CPU: the fused kernel vs foreach, whole tiny-preset training steps, one process.

    python benchmarks/adamw_cpu.py [--batch 64] [--rounds 6] [--json benchmarks/adamw_cpu.json]

Two copies of the tiny model (same init, same batch), one per optimizer implementation; each round times 5 full steps
(forward, backward, AdamW) of each, alternating; prints the median seconds per step, the ratio, and the largest
parameter difference between the two copies afterwards (the two kernels round differently).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from vampdiffusion.config import load_config
from vampdiffusion.models.dit import VampDiT


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="tiny")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    cfg = load_config(a.config, [])
    side = cfg.latents.resolution // 8
    g = torch.Generator().manual_seed(0)
    x = torch.randn(a.batch, 4, side, side, generator=g)
    t = torch.randint(0, 1000, (a.batch,), generator=g)
    tags = torch.randint(1, 100, (a.batch, cfg.model.max_tags), generator=g)
    q = torch.randint(0, 4, (a.batch,), generator=g)
    models, opts = {}, {}
    for mode in ("foreach", "fused"):
        torch.manual_seed(0)
        models[mode] = VampDiT(cfg.model)
        opts[mode] = torch.optim.AdamW(models[mode].parameters(), lr=1e-3, **{mode: True})

    def step(mode: str) -> None:
        opts[mode].zero_grad(set_to_none=True)
        v, aux = models[mode](x, t, tags, q)
        loss = v.square().mean() + 0.01 * (aux.balance_style + aux.balance_quality)
        loss.backward()
        opts[mode].step()

    for mode in models:
        for _ in range(3):
            step(mode)
    times = {m: [] for m in models}
    for _ in range(a.rounds):
        for mode in models:
            t0 = time.perf_counter()
            for _ in range(5):
                step(mode)
            times[mode].append((time.perf_counter() - t0) / 5)
    med = {m: statistics.median(v) for m, v in times.items()}
    diff = max((p - r).abs().max().item() for p, r in zip(models["foreach"].parameters(), models["fused"].parameters()))
    out = {"config": a.config, "batch": a.batch, "threads": torch.get_num_threads(), "torch": torch.__version__,
           "seconds_per_step": med, "foreach_over_fused": med["foreach"] / med["fused"],
           "max_param_difference": diff, "steps_each": 3 + 5 * a.rounds}
    print(json.dumps(out, indent=1))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
