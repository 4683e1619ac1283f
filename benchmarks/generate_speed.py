"""Generation speed on the CPU: batched CFG (one 2B pass) against two B passes, and torch.compile against eager.

    python benchmarks/generate_speed.py --json benchmarks/generate_speed.json

The tiny preset at 64 px (8×8 latents), random weights (speed does not depend on them), a batch of B images,
the preset's sampler and steps, one torch thread. Per step = one guided v prediction (what a sampler calls once per step);
per image = a whole sampling run / B (the VAE decode is not included: it is the same for every variant). The
variants run alternately, several repetitions each after warm-up, in one process; the reported numbers are
medians and the ratios are of medians.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import platform
import statistics
import time

import torch

from vampdiffusion.config import load_config
from vampdiffusion.diffusion.guidance import empty_tags_like, guided_predictor, guided_v
from vampdiffusion.diffusion.samplers import sample
from vampdiffusion.diffusion.schedule import NoiseSchedule
from vampdiffusion.models.dit import VampDiT


def two_pass_predictor(model, tags, quality, scale, rescale):
    """CFG as two separate B passes (conditional, then unconditional), tags encoded once per run as well."""
    e_cond = model.encode_tags(tags)[2]
    e_uncond = model.encode_tags(empty_tags_like(tags))[2]

    def predict_v(x, t):
        v_c, _ = model.denoise(x, t, e_cond, quality)
        v_u, _ = model.denoise(x, t, e_uncond, quality)
        return guided_v(v_u, v_c, scale, rescale)
    return predict_v


def live_model(cfg, seed: int) -> VampDiT:
    torch.manual_seed(seed)
    model = VampDiT(cfg.model)
    with torch.no_grad():  # adaLN-Zero layers start at 0; give them values so every path computes
        for p in model.parameters():
            if p.dim() >= 2 and p.abs().sum() == 0:
                p.normal_(0, 0.02)
    return model.eval().requires_grad_(False)


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="tiny")
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--reps", type=int, default=7, help="timed repetitions per variant (alternating)")
    ap.add_argument("--step-calls", type=int, default=20, help="predictor calls per per-step repetition")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: on a shared 2-core machine two threads spin against the other jobs)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    s, B, h = cfg.sample, args.batch, args.resolution // 8
    model = live_model(cfg, 0)
    compiled = copy.deepcopy(model)
    compiled.compile_blocks()
    schedule = NoiseSchedule(cfg.diffusion)
    tags = torch.randint(4, cfg.model.vocab_size, (B, cfg.model.max_tags))
    tags[:, 0], tags[:, -1] = 2, 3
    quality = torch.full((B,), 3)
    x = torch.randn(B, cfg.model.in_channels, h, h)
    t = torch.full((B,), 500)
    predictors = {"batched CFG (one 2B pass)": lambda: guided_predictor(model, tags, quality, s.cfg_scale, s.cfg_rescale),
                  "two passes": lambda: two_pass_predictor(model, tags, quality, s.cfg_scale, s.cfg_rescale),
                  "batched CFG, torch.compile": lambda: guided_predictor(compiled, tags, quality, s.cfg_scale, s.cfg_rescale)}
    t0 = time.perf_counter()
    with torch.no_grad():
        for make in predictors.values():          # warm-up (and the compile, excluded from every timing)
            for _ in range(3):
                make()(x, t)
    compile_s = time.perf_counter() - t0
    step, image = {k: [] for k in predictors}, {k: [] for k in predictors}
    with torch.no_grad():
        for _ in range(args.reps):
            for name, make in predictors.items():
                predict = make()
                step[name].append(timed(lambda: [predict(x, t) for _ in range(args.step_calls)]) / args.step_calls)
                image[name].append(timed(lambda: sample(s.sampler, make(), x, schedule, s.steps, s.alpha_bar_min)) / B)
    med_step = {k: statistics.median(v) for k, v in step.items()}
    med_image = {k: statistics.median(v) for k, v in image.items()}
    names = list(predictors)
    result = {
        "command": "python benchmarks/generate_speed.py --json benchmarks/generate_speed.json",
        "hardware": f"2-core CPU, shared ({platform.processor() or platform.machine()}); no GPU",
        "date": datetime.date.today().isoformat(), "torch": torch.__version__, "threads": torch.get_num_threads(),
        "config": args.config, "resolution": args.resolution, "batch": B, "sampler": s.sampler, "steps": s.steps,
        "reps": args.reps, "warmup_and_compile_s": round(compile_s, 1),
        "per_step_ms": {k: round(v * 1e3, 3) for k, v in med_step.items()},
        "per_image_ms": {k: round(v * 1e3, 2) for k, v in med_image.items()},
        "ratios": {"two passes / batched CFG, per step": round(med_step[names[1]] / med_step[names[0]], 3),
                   "two passes / batched CFG, per image": round(med_image[names[1]] / med_image[names[0]], 3),
                   "eager / compiled, per step": round(med_step[names[0]] / med_step[names[2]], 3),
                   "eager / compiled, per image": round(med_image[names[0]] / med_image[names[2]], 3)},
        "spread_per_step_ms": {k: [round(min(v) * 1e3, 3), round(max(v) * 1e3, 3)] for k, v in step.items()},
        "spread_per_image_ms": {k: [round(min(v) * 1e3, 2), round(max(v) * 1e3, 2)] for k, v in image.items()},
        "load_average_1min": round(__import__("os").getloadavg()[0], 2),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
            f.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
