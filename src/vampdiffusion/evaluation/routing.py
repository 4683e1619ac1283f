"""Expert metrics on held-out images (docs/evaluation.md): what the style and quality routers decide.

From the routing recorded in `MoEAux` over held-out batches (statistics from models/moe.py, the ones the
training logs too):
  f_i      share of routing slots (images · k) given to expert i, per MoE block
  H_S      = −Σ f_i ln f_i over style experts (max ln 8 ≈ 2.08 at uniform routing)
  accuracy share of labeled images whose top-1 expert equals their label (chance 1/N_E)
  collapse alert when one style expert is the top-1 choice of more than eval.collapse_threshold of the images
  heatmap  rows = label, columns = top-1 expert, each row normalised to 1

The style router sees [e_tag ; e_t], so its decision depends on the timestep: `collect_routing`
draws t uniformly from all T steps (seeded), the distribution a sampler's path covers. Under
model.style_routing = token it also reads the tokens: the held-out latents noised to x_t at those t (seeded),
in the model's latent space; the image's routing is then its mean over tokens (moe.image_style_routing).
A model without style routers (model.style_ffn = dense) has no style rows: its style accuracy is None.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
import torch

from vampdiffusion.models.moe import collapse_alerts, routing_entropy, shares, slot_counts


@dataclass
class RoutingRecord:
    """Routing decisions and labels gathered over batches (concatenated along images)."""

    style_experts: list[np.ndarray] = field(default_factory=list)    # each (n_S, B, k), best first
    quality_experts: list[np.ndarray] = field(default_factory=list)  # each (n_Q, B)
    style_labels: list[np.ndarray] = field(default_factory=list)     # each (B,), −1 = unlabeled
    quality_labels: list[np.ndarray] = field(default_factory=list)   # each (B,)
    style_blocks: tuple[int, ...] = ()
    quality_blocks: tuple[int, ...] = ()

    def add(self, aux, style: torch.Tensor, quality: torch.Tensor) -> None:
        """Append one batch: `aux` is the model's MoEAux, style / quality the batch labels (B,)."""
        self.style_experts.append(aux.style_experts.detach().cpu().numpy())
        self.quality_experts.append(aux.quality_experts.detach().cpu().numpy())
        self.style_labels.append(style.detach().cpu().numpy().astype(np.int64))
        self.quality_labels.append(quality.detach().cpu().numpy().astype(np.int64))
        self.style_blocks, self.quality_blocks = tuple(aux.style_blocks), tuple(aux.quality_blocks)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(style_experts (n_S, N, k), quality_experts (n_Q, N), style (N,), quality (N,))."""
        if not self.style_labels:
            raise ValueError("no routing was recorded: the held-out split gave no batches")
        return (np.concatenate(self.style_experts, axis=1), np.concatenate(self.quality_experts, axis=1),
                np.concatenate(self.style_labels), np.concatenate(self.quality_labels))


# ----------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------

def routing_frequencies(experts: np.ndarray, num_experts: int) -> np.ndarray:
    """experts (n, N, k) or (n, N) → f (n, E): share of each block's N·k slots given to expert i."""
    return shares(slot_counts(torch.from_numpy(np.asarray(experts)), num_experts)).numpy()


def routing_accuracy(top1: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """top1 (n, N), labels (N,) with −1 = unlabeled → (n,) share of labeled images routed to their label."""
    labeled = labels >= 0
    if not labeled.any():
        return np.full(top1.shape[0], np.nan)
    return (top1[:, labeled] == labels[labeled]).mean(axis=1)


def label_expert_matrix(top1: np.ndarray, labels: np.ndarray, num_labels: int, num_experts: int) -> np.ndarray:
    """(num_labels, num_experts): for images of label r, the share routed to expert c (all blocks pooled)."""
    m = np.zeros((num_labels, num_experts))
    for block in top1:
        for r in range(num_labels):
            m[r] += np.bincount(block[labels == r], minlength=num_experts)[:num_experts]
    rows = m.sum(axis=1, keepdims=True)
    return np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)


def _mean(x: np.ndarray) -> float | None:
    return None if x.size == 0 or np.all(np.isnan(x)) else float(np.nanmean(x))


def _accuracies(acc: np.ndarray) -> list[float | None]:
    return [None if np.isnan(a) else float(a) for a in acc]


