"""`vamp plan`: parameters, FLOPs, per-GPU memory and training hours of a config.

Parameters are counted on the instantiated model (built on the meta device: no memory, exact counts).
FLOPs are analytic (k-diffusion flops.py style): a matmul (m×k)·(k×n) costs 2·m·n·k; attention adds
QKᵀ and AV (2 · 2·N²·d per image and block); elementwise work, norms and softmax are not counted.
Training = 3 × forward (backward = input-grad + weight-grad); per-block checkpointing re-runs the
blocks' forward once more. The trainer's MFU uses `training_flops_per_image` (no recompute).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from vampdiffusion.config import Config, ModelConfig
from vampdiffusion.latents.vae import VAE_FACTOR

GIB = 1024 ** 3


@dataclass(frozen=True)
class GPU:
    name: str
    peak_tflops: float      # dense bf16 tensor-core peak with fp32 accumulation, TFLOP/s
    memory_gib: float       # usable device memory
    source: str


# Datasheet peaks (dense, no sparsity). Sources in docs/model.md.
GPUS = {
    "rtx4090": GPU("RTX 4090", 165.2, 24.0, "NVIDIA Ada Lovelace whitepaper: BF16 tensor, FP32 accumulate"),
    "a100": GPU("A100 SXM 80GB", 312.0, 80.0, "NVIDIA A100 datasheet: BF16 tensor"),
    "h100": GPU("H100 SXM 80GB", 989.4, 80.0, "NVIDIA H100 datasheet: BF16 tensor (dense = half the sparse 1979)"),
    "h200": GPU("H200 SXM 141GB", 989.4, 141.0, "NVIDIA H200 datasheet: same compute as H100 SXM"),
}
CUDA_OVERHEAD_GIB = 1.5     # CUDA context + allocator fragmentation, an assumption (measure on the GPU)
DOC_HOURS = {1: (1333, 1600), 2: (333, 400), 3: (250, 300)}  # the research document's phase hours
DOC_TOTAL_HOURS = (1916, 2300)


# ----------------------------------------------------------------------------
# Parameters
# ----------------------------------------------------------------------------

def build_meta_model(cfg: ModelConfig):
    from vampdiffusion.models.dit import VampDiT
    with torch.device("meta"):
        return VampDiT(cfg)


def parameter_groups(model) -> dict[str, int]:
    """Parameters per component; the values sum to sum(p.numel())."""
    from vampdiffusion.models.dit import block_kind
    groups = {"tag encoder": 0, "embeddings": 0, "backbone": 0, "style experts": 0, "quality experts": 0}
    # style positions, so the dense twin's FFN there (`ffn.experts`) counts as what stands for the style experts
    style = {f"blocks.{i}." for i in range(model.cfg.depth) if block_kind(i) == "style"}
    for name, p in model.named_parameters():
        if name.startswith("tag_encoder."):
            key = "tag encoder"
        elif name.startswith("blocks.") and (".ffn.experts." in name or ".ffn.router." in name):
            key = "style experts" if any(name.startswith(s) for s in style) else "quality experts"
        elif name.startswith(("blocks.", "final_layer.")):
            key = "backbone"
        else:
            key = "embeddings"
        groups[key] += p.numel()
    return groups


def parameter_counts(cfg: ModelConfig) -> dict[str, int]:
    """Component counts plus total, active per image, and the size-check view of docs/model.md."""
    from vampdiffusion.models.dit import block_kind
    model = build_meta_model(cfg)
    groups = parameter_groups(model)
    d, hidden = cfg.hidden_size, int(cfg.hidden_size * cfg.mlp_ratio)
    ffn = 2 * d * hidden + hidden + d                          # one FFN: d -> 4d -> d with biases
    n_s = sum(block_kind(i) == "style" for i in range(cfg.depth))  # style positions (MoE or the dense twin's FFN)
    n_q = len(model.quality_blocks)
    total = sum(p.numel() for p in model.parameters())
    inactive = (len(model.style_blocks) * (cfg.num_style_experts - cfg.style_top_k) * ffn
                + n_q * (cfg.num_quality_experts - 1) * ffn)   # experts an image does not use (the dense twin: none)
    return {
        **groups,
        "total": total,
        "active per image": total - inactive,
        # the size check (docs/model.md) counts the backbone as a plain DiT (a dense FFN in every block) and the
        # experts as what they add on top of it
        "spec: DiT backbone (dense FFN everywhere)": groups["backbone"] + groups["embeddings"] + (n_s + n_q) * ffn,
        "spec: style experts (+)": groups["style experts"] - n_s * ffn,
        "spec: quality experts (+)": groups["quality experts"] - n_q * ffn,
    }


# ----------------------------------------------------------------------------
# FLOPs
# ----------------------------------------------------------------------------

def forward_flops(cfg: ModelConfig, latent_hw: tuple[int, int]) -> dict[str, float]:
    """Forward FLOPs per image by part, counting only the experts an image uses."""
    h, w = latent_hw
    p, C, d = cfg.patch_size, cfg.in_channels, cfg.hidden_size
    N = (h // p) * (w // p)                                         # image tokens
    hidden = int(d * cfg.mlp_ratio)
    L, de = cfg.max_tags, cfg.enc_dim                               # tags are padded to max_tags
    he = int(de * cfg.enc_mlp_ratio)
    kinds = [("dense", "style", "dense", "quality")[i % 4] for i in range(cfg.depth)]
    ffn = 2 * N * d * hidden * 2                                    # fc1 + fc2 of one expert / FFN
    # per style block: W_S [e_tag ; e_t] once per image, plus W_x LN(x_n) per token under token routing;
    # the dense twin has no router (its FFN of k·4d costs the k experts' FLOPs)
    style_router = {"image": 2 * 2 * d * cfg.num_style_experts,
                    "token": 2 * 2 * d * cfg.num_style_experts + 2 * N * d * cfg.num_style_experts}[cfg.style_routing]
    style_router = style_router if cfg.style_ffn == "moe" else 0
    return {
        "tag encoder": cfg.enc_depth * (2 * L * de * 4 * de + 2 * 2 * L * L * de + 2 * L * de * he * 2) + 2 * de * d,
        "embeddings": 2 * N * p * p * C * d + 2 * (cfg.timestep_freq_dim * d + d * d) + 2 * (2 * d * d + d * d),
        "modulation + routers": cfg.depth * 2 * d * 6 * d + kinds.count("style") * style_router
        + kinds.count("quality") * 2 * d * cfg.num_quality_experts,
        "attention linear": cfg.depth * 2 * N * d * 4 * d,         # qkv + proj
        "attention QK^T, AV": cfg.depth * 2 * 2 * N * N * d,
        "FFN dense": kinds.count("dense") * ffn,
        "FFN style experts": kinds.count("style") * cfg.style_top_k * ffn,
        "FFN quality experts": kinds.count("quality") * ffn,
        "final layer": 2 * d * 2 * d + 2 * N * d * p * p * C,
    }


def active_flops(cfg: ModelConfig, latent_hw: tuple[int, int]) -> float:
    """Forward FLOPs of one image through the experts it is routed to."""
    return float(sum(forward_flops(cfg, latent_hw).values()))


def dense_twin_flops(cfg: ModelConfig, latent_hw: tuple[int, int]) -> float:
    """Forward FLOPs of the same model with a plain FFN in every block (the benchmark's twin)."""
    f = forward_flops(cfg, latent_hw)
    h, w = latent_hw
    N = (h // cfg.patch_size) * (w // cfg.patch_size)
    ffn = 2 * N * cfg.hidden_size * int(cfg.hidden_size * cfg.mlp_ratio) * 2
    return float(sum(f.values()) - f["FFN style experts"] - f["FFN quality experts"]
                 - f["modulation + routers"] + cfg.depth * 2 * cfg.hidden_size * 6 * cfg.hidden_size
                 - f["FFN dense"] + cfg.depth * ffn)


def training_flops_per_image(cfg: ModelConfig, latent_hw: tuple[int, int]) -> float:
    """Model FLOPs of one training image: forward + backward = 3 × forward (the MFU numerator)."""
    return 3.0 * active_flops(cfg, latent_hw)


def recompute_flops_per_image(cfg: ModelConfig, latent_hw: tuple[int, int]) -> float:
    """Extra FLOPs of per-block gradient checkpointing: the blocks' forward once more."""
    f = forward_flops(cfg, latent_hw)
    return float(sum(v for k, v in f.items() if k not in ("tag encoder", "embeddings", "final layer")))


def frozen_backbone_training_flops_per_image(cfg: ModelConfig, latent_hw: tuple[int, int]) -> float:
    """Phase 2 (only experts and routers train): forward, input-gradients through the blocks and the
    final layer (attention backward = 2 × its forward), weight-gradients of the expert FFNs only."""
    f = forward_flops(cfg, latent_hw)
    linear = f["modulation + routers"] + f["attention linear"] + f["FFN dense"] + f["FFN style experts"] \
        + f["FFN quality experts"] + f["final layer"]
    return float(sum(f.values()) + linear + 2 * f["attention QK^T, AV"]
                 + f["FFN style experts"] + f["FFN quality experts"])


# ----------------------------------------------------------------------------
# Memory
# ----------------------------------------------------------------------------

def activation_bytes_per_block(cfg: ModelConfig, latent_hw: tuple[int, int], kind: str) -> float:
    """Bytes one image keeps for backward in one block under bf16 autocast (fp32 residual stream).

    Saved: LN inputs and normalised values (fp32, 2 × 2 × 4·N·d), qkv input and q, k, v (bf16, 8·N·d),
    attention output + proj input + gated branch (bf16, 6·N·d), FFN input (2·N·d), per expert slot:
    the gathered input (2·N·d, MoE only), pre- and post-GELU hidden (2 × 2·N·4d) and the output for
    the gate (2·N·d). Flash attention's logsumexp is counted separately (attention_workspace_bytes).
    """
    h, w = latent_hw
    N = (h // cfg.patch_size) * (w // cfg.patch_size)
    d, hidden = cfg.hidden_size, int(cfg.hidden_size * cfg.mlp_ratio)
    common = 16 * N * d + 8 * N * d + 6 * N * d + 2 * N * d
    per_slot = 2 * N * d + 4 * N * hidden + 2 * N * d
    slots = {"dense": 0, "style": cfg.style_top_k, "quality": 1}[kind]
    return float(common + (per_slot if kind == "dense" else slots * (per_slot + 2 * N * d)))


def attention_workspace_bytes(cfg: ModelConfig, latent_hw: tuple[int, int], micro_batch: int, checkpointing: bool) -> float:
    """Flash / cuDNN attention keeps a fp32 logsumexp (B, H, N) per block instead of N×N scores."""
    h, w = latent_hw
    N = (h // cfg.patch_size) * (w // cfg.patch_size)
    return float(micro_batch * 4 * cfg.num_heads * N * (1 if checkpointing else cfg.depth))


# component -> the research document's memory figure (GB), in the document's order
DOC_MEMORY_GB = {"model weights": 1.75, "optimizer states": 3.5, "gradients": 1.75, "activations": 8.0,
                 "attention workspace": 2.0, "latent batch": 0.5, "EMA copy": 1.75, "CUDA context + overhead": 4.0}


def memory_budget(cfg: ModelConfig, latent_hw: tuple[int, int], micro_batch: int, checkpointing: bool,
                  n_params: int, shards: int = 1) -> dict[str, float]:
    """Per-GPU bytes, keys as in DOC_MEMORY_GB. DDP: shards=1 (a full replica per GPU); FSDP2 full
    sharding: weights, gradients and AdamW states divided over `shards` GPUs, EMA kept on the CPU."""
    kinds = [("dense", "style", "dense", "quality")[i % 4] for i in range(cfg.depth)]
    per_block = [activation_bytes_per_block(cfg, latent_hw, k) for k in kinds]
    h, w = latent_hw
    N = (h // cfg.patch_size) * (w // cfg.patch_size)
    if checkpointing:  # every block input (fp32) is kept; one block's activations live during its recompute
        activations = micro_batch * (cfg.depth * 4 * N * cfg.hidden_size + max(per_block))
    else:
        activations = micro_batch * sum(per_block)
    return {
        "model weights": 4.0 * n_params / shards,              # fp32 master weights, all parameters
        "optimizer states": 8.0 * n_params / shards,           # AdamW m, v in fp32
        "gradients": 4.0 * n_params / shards,                  # fp32
        "activations": float(activations),
        "attention workspace": attention_workspace_bytes(cfg, latent_hw, micro_batch, checkpointing),
        "latent batch": float(micro_batch * cfg.in_channels * h * w * 4),
        "EMA copy": 4.0 * n_params if shards == 1 else 0.0,    # fp32 on the GPU (DDP) / on the CPU (FSDP)
        "CUDA context + overhead": CUDA_OVERHEAD_GIB * GIB,
    }


def largest_micro_batch(cfg: ModelConfig, latent_hw: tuple[int, int], gpu: GPU, checkpointing: bool,
                        n_params: int, shards: int = 1) -> int:
    fixed = sum(memory_budget(cfg, latent_hw, 0, checkpointing, n_params, shards).values())
    per_image = sum(memory_budget(cfg, latent_hw, 1, checkpointing, n_params, shards).values()) - fixed
    return max(0, int((gpu.memory_gib * GIB - fixed) // per_image))


# ----------------------------------------------------------------------------
# Hours
# ----------------------------------------------------------------------------

def training_hours(steps: int, effective_batch: int, flops_per_image: float, gpus: int, gpu: GPU, mfu: float) -> float:
    # hours = steps × batch × FLOPs/image / (gpus × peak × MFU)
    return steps * effective_batch * flops_per_image / (gpus * gpu.peak_tflops * 1e12 * mfu) / 3600.0


def plan(cfg: Config, gpu_key: str = "rtx4090", gpus: int = 2, micro_batch: int | None = None,
         checkpointing: bool | None = None, resolution: int | None = None, mfu: float = 0.4,
         effective_batch: int = 256) -> dict:
    """Parameters, FLOPs, memory per GPU and hours per phase; None settings take the config's values."""
    m = cfg.model
    micro_batch = cfg.train.micro_batch if micro_batch is None else micro_batch
    checkpointing = m.gradient_checkpointing if checkpointing is None else checkpointing
    resolution = cfg.latents.resolution if resolution is None else resolution
    if gpu_key not in GPUS:
        raise ValueError(f"unknown GPU {gpu_key!r}; known: {', '.join(sorted(GPUS))}")
    for name, value, ok in (("gpus", gpus, gpus >= 1), ("micro batch", micro_batch, micro_batch >= 1),
                            ("mfu", mfu, 0 < mfu <= 1), ("effective batch", effective_batch, effective_batch >= 1),
                            ("resolution", resolution, resolution >= VAE_FACTOR * m.patch_size)):
        if not ok:
            raise ValueError(f"{name} {value} is out of range (gpus, batches >= 1; 0 < mfu <= 1; "
                             f"resolution >= {VAE_FACTOR * m.patch_size})")
    gpu = GPUS[gpu_key]
    hw = (resolution // VAE_FACTOR, resolution // VAE_FACTOR)
    fwd = forward_flops(m, hw)
    train = training_flops_per_image(m, hw)
    recompute = recompute_flops_per_image(m, hw)
    phase2 = frozen_backbone_training_flops_per_image(m, hw)
    executed = {1: train, 2: phase2, 3: train}
    if checkpointing:
        executed = {k: v + recompute for k, v in executed.items()}
    phases = {i: getattr(cfg.train, f"phase{i}") for i in (1, 2, 3)}
    hours = {i: training_hours(ph.steps, effective_batch, executed[i], gpus, gpu, mfu) for i, ph in phases.items()}
    total_flops = sum(ph.steps * effective_batch * executed[i] for i, ph in phases.items())
    needed_mfu = {bound: total_flops / (gpus * gpu.peak_tflops * 1e12 * bound * 3600.0) for bound in DOC_TOTAL_HOURS}
    params = parameter_counts(m)
    memory = memory_budget(m, hw, micro_batch, checkpointing, params["total"])
    sharded = memory_budget(m, hw, micro_batch, checkpointing, params["total"], shards=gpus)
    return {
        "gpu": dataclasses.asdict(gpu), "gpus": gpus, "micro_batch": micro_batch, "checkpointing": checkpointing,
        "resolution": resolution, "latent_hw": hw, "tokens": (hw[0] // m.patch_size) * (hw[1] // m.patch_size),
        "mfu": mfu, "effective_batch": effective_batch,
        "parameters": params,
        "forward_flops": fwd, "forward_flops_total": sum(fwd.values()),
        "dense_twin_forward_flops": dense_twin_flops(m, hw),
        "training_flops_per_image": train, "training_flops_per_image_recompute": train + recompute,
        "phase2_training_flops_per_image": phase2,
        "memory_bytes": memory, "memory_total_bytes": sum(memory.values()),
        "largest_micro_batch": largest_micro_batch(m, hw, gpu, checkpointing, params["total"]),
        "fsdp_memory_bytes": sharded, "fsdp_memory_total_bytes": sum(sharded.values()),
        "fsdp_largest_micro_batch": largest_micro_batch(m, hw, gpu, checkpointing, params["total"], shards=gpus),
        "hours": {f"phase{i}": {"steps": phases[i].steps, "hours": hours[i], "document_hours": DOC_HOURS[i]} for i in phases},
        "total_hours": sum(hours.values()), "document_total_hours": DOC_TOTAL_HOURS,
        "mfu_needed_for_document_hours": {str(k): v for k, v in needed_mfu.items()},
    }


# ----------------------------------------------------------------------------
# Printing
# ----------------------------------------------------------------------------

def _table(rows: list[tuple], header: tuple) -> str:
    rows = [tuple(str(c) for c in r) for r in [header] + rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(rows[0]), sep] + [line(r) for r in rows[1:]])


def format_plan(r: dict) -> str:
    gpu = r["gpu"]
    out = [f"VampDiT plan: {r['resolution']}px -> latent {r['latent_hw'][0]}x{r['latent_hw'][1]}, "
           f"{r['tokens']} tokens; {r['gpus']} x {gpu['name']} ({gpu['peak_tflops']} TFLOP/s bf16 dense, "
           f"{gpu['memory_gib']:.0f} GiB)", "", "Parameters"]
    out.append(_table([(k, f"{v:,}", f"{v / 1e9:.3f} B") for k, v in r["parameters"].items()], ("component", "parameters", "")))
    out += ["", "Forward FLOPs per image (active experts only)"]
    fw = r["forward_flops"]
    out.append(_table([(k, f"{v / 1e9:,.1f}") for k, v in fw.items()] + [("total", f"{r['forward_flops_total'] / 1e9:,.1f}")],
                      ("part", "GFLOP")))
    out += ["", _table([
        ("training (3 x forward)", f"{r['training_flops_per_image'] / 1e12:.2f}"),
        ("training with per-block recompute", f"{r['training_flops_per_image_recompute'] / 1e12:.2f}"),
        ("phase 2 (backbone frozen)", f"{r['phase2_training_flops_per_image'] / 1e12:.2f}"),
        ("dense twin forward", f"{r['dense_twin_forward_flops'] / 1e12:.2f}"),
    ], ("training FLOPs per image", "TFLOP"))]
    ckpt = "per-block checkpointing" if r["checkpointing"] else "no checkpointing"
    out += ["", f"Per-GPU memory: micro-batch {r['micro_batch']}, bf16 autocast, fp32 master weights, {ckpt}"]
    mem, fsdp = r["memory_bytes"], r["fsdp_memory_bytes"]
    rows = [(k, f"{mem[k] / GIB:,.2f} GiB", f"{fsdp[k] / GIB:,.2f} GiB", f"~{DOC_MEMORY_GB[k]} GB") for k in DOC_MEMORY_GB]
    rows.append(("total", f"{r['memory_total_bytes'] / GIB:,.2f} GiB", f"{r['fsdp_memory_total_bytes'] / GIB:,.2f} GiB",
                 f"~{sum(DOC_MEMORY_GB.values()):.2f} GB"))
    out.append(_table(rows, ("component", "DDP replica", f"FSDP2 over {r['gpus']}, EMA on CPU", "document")))
    for name, total, largest in (("DDP", r["memory_total_bytes"], r["largest_micro_batch"]),
                                 ("FSDP2", r["fsdp_memory_total_bytes"], r["fsdp_largest_micro_batch"])):
        fits = total <= gpu["memory_gib"] * GIB
        out.append(f"-> {name}: {'fits' if fits else 'does NOT fit'} in {gpu['memory_gib']:.0f} GiB; "
                   f"largest micro-batch that fits: {largest}")
    out += ["", f"Training time at effective batch {r['effective_batch']}, MFU {r['mfu']:.0%}"
                f"{', with recompute' if r['checkpointing'] else ''}"]
    rows = [(name, f"{h['steps']:,}", f"{h['hours']:,.0f}", f"{h['document_hours'][0]:,}-{h['document_hours'][1]:,}")
            for name, h in r["hours"].items()]
    rows.append(("total", "", f"{r['total_hours']:,.0f}", f"{r['document_total_hours'][0]:,}-{r['document_total_hours'][1]:,}"))
    out.append(_table(rows, ("phase", "steps", "hours", "document")))
    lo, hi = r["document_total_hours"]
    need_hi, need_lo = r["mfu_needed_for_document_hours"][str(hi)], r["mfu_needed_for_document_hours"][str(lo)]
    reachable = need_hi <= 1.0
    verdict = (f"reachable at an MFU of at least {need_hi:.0%}" if reachable
               else "NOT reachable (more than 100% of peak)")
    out.append(f"-> the document's {lo:,}-{hi:,} h on {r['gpus']} x {gpu['name']} needs an MFU of "
               f"{need_hi:.0%}-{need_lo:.0%}: {verdict}")
    return "\n".join(out)
