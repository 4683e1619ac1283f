"""Forward + backward of VampDiT next to its dense twin, in one process.

GPU (the real measurement):  python benchmarks/model_step.py --config v1 --batch 8 --checkpointing
CPU (dev machine, ratios):   python benchmarks/model_step.py --config tiny --resolution 256 --batch 8 --dtype fp32

Reports images/s, model TFLOP/s (analytic training FLOPs, planner.training_flops_per_image) and MFU
against a bf16 matmul peak measured in the same run. The dense twin is the same model with a plain
FFN in every block; the target is  MoE time/image <= 1.15 × dense time/image × (MoE FLOPs / dense FLOPs).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time

import torch

from vampdiffusion.config import load_config
from vampdiffusion.models.dit import FFN, VampDiT
from vampdiffusion.latents.vae import VAE_FACTOR
from vampdiffusion.models.planner import active_flops, dense_twin_flops
from vampdiffusion.training.metrics import measure_matmul_peak

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def dense_twin(cfg) -> VampDiT:
    """The same model with every MoE FFN replaced by a standard FFN (routers still run, unused)."""
    model = VampDiT(cfg)
    hidden = int(cfg.hidden_size * cfg.mlp_ratio)
    for block in model.blocks:
        if block.kind != "dense":
            block.ffn = FFN(cfg.hidden_size, hidden)
            block.kind = "dense"
    model.style_blocks, model.quality_blocks = (), ()
    return model


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_step(model, batch, device, dtype, lambda_bal):
    x, t, tags, q = batch

    def step():
        model.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            v, aux = model(x, t, tags, q)
            loss = v.float().square().mean() + lambda_bal * (aux.balance_style + aux.balance_quality)
        loss.backward()
    return step


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="v1")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--resolution", type=int, default=1024, help="image side in pixels (latent = /8)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--checkpointing", action="store_true", help="per-block gradient checkpointing")
    ap.add_argument("--compile", action="store_true", help="torch.compile both models (inductor, per block)")
    ap.add_argument("--with-loop", action="store_true", help="also time the per-image reference dispatch")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5, help="timed steps per model, interleaved")
    ap.add_argument("--matmul-n", type=int, default=None, help="side of the peak-matmul probe (GPU 8192, CPU 1024)")
    ap.add_argument("--json", default="benchmarks/model_step.json")
    args = ap.parse_args()

    cfg = load_config(args.config, args.overrides).model
    cfg = dataclasses.replace(cfg, gradient_checkpointing=args.checkpointing)
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    side = args.resolution // VAE_FACTOR
    hw = (side, side)
    torch.manual_seed(0)

    B = args.batch
    batch = (torch.randn(B, cfg.in_channels, side, side, device=device),
             torch.randint(0, 1000, (B,), device=device),
             torch.randint(4, cfg.vocab_size, (B, cfg.max_tags), device=device),
             torch.randint(0, cfg.num_quality_tiers, (B,), device=device))
    moe_flops = 3 * active_flops(cfg, hw)
    dense_flops = 3 * dense_twin_flops(cfg, hw)
    with torch.device(device):  # initialise on the device (v1 on a CPU takes ~20 s per model)
        models = {"moe (grouped)": (VampDiT(cfg), moe_flops), "dense twin": (dense_twin(cfg), dense_flops)}
        if args.with_loop:
            models["moe (loop reference)"] = (VampDiT(dataclasses.replace(cfg, moe_dispatch="loop")), moe_flops)
    steps, memory = {}, {}
    for name, (model, _) in models.items():
        model.to(device).train()
        with torch.no_grad():  # leave adaLN-Zero so the backward does real work everywhere
            for p_name, p in model.named_parameters():
                if "adaLN_modulation" in p_name or "final_layer" in p_name:
                    p.normal_(0, 0.02)
        if args.compile:
            model.compile_blocks()  # regional compilation, as the trainer does (train.compile_scope=blocks)
        steps[name] = make_step(model, batch, device, dtype, 0.01)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        for _ in range(args.warmup):
            steps[name]()
        sync(device)
        print(f"{name}: warm-up {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        if device.type == "cuda":
            memory[name] = torch.cuda.max_memory_allocated(device) / 2 ** 30

    times = {name: [] for name in models}
    for _ in range(args.rounds):  # interleaved so drift hits every model alike
        for name, step in steps.items():
            sync(device)
            t0 = time.perf_counter()
            step()
            sync(device)
            times[name].append(time.perf_counter() - t0)

    n = args.matmul_n or (8192 if device.type == "cuda" else 1024)
    peak = measure_matmul_peak(device, dtype, n)
    rows = {}
    for name, (model, flops) in models.items():
        t = statistics.median(times[name])
        rows[name] = {"step_s": t, "images_per_s": B / t, "tflops": B * flops / t / 1e12,
                      "mfu": B * flops / t / peak, "train_flops_per_image": flops,
                      "params": sum(p.numel() for p in model.parameters()), "peak_mem_gib": memory.get(name)}
    t_moe, t_dense = rows["moe (grouped)"]["step_s"], rows["dense twin"]["step_s"]
    ratio = (t_moe / t_dense) / (moe_flops / dense_flops)

    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"\ndevice {dev_name}, {args.dtype}, batch {B}, latent {side}x{side} "
          f"({(side // cfg.patch_size) ** 2} tokens), checkpointing {args.checkpointing}, compile {args.compile}")
    print(f"measured {args.dtype} matmul peak ({n}^3): {peak / 1e12:.4f} TFLOP/s\n")
    print("| model | step s | images/s | model TFLOP/s | MFU | TFLOP/image | params | peak GiB |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        mem = f"{r['peak_mem_gib']:.1f}" if r["peak_mem_gib"] is not None else "-"
        print(f"| {name} | {r['step_s']:.4f} | {r['images_per_s']:.2f} | {r['tflops']:.3f} | {r['mfu']:.1%} | "
              f"{r['train_flops_per_image'] / 1e12:.4f} | {r['params'] / 1e6:.1f} M | {mem} |")
    print(f"\nMoE time / dense time = {t_moe / t_dense:.3f}; FLOP ratio = {moe_flops / dense_flops:.3f}; "
          f"overhead ratio = {ratio:.3f} (target <= 1.15: {'met' if ratio <= 1.15 else 'NOT met'})")

    from vampdiffusion.atomic import atomic_write_json
    atomic_write_json(args.json, {
        "device": dev_name, "dtype": args.dtype, "batch": B, "latent": side, "config": args.config,
        "overrides": args.overrides, "checkpointing": args.checkpointing, "compile": args.compile,
        "torch": torch.__version__, "matmul_peak_tflops": peak / 1e12, "rows": rows,
        "moe_over_dense_time": t_moe / t_dense, "flop_ratio": moe_flops / dense_flops, "overhead_ratio": ratio,
        "times": times,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