def routing_metrics(style_experts: np.ndarray, quality_experts: np.ndarray, style: np.ndarray, quality: np.ndarray,
                    num_style_experts: int, num_quality_experts: int, collapse_threshold: float,
                    style_blocks: Iterable[int] = (), quality_blocks: Iterable[int] = ()) -> dict:
    """All expert metrics as a JSON-ready dict (per block, and the mean over blocks)."""
    style_blocks = list(style_blocks) or list(range(style_experts.shape[0]))
    quality_blocks = list(quality_blocks) or list(range(quality_experts.shape[0]))
    f_s = routing_frequencies(style_experts, num_style_experts)            # (n_S, 8)
    f_q = routing_frequencies(quality_experts, num_quality_experts)        # (n_Q, 4)
    top1_s = routing_frequencies(style_experts[..., 0], num_style_experts)  # (n_S, 8) share of images, top-1
    h_s = routing_entropy(torch.from_numpy(f_s)).numpy()
    acc_s = routing_accuracy(style_experts[..., 0], style)                 # top-1 = best-first slot
    acc_q = routing_accuracy(quality_experts, quality)
    return {
        "images": int(style.shape[0]),
        "style_labeled_images": int((style >= 0).sum()),
        "style": {
            "blocks": [int(b) for b in style_blocks],
            "frequencies": f_s.round(6).tolist(),
            "top1_shares": top1_s.round(6).tolist(),
            "entropy": h_s.round(6).tolist(),
            "entropy_mean": _mean(h_s),
            "entropy_max": math.log(num_style_experts),
            "accuracy": _accuracies(acc_s),
            "accuracy_mean": _mean(acc_s),
            "chance": 1.0 / num_style_experts,
            "label_expert": label_expert_matrix(style_experts[..., 0], style, num_style_experts, num_style_experts).round(6).tolist(),
        },
        "quality": {
            "blocks": [int(b) for b in quality_blocks],
            "frequencies": f_q.round(6).tolist(),
            "entropy": routing_entropy(torch.from_numpy(f_q)).numpy().round(6).tolist(),
            "accuracy": _accuracies(acc_q),
            "accuracy_mean": _mean(acc_q),
            "chance": 1.0 / num_quality_experts,
            "label_expert": label_expert_matrix(quality_experts, quality, num_quality_experts, num_quality_experts).round(6).tolist(),
        },
        "collapse_threshold": collapse_threshold,
        "collapse_alerts": collapse_alerts(torch.from_numpy(top1_s), style_blocks, collapse_threshold),
    }


def metrics_from_record(record: RoutingRecord, num_style_experts: int, num_quality_experts: int,
                        collapse_threshold: float) -> dict:
    s_exp, q_exp, style, quality = record.arrays()
    return routing_metrics(s_exp, q_exp, style, quality, num_style_experts, num_quality_experts,
                           collapse_threshold, record.style_blocks, record.quality_blocks)


# ----------------------------------------------------------------------------
# Collection
# ----------------------------------------------------------------------------

def latent_noiser(cfg):
    """(latent, t, generator) -> x_t = α_t x0 + σ_t ε of stored latents, in the model's latent space (cfg: its Config)."""
    from vampdiffusion.diffusion.schedule import NoiseSchedule
    from vampdiffusion.latents.latent_space import channel_affine, standardise
    schedule, affine = NoiseSchedule(cfg.diffusion), channel_affine(cfg.latents, cfg.model.in_channels)

    def noise(latent: torch.Tensor, t: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        x0 = standardise(latent.float(), affine)
        return schedule.q_sample(x0, t, torch.randn(x0.shape, generator=g))
    return noise


@torch.no_grad()
def collect_routing(model: torch.nn.Module, batches: Iterable[dict], num_timesteps: int, seed: int = 0,
                    device: str | torch.device = "cpu", noise=None) -> RoutingRecord:
    """Run the routers on held-out loader batches ({"tag_ids", "quality", "style", ...}) at uniformly drawn
    timesteps and record every decision. Per-image routing depends on the conditioning only; a model that
    routes tokens gets x_t = noise(batch["latent"], t, generator) (latent_noiser) as well."""
    g = torch.Generator().manual_seed(seed)
    g_noise = torch.Generator().manual_seed(seed + 1)
    record = RoutingRecord()
    model.eval()
    for batch in batches:
        B = batch["tag_ids"].shape[0]
        t = torch.randint(0, num_timesteps, (B,), generator=g)
        x = None if noise is None else noise(batch["latent"], t, g_noise).to(device)
        aux = model.route(batch["tag_ids"].to(device), t.to(device), batch["quality"].to(device), x=x)
        record.add(aux, batch["style"], batch["quality"])
    return record


def heldout_routing(model: torch.nn.Module, ds, cfg, device: str | torch.device = "cpu") -> dict:
    """The routing metrics of `model` over every row of a held-out LatentDataset (cfg: the model's Config;
    under token routing its latents section must hold the latent space the model was trained in)."""
    from vampdiffusion.evaluation.heldout import heldout_batches
    batches = (b for _, b in heldout_batches(ds, np.arange(len(ds)), cfg.eval.batch_size))
    noise = latent_noiser(cfg) if cfg.model.style_routing == "token" else None
    record = collect_routing(model, batches, cfg.diffusion.num_timesteps, cfg.eval.seed, device, noise)
    return metrics_from_record(record, cfg.model.num_style_experts, cfg.model.num_quality_experts,
                               cfg.eval.collapse_threshold)
