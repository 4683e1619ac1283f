"""What training logs: metrics.jsonl, TensorBoard events, optional Weights & Biases, MFU.

Rank 0 only. Scalars are gathered from the device only every `log_every` steps, so logging
adds no host synchronisation to the other steps.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path

import torch

log = logging.getLogger("vampdiffusion.train")

def device_peak_flops(device: torch.device, configured: float) -> float:
    """Peak FLOP/s of one device: `configured` when > 0, else the planner's datasheet peak for the CUDA
    device's name (RTX 4090, A100, H100, H200); 0 = unknown (CPU, other GPUs: set train.peak_tflops)."""
    if configured > 0:
        return configured
    if device.type != "cuda":
        return 0.0
    from vampdiffusion.models.planner import GPUS
    name = torch.cuda.get_device_name(device).lower().replace(" ", "")
    for key, gpu in GPUS.items():
        if key in name:
            return gpu.peak_tflops * 1e12
    return 0.0


def measure_matmul_peak(device: torch.device, dtype: torch.dtype = torch.bfloat16, n: int | None = None,
                        reps: int | None = None) -> float:
    """Measured FLOP/s of an n×n×n matmul on random data: the achievable peak an MFU in the same run
    can be compared with (GPU: n = 8192, 20 products after 3 warm-ups; CPU: n = 1024, 5 products)."""
    cuda = device.type == "cuda"
    n = n or (8192 if cuda else 1024)
    reps = reps or (20 if cuda else 5)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    if cuda:
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    if cuda:
        torch.cuda.synchronize(device)
    return 2 * n ** 3 * reps / (time.perf_counter() - t0)


def mfu(flops_per_image: float, images_per_s: float, peak_flops_total: float) -> float:
    # MFU = achieved model FLOP/s / peak FLOP/s (all devices)
    if peak_flops_total <= 0 or flops_per_image <= 0:
        return float("nan")
    return flops_per_image * images_per_s / peak_flops_total


class MetricsLogger:
    """Appends one JSON object per logging step to RUN_DIR/metrics.jsonl and mirrors it to TensorBoard."""

    def __init__(self, run_dir: str | Path, use_wandb: bool, config_dict: dict, run_name: str):
        self.path = Path(run_dir) / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", buffering=1)  # an append-only log; one line per flush
        self.tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(log_dir=str(Path(run_dir) / "tb"))
        except ImportError as e:
            log.warning("TensorBoard is not installed (%s); logging to metrics.jsonl only", e)
        self.wandb = None
        if use_wandb:
            try:
                import wandb
                self.wandb = wandb.init(project="vampdiffusion", name=run_name, dir=str(run_dir),
                                        config=config_dict, resume="allow",
                                        mode=os.environ.get("WANDB_MODE", "online"))
            except ImportError:
                log.warning("train.wandb is true but wandb is not installed (pip install wandb); skipping W&B")

    def write(self, step: int, scalars: dict[str, float]) -> None:
        row = {"step": step, **{k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                                for k, v in scalars.items()}}
        self._file.write(json.dumps(row) + "\n")
        if self.tb is not None:
            for k, v in scalars.items():
                if isinstance(v, (int, float)) and math.isfinite(float(v)):
                    self.tb.add_scalar(k, v, step)
        if self.wandb is not None:
            self.wandb.log(scalars, step=step)

    def event(self, step: int, kind: str, message: str) -> None:
        self._file.write(json.dumps({"step": step, "event": kind, "message": message}) + "\n")
        if self.tb is not None:
            self.tb.add_text(kind, message, step)
        if self.wandb is not None and kind == "collapse":
            self.wandb.alert(title="expert collapse", text=message)

    def image(self, step: int, tag: str, image_hwc_uint8) -> None:
        if self.tb is not None:
            self.tb.add_image(tag, image_hwc_uint8, step, dataformats="HWC")
        if self.wandb is not None:
            import wandb
            self.wandb.log({tag: wandb.Image(image_hwc_uint8)}, step=step)

    def close(self) -> None:
        self._file.close()
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


def grad_norm(params: list[torch.nn.Parameter]) -> float:
    """‖g‖₂ over the parameters that have a gradient (0 when none has); FSDP2 shards are summed over ranks."""
    from vampdiffusion.training.distributed import all_reduce_sum
    plain = [p.grad.detach().float() for p in params if p.grad is not None and not hasattr(p.grad, "to_local")]
    shards = [p.grad.to_local().detach().float() for p in params if p.grad is not None and hasattr(p.grad, "to_local")]
    sq = float(torch.stack([g.pow(2).sum() for g in plain]).sum()) if plain else 0.0
    if shards:  # with FSDP2 every rank holds a shard of every parameter, so every rank takes part
        sq += float(all_reduce_sum(torch.stack([g.pow(2).sum() for g in shards]).sum()))
    return sq ** 0.5


def routing_scalars(aux, collapse_threshold: float) -> tuple[dict[str, float], list[str]]:
    """Per MoE block of the last forward (global batch): routing shares f_i, their entropy, and a collapse
    warning for every style block whose top-1 choice is one expert for more than collapse_threshold of the images."""
    from vampdiffusion.models.moe import collapse_alerts, routing_entropy, shares, slot_counts
    from vampdiffusion.training.distributed import all_reduce_sum
    ns, nq = aux.style_probs.shape[-1], aux.quality_probs.shape[-1]
    parts = [slot_counts(aux.style_experts, ns), slot_counts(aux.style_experts[..., 0], ns),
             slot_counts(aux.quality_experts, nq)]                                 # (n_S, N_S) ×2, (n_Q, N_Q)
    flat = all_reduce_sum(torch.cat([p.flatten() for p in parts])).cpu()
    style, top1, quality = (t.view_as(p) for t, p in zip(flat.split([p.numel() for p in parts]), parts))
    out: dict[str, float] = {}
    for kind, blocks, f in (("style", aux.style_blocks, shares(style)), ("quality", aux.quality_blocks, shares(quality))):
        for row, block in enumerate(blocks):
            out[f"routing/{kind}_block{block}_entropy"] = float(routing_entropy(f[row]))
            for i, fi in enumerate(f[row].tolist()):
                out[f"routing/{kind}_block{block}_f{i}"] = fi
    warnings = [f"expert collapse: style block {a['block']} picks expert {a['expert']} first for {a['share']:.0%} "
                f"of the images (alert above {collapse_threshold:.0%})"
                for a in collapse_alerts(shares(top1), aux.style_blocks, collapse_threshold)]
    return out, warnings


def read_metrics_log(path: str | Path) -> tuple[list[dict], int]:
    """Rows of a run's metrics.jsonl (scalar rows and event rows) and the count of malformed lines skipped."""
    rows, bad = [], 0
    for line in Path(path).read_text().splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        if isinstance(row, dict) and "step" in row:
            rows.append(row)
        else:
            bad += 1
    return rows, bad
