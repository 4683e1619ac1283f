"""CUDA correctness checks, run before any GPU timing (the CPU test suite cannot reach these paths).

    python benchmarks/gpu_check.py [--json benchmarks/gpu_check.json]

1. Expert dispatch on CUDA: torch._grouped_mm (bf16) and the bmm fallback against the per-image
   reference loop in float64, forward and gradients, on fresh random routings with unused experts.
2. The tiny model on CUDA: exact zero output at initialisation; bf16-autocast forward + backward.
3. torch.compile (inductor, fullgraph) of the tiny model: forward and gradients against eager, and
   the compile time.
Relative errors ‖out − ref‖ / ‖ref‖; bf16 operands pass under 2e-2 (METHOD: 1e-3 to 1e-2 expected).
Exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time

import torch

from vampdiffusion.atomic import atomic_write_json
from vampdiffusion.config import load_config
from vampdiffusion.models.dit import VampDiT
from vampdiffusion.models.moe import ExpertFFNs, experts_bmm, experts_grouped_mm, experts_loop, grouped_mm_supported

BF16_TOL = 2e-2


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def dispatch_check(device: torch.device, seed: int) -> dict:
    """Runner vs float64 reference loop, forward and all gradients; experts 5..7 never chosen."""
    g = torch.Generator().manual_seed(seed)
    E, d, H, B, N, k = 8, 256, 1024, 6, 64, 2
    ffn = ExpertFFNs(E, d, H)
    ffn.reset_parameters()
    with torch.no_grad():
        ffn.b1.normal_(0, 0.1, generator=g)
        ffn.b2.normal_(0, 0.1, generator=g)
    x = torch.randn(B, N, d, generator=g)
    experts = torch.stack([torch.randperm(5, generator=g)[:k] for _ in range(B)])
    gates = torch.softmax(torch.randn(B, k, generator=g), -1)
    up = torch.randn(B, N, d, generator=g)

    def run(runner, module, dtype, dev, autocast):
        m = copy.deepcopy(module).to(dev, torch.float64 if dtype == torch.float64 else torch.float32)
        xi = x.to(dev, m.w1.dtype).clone().requires_grad_(True)   # a copy: .to() can alias x
        gi = gates.to(dev, m.w1.dtype).clone().requires_grad_(True)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=autocast):
            y = runner(m, xi, experts.to(dev), gi)
        (y.float() * up.to(dev)).sum().backward()
        grads = {"x": xi.grad, "gates": gi.grad, **{n: p.grad for n, p in m.named_parameters()}}
        return y, grads

    ref_y, ref_g = run(experts_loop, ffn, torch.float64, torch.device("cpu"), False)
    out = {}
    runners = {"bmm_fp32": (experts_bmm, False), "bmm_bf16": (experts_bmm, True)}
    if grouped_mm_supported(device, torch.bfloat16):
        runners["grouped_mm_bf16"] = (experts_grouped_mm, True)
    for name, (runner, autocast) in runners.items():
        y, grads = run(runner, ffn, torch.float32, device, autocast)
        errs = {"forward": rel(y.cpu(), ref_y), **{f"grad_{n}": rel(v.cpu(), ref_g[n]) for n, v in grads.items()}}
        unused = float(grads["w1"][5:].abs().max().cpu())
        out[name] = {"max_rel_err": max(errs.values()), "errors": errs, "unused_expert_grad_max": unused}
    return out


def model_batch(cfg, device, B=4, side=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, cfg.in_channels, side, side, generator=g).to(device),
            torch.randint(0, 1000, (B,), generator=g).to(device),
            torch.randint(4, cfg.vocab_size, (B, cfg.max_tags), generator=g).to(device),
            torch.randint(0, cfg.num_quality_tiers, (B,), generator=g).to(device))


def fwd_bwd(model, batch):
    model.zero_grad(set_to_none=True)
    with torch.autocast(batch[0].device.type, dtype=torch.bfloat16):
        v, aux = model(*batch)
        loss = v.float().square().mean() + 0.01 * (aux.balance_style + aux.balance_quality)
    loss.backward()
    params = getattr(model, "_orig_mod", model).named_parameters()  # a compiled module's names carry a prefix
    return v.detach().float(), {n: p.grad.detach().float().clone() for n, p in params if p.grad is not None}


def model_checks(device: torch.device) -> dict:
    cfg = load_config("tiny").model
    torch.manual_seed(0)
    model = VampDiT(cfg).to(device)
    batch = model_batch(cfg, device)
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16):
        zero = float(model(*batch)[0].abs().max())
    with torch.no_grad():  # leave adaLN-Zero so every path carries signal
        for n, p in model.named_parameters():
            if "adaLN_modulation" in n or "final_layer" in n:
                p.normal_(0, 0.02)
    v_eager, g_eager = fwd_bwd(model, batch)
    t0 = time.perf_counter()
    compiled = torch.compile(model, fullgraph=True)
    v_comp, g_comp = fwd_bwd(compiled, batch)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    compile_s = time.perf_counter() - t0
    grad_err = max(rel(g_comp[n], g_eager[n]) for n in g_eager if g_eager[n].norm() > 0)
    return {"zero_output_at_init_max_abs": zero, "eager_finite": bool(torch.isfinite(v_eager).all()),
            "compile_forward_rel_err": rel(v_comp, v_eager), "compile_grad_max_rel_err": grad_err,
            "compile_first_step_s": compile_s}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", default="benchmarks/gpu_check.json")
    ap.add_argument("--device", default="cuda", help="cpu: a smoke run of this script itself")
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_check needs a CUDA device", file=sys.stderr)
        return 2
    cuda = device.type == "cuda"
    result = {"device": torch.cuda.get_device_name(device) if cuda else "cpu", "torch": torch.__version__,
              "capability": list(torch.cuda.get_device_capability(device)) if cuda else None,
              "dispatch": {f"seed{s}": dispatch_check(device, s) for s in (0, 1)}, "model": model_checks(device)}
    failures = []
    for seed, runners in result["dispatch"].items():
        for name, r in runners.items():
            tol = BF16_TOL if "bf16" in name else 1e-5
            print(f"dispatch {seed} {name}: max rel err {r['max_rel_err']:.2e} (tol {tol:g}), "
                  f"unused experts' grad max {r['unused_expert_grad_max']:g}")
            if not r["max_rel_err"] < tol or r["unused_expert_grad_max"] != 0.0:
                failures.append(f"{seed} {name}")
    m = result["model"]
    print(f"model: zero output at init {m['zero_output_at_init_max_abs']:g}; compile forward rel err "
          f"{m['compile_forward_rel_err']:.2e}, grads max rel err {m['compile_grad_max_rel_err']:.2e}; "
          f"first compiled step {m['compile_first_step_s']:.1f} s")
    if m["zero_output_at_init_max_abs"] != 0.0 or not m["eager_finite"]:
        failures.append("model init / eager")
    if not (m["compile_forward_rel_err"] < BF16_TOL and m["compile_grad_max_rel_err"] < 5 * BF16_TOL):
        failures.append("compile vs eager")
    result["failures"] = failures
    atomic_write_json(args.json, result)
    print("FAILED: " + ", ".join(failures) if failures else "all CUDA checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
