"""Style MoE (top-2) and quality MoE (top-1, straight-through) (docs/model.md), their losses and MoEAux.

Routing is per image: one decision for all tokens of an image, so every expert sees whole images.
An image-slot is one (image, chosen expert) pair; a batch has B·k slots.
Two ablation switches build other style blocks (docs/model.md#ablation-switches): `TokenStyleMoE`
(model.style_routing = token: top-k per token, each token dispatched as a one-token slot group through the
same runners) and `DenseStyleFFN` (model.style_ffn = dense: one FFN of k experts' width, no router).

Four interchangeable expert runners compute out_b = Σ_j g_bj · E_{e_bj}(x_b):
  experts_grouped_mm  slots sorted by expert, one torch._grouped_mm per FFN matmul over contiguous
                      slices of the stacked weights (bf16, CUDA SM >= 80 or CPU); no host sync
  experts_segments    CPU fp32: slots sorted by expert, one matmul per expert over its contiguous slice;
                      reads the slice sizes on the host, which costs nothing on the CPU
  experts_bmm         the CUDA fallback: torch.bmm with the expert weights gathered per slot (no host
                      sync, but one weight copy per slot)
  experts_loop        the readable reference: a Python loop over images (host syncs; tests only)
Stacked weights are single parameters, so every expert gets a gradient (zero when unused) each step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


# ----------------------------------------------------------------------------
# Expert FFNs: stacked weights and the four runners
# ----------------------------------------------------------------------------

class ExpertFFNs(nn.Module):
    """E independent FFNs d -> hidden -> d (GELU tanh), weights stacked along dim 0."""

    def __init__(self, num_experts: int, dim: int, hidden: int):
        super().__init__()
        self.num_experts, self.dim, self.hidden = num_experts, dim, hidden
        self.w1 = nn.Parameter(torch.empty(num_experts, dim, hidden))  # (E, d, 4d)
        self.w2 = nn.Parameter(torch.empty(num_experts, hidden, dim))  # (E, 4d, d)
        # biases stored flat (E·hidden,) so the optimizer's ">= 2-D gets weight decay" rule skips them
        self.b1 = nn.Parameter(torch.zeros(num_experts * hidden))
        self.b2 = nn.Parameter(torch.zeros(num_experts * dim))

    def reset_parameters(self) -> None:
        for w in (self.w1, self.w2):  # xavier-uniform per expert, like every nn.Linear of DiT
            bound = (6.0 / (w.shape[1] + w.shape[2])) ** 0.5
            nn.init.uniform_(w, -bound, bound)
        nn.init.zeros_(self.b1)
        nn.init.zeros_(self.b2)


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype matmuls run in: the autocast dtype when autocast is on, else x's."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


@torch.compiler.assume_constant_result
def _cuda_capability_at_least_80(index: int) -> bool:
    return torch.cuda.get_device_capability(index) >= (8, 0)


def grouped_mm_supported(device: torch.device, dtype: torch.dtype) -> bool:
    """torch._grouped_mm exists (torch >= 2.8), runs bf16, and the device has a kernel for it (SM >= 80 or CPU)."""
    if not hasattr(torch, "_grouped_mm") or dtype != torch.bfloat16:
        return False
    if device.type == "cuda":
        return _cuda_capability_at_least_80(device.index if device.index is not None else torch.cuda.current_device())
    return device.type == "cpu"


def _combine(y: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
    """y (B·k, N, d) in slot order b·k + j, gates (B, k) -> Σ_j g_bj y_bj (B, N, d)."""
    B, k = gates.shape
    y = y.view(B, k, *y.shape[1:])
    return (y * gates.to(y.dtype)[:, :, None, None]).sum(dim=1)


def experts_grouped_mm(ffn: ExpertFFNs, x: torch.Tensor, experts: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
    """x (B, N, d), experts (B, k) long, gates (B, k) -> (B, N, d) via torch._grouped_mm."""
    B, N, d = x.shape
    k = experts.shape[1]
    E, H = ffn.num_experts, ffn.hidden
    dt = _compute_dtype(x)
    slot_expert = experts.reshape(-1)                               # (S,) S = B·k, slot s = b·k + j
    order = torch.argsort(slot_expert, stable=True)                 # slots sorted by expert, on device
    e_sorted = slot_expert[order]                                   # (S,)
    counts = F.one_hot(slot_expert, E).sum(dim=0)                   # (E,) slots per expert (0 allowed)
    offs = (counts.cumsum(dim=0) * N).to(torch.int32)               # row ends of each expert's slice
    xs = x.to(dt)[order // k].reshape(-1, d)                        # (S·N, d) images gathered per expert
    h = torch._grouped_mm(xs, ffn.w1.to(dt), offs=offs).view(-1, N, H)           # (S, N, 4d)
    h = F.gelu(h + ffn.b1.view(E, H)[e_sorted].to(dt)[:, None], approximate="tanh")
    y = torch._grouped_mm(h.reshape(-1, H), ffn.w2.to(dt), offs=offs).view(-1, N, d)  # (S, N, d)
    y = y + ffn.b2.view(E, d)[e_sorted].to(dt)[:, None]
    return _combine(y[torch.argsort(order)], gates)                 # back to slot order, weight, sum


def experts_bmm(ffn: ExpertFFNs, x: torch.Tensor, experts: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
    """Same result with torch.bmm on per-slot gathered weights (any dtype / device, no host sync)."""
    B, N, d = x.shape
    k = experts.shape[1]
    E, H = ffn.num_experts, ffn.hidden
    e = experts.reshape(-1)                                         # (S,)
    xs = x[:, None].expand(B, k, N, d).reshape(B * k, N, d)         # (S, N, d)
    h = torch.baddbmm(ffn.b1.view(E, H)[e][:, None], xs, ffn.w1[e])  # (S, N, 4d)
    y = torch.baddbmm(ffn.b2.view(E, d)[e][:, None], F.gelu(h, approximate="tanh"), ffn.w2[e])  # (S, N, d)
    return _combine(y, gates)


def experts_segments(ffn: ExpertFFNs, x: torch.Tensor, experts: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
    """Same result with one matmul per expert over its contiguous slice of expert-sorted slots.

    The slice sizes are read on the host: free on the CPU (where bmm's per-slot weight copies cost
    ≈ 2× the whole FFN on small images), a device sync on CUDA, so CUDA never takes this path."""
    B, N, d = x.shape
    k = experts.shape[1]
    E, H = ffn.num_experts, ffn.hidden
    # unbind, not ffn.w1[e]: indexing's backward zero-fills the whole (E, d, 4d) gradient once per expert
    # (≈ 8 % of a tiny-preset CPU step); unbind's backward stacks the E slices once
    w1, w2 = ffn.w1.unbind(0), ffn.w2.unbind(0)
    b1, b2 = ffn.b1.view(E, H).unbind(0), ffn.b2.view(E, d).unbind(0)
    slot_expert = experts.reshape(-1)                               # (S,) slot s = b·k + j
    order = torch.argsort(slot_expert, stable=True)                 # slots sorted by expert
    counts = torch.bincount(slot_expert, minlength=E).tolist()      # slots per expert (host)
    xs = x[order // k]                                              # (S, N, d) images gathered per expert
    ys = []
    for e, xe in enumerate(xs.split(counts)):
        if xe.shape[0]:
            h = F.gelu(xe @ w1[e] + b1[e], approximate="tanh")      # (S_e, N, 4d)
            ys.append(h @ w2[e] + b2[e])                            # (S_e, N, d)
    y = torch.cat(ys)                                               # (S, N, d) in expert order
    return _combine(y[torch.argsort(order)], gates)                 # back to slot order, weight, sum


def experts_loop(ffn: ExpertFFNs, x: torch.Tensor, experts: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
    """Reference: for each image b and chosen expert e, out_b += g · (GELU(x_b W1_e + b1_e) W2_e + b2_e)."""
    E, H, d = ffn.num_experts, ffn.hidden, ffn.dim
    b1, b2 = ffn.b1.view(E, H), ffn.b2.view(E, d)
    out = []
    for b in range(x.shape[0]):
        y = torch.zeros_like(x[b])
        for j in range(experts.shape[1]):
            e = int(experts[b, j])
            y = y + gates[b, j] * (F.gelu(x[b] @ ffn.w1[e] + b1[e], approximate="tanh") @ ffn.w2[e] + b2[e])
        out.append(y)
    return torch.stack(out)  # (B, N, d)


def run_experts(ffn: ExpertFFNs, dispatch: str, x: torch.Tensor, experts: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
    """dispatch "grouped": grouped_mm where supported, else segments on the CPU, bmm on CUDA; "loop": the reference."""
    if dispatch == "loop":
        return experts_loop(ffn, x, experts, gates)
    if grouped_mm_supported(x.device, _compute_dtype(x)):
        return experts_grouped_mm(ffn, x, experts, gates)
    if x.device.type == "cpu":
        return experts_segments(ffn, x, experts, gates)
    return experts_bmm(ffn, x, experts, gates)


# ----------------------------------------------------------------------------
# Routers
# ----------------------------------------------------------------------------

def style_routing(logits: torch.Tensor, top_k: int, style_override: torch.Tensor | None = None):
    """r (B, N_S) -> p, experts (B, k), gates (B, k), with an optional override of the router's choice.

    style_override (B,) long: s >= 0 forces expert s with gate 1, -1 = router decides. A forced image keeps
    k slots (shapes stay static): slot 0 is s with gate 1, the others are the router's next choices with
    gate 0, so the output is exactly E_s(x).
    style_override (B, N_S) float: per image, mixing weights of up to k experts (0 = not used); the
    experts with a weight > 0 fill the first slots, largest weight first, with their weights as gates
    (out = w_a E_a(x) + w_b E_b(x)); a row of zeros = router decides. A row {s: 1} equals the (B,) form.
    """
    p = logits.softmax(dim=-1)                                     # p = softmax(r)
    top_p, experts = p.topk(top_k, dim=-1)                         # K = top-k of p
    gates = top_p / top_p.sum(dim=-1, keepdim=True)                # g_i = p_i / Σ_{j∈K} p_j
    if style_override is None:
        return p, experts, gates
    if style_override.dim() == 2:
        return (p, *_mixed_routing(p, experts, gates, style_override.to(p.dtype), top_k))
    forced = (style_override >= 0)[:, None]                        # (B, 1)
    s = style_override.clamp(min=0)[:, None]                       # (B, 1)
    others = p.scatter(1, s, -1.0).topk(top_k - 1, dim=-1).indices  # (B, k-1) best experts other than s
    forced_experts = torch.cat([s, others], dim=1)
    forced_gates = torch.zeros_like(gates)
    forced_gates[:, 0] = 1.0
    return p, torch.where(forced, forced_experts, experts), torch.where(forced, forced_gates, gates)


def _mixed_routing(p: torch.Tensor, experts: torch.Tensor, gates: torch.Tensor, weights: torch.Tensor,
                   top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """weights (B, N_S) >= 0 with at most k non-zero per row -> experts, gates (B, k) as style_routing says."""
    w_top, e_top = weights.topk(top_k, dim=-1)                     # forced experts first, largest weight first
    picked = w_top > 0                                             # (B, k), a prefix of each row
    n_picked = picked.sum(dim=1, keepdim=True)                     # (B, 1)
    others = p.masked_fill(weights > 0, -1.0).topk(top_k, dim=-1).indices  # router's best unforced experts
    slot = torch.arange(top_k, device=p.device)[None]              # (1, k)
    fill = others.gather(1, (slot - n_picked).clamp(min=0))        # slot j >= n takes the (j - n)-th of them
    forced = n_picked > 0                                          # (B, 1)
    mixed_experts = torch.where(picked, e_top, fill)
    mixed_gates = torch.where(picked, w_top, torch.zeros_like(w_top))
    return torch.where(forced, mixed_experts, experts), torch.where(forced, mixed_gates, gates)


def quality_routing(logits: torch.Tensor):
    """r (B, N_Q) -> p, expert (B, 1), straight-through gate (B, 1) of value 1."""
    p = logits.softmax(dim=-1)                                     # p = softmax(r)
    k = p.argmax(dim=-1, keepdim=True)                             # k = argmax p
    p_k = p.gather(1, k)
    g = (p_k - p_k.detach()) + 1.0  # g = 1 + p_k - stopgrad(p_k); this order makes the value exactly 1
    return p, k, g


class StyleMoE(nn.Module):
    """Style MoE FFN: router r = W_S [e_tag ; e_t] + b, top-2 renormalised gates, 8 expert FFNs."""

    def __init__(self, dim: int, hidden: int, num_experts: int, top_k: int, dispatch: str):
        super().__init__()
        self.top_k, self.dispatch = top_k, dispatch
        self.router = nn.Linear(2 * dim, num_experts)  # W_S, b
        self.experts = ExpertFFNs(num_experts, dim, hidden)

    def route(self, e_tag_t: torch.Tensor, style_override: torch.Tensor | None = None):
        """e_tag_t (B, 2d) = [e_tag ; e_t] -> logits (B, N_S), p, experts (B, k), gates (B, k); fp32.
        style_override: (B,) forced expert or (B, N_S) mixing weights, as style_routing takes them."""
        with torch.autocast(e_tag_t.device.type, enabled=False):  # routing decisions in fp32
            logits = self.router(e_tag_t.float())
        return (logits, *style_routing(logits, self.top_k, style_override))

    def forward(self, x: torch.Tensor, experts: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        return run_experts(self.experts, self.dispatch, x, experts, gates)


class TokenStyleMoE(nn.Module):
    """Style MoE FFN routed per token: r_n = W_S [LN(x_n) ; e_tag ; e_t] + b, top-k per token, 8 expert FFNs.

    LN(x_n) is the token's normalised hidden state before the adaLN modulation (which also carries e_q);
    [e_tag ; e_t] is the per-image router input, so r_n = W_x LN(x_n) + (W_c [e_tag ; e_t] + b): per-image
    routing plus a per-token term. The B·N tokens go through the same runners as B·N one-token images."""

    def __init__(self, dim: int, hidden: int, num_experts: int, top_k: int, dispatch: str):
        super().__init__()
        self.top_k, self.dispatch = top_k, dispatch
        self.router = nn.Linear(3 * dim, num_experts)  # W_S = [W_x | W_c], b
        self.experts = ExpertFFNs(num_experts, dim, hidden)

    def route(self, x_norm: torch.Tensor, e_tag_t: torch.Tensor, style_override: torch.Tensor | None = None):
        """x_norm (B, N, d) = LN(x), e_tag_t (B, 2d) -> logits, p (B, N, N_S), experts, gates (B, N, k); fp32.
        style_override: as StyleMoE.route takes it, applied to every token of the image."""
        B, N, d = x_norm.shape
        w, b = self.router.weight, self.router.bias
        with torch.autocast(x_norm.device.type, enabled=False):  # routing decisions in fp32
            per_image = F.linear(e_tag_t.float(), w[:, d:].float(), b.float())   # (B, N_S) W_c [e_tag ; e_t] + b
            logits = F.linear(x_norm.float(), w[:, :d].float()) + per_image[:, None]  # (B, N, N_S) r_n
        override = None if style_override is None else style_override.repeat_interleave(N, dim=0)
        p, experts, gates = style_routing(logits.reshape(B * N, -1), self.top_k, override)
        return logits, p.view(B, N, -1), experts.view(B, N, -1), gates.view(B, N, -1)

    def forward(self, x: torch.Tensor, experts: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        """x (B, N, d), experts / gates (B, N, k) -> (B, N, d)."""
        B, N, d = x.shape
        k = experts.shape[-1]
        y = run_experts(self.experts, self.dispatch, x.reshape(B * N, 1, d), experts.reshape(B * N, k),
                        gates.reshape(B * N, k))                     # (B·N, 1, d): each token its own slot group
        return y.view(B, N, d)


def image_style_routing(token_logits: torch.Tensor, top_k: int, style_override: torch.Tensor | None = None):
    """Per-token routing summarised per image, wherever an image-level quantity is needed.

    token_logits (B, N, N_S) -> logits (B, N_S) = ln p̄ with p̄ = mean over the tokens of softmax(r_n), and
    style_routing of them: p̄, experts (B, k), gates (B, k), the override applied as for per-image routing.
    softmax(ln p̄) = p̄, so CE(ln p̄, label) = −ln p̄_label: L_spec^S asks the image's mean routing for its label."""
    N = token_logits.shape[1]
    logits = torch.logsumexp(token_logits.log_softmax(dim=-1), dim=1) - math.log(N)  # ln p̄ (B, N_S)
    return (logits, *style_routing(logits, top_k, style_override))


class DenseStyleFFN(nn.Module):
    """The dense twin of a style MoE block: one FFN d -> k·hidden -> d (GELU tanh), no router, every token.

    Its weights are one stacked expert (`ExpertFFNs` with E = 1, hidden = k·4d) named `experts`, so it is
    initialised, weight-decayed and trained in phase 2 like the experts it stands in for. It has the FFN
    FLOPs and matmul weights of the k experts an image uses (one output bias where those have k)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.experts = ExpertFFNs(1, dim, hidden)

    def forward(self, x: torch.Tensor, experts: torch.Tensor | None = None, gates: torch.Tensor | None = None) -> torch.Tensor:
        f = self.experts
        h = F.gelu(F.linear(x, f.w1[0].t(), f.b1), approximate="tanh")  # (B, N, k·4d)
        return F.linear(h, f.w2[0].t(), f.b2)                            # (B, N, d)


class QualityMoE(nn.Module):
    """Quality MoE FFN: router r = W_Q e_q + b, top-1 with a straight-through gate, 4 expert FFNs."""

    def __init__(self, dim: int, hidden: int, num_experts: int, dispatch: str):
        super().__init__()
        self.dispatch = dispatch
        self.router = nn.Linear(dim, num_experts)  # W_Q, b
        self.experts = ExpertFFNs(num_experts, dim, hidden)

    def route(self, e_q: torch.Tensor):
        """e_q (B, d) -> logits (B, N_Q), p, expert (B, 1), gate (B, 1); fp32."""
        with torch.autocast(e_q.device.type, enabled=False):
            logits = self.router(e_q.float())
        return (logits, *quality_routing(logits))

    def forward(self, x: torch.Tensor, experts: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        return run_experts(self.experts, self.dispatch, x, experts, gates)


# ----------------------------------------------------------------------------
# Losses
# ----------------------------------------------------------------------------

def _global_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over all ranks with an autograd-aware all-reduce; identity when not distributed.

    Backward of an all-reduce sums the incoming gradients, so each rank's local p receives
    world × dL/dP; DDP's gradient average divides by world again: the true gradient of the global loss.
    """
    import torch.distributed as dist
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return t
    from torch.distributed.nn.functional import all_reduce
    return all_reduce(t, op=dist.ReduceOp.SUM)


def balance_loss(probs: torch.Tensor, experts: torch.Tensor) -> torch.Tensor:
    """probs (n, B, E), experts (n, B, k) for n MoE blocks -> L_bal averaged over blocks (scalar).

    Per block: f_i = share of the batch's B·k slots given to expert i, P_i = mean_b p_bi,
    L_bal = E Σ_i f_i P_i (1 at uniform routing). f and P are over the global batch under DDP.
    """
    n, B, E = probs.shape
    if n == 0:
        return probs.sum() * 0.0
    k = experts.shape[-1]
    counts = F.one_hot(experts, E).sum(dim=(1, 2)).to(probs.dtype)       # (n, E) slots per expert
    images = probs.new_full((n, 1), float(B))                              # (n, 1)
    stats = _global_sum(torch.cat([counts, probs.sum(dim=1), images], dim=1))  # one collective
    counts, p_sum, images = stats[:, :E], stats[:, E:2 * E], stats[:, 2 * E:]
    f = counts.detach() / (images * k)                                     # f_i
    P = p_sum / images                                                     # P_i
    return (E * (f * P).sum(dim=1)).mean()                                 # L_bal = N_E Σ f_i P_i


def specialisation_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """logits (n, B, E), labels (B,) with -1 = unlabeled -> CE over labeled images, mean over blocks.

    Zero (with a gradient path) when no image of the batch is labeled.
    """
    n, B, E = logits.shape
    labels = labels.to(torch.long)
    ce_sum = F.cross_entropy(logits.reshape(n * B, E).float(), labels.repeat(n), ignore_index=-1, reduction="sum")
    labeled = (labels >= 0).sum() * n
    return ce_sum / labeled.clamp(min=1)


# ----------------------------------------------------------------------------
# Routing statistics: what the training logs and the evaluation report, computed one way
# ----------------------------------------------------------------------------

def slot_counts(experts: torch.Tensor, num_experts: int) -> torch.Tensor:
    """experts (n, B, k) or (n, B) -> (n, E) float64: the routing slots each expert got, per MoE block."""
    return F.one_hot(experts.flatten(1).long(), num_experts).sum(dim=1).double()


def shares(counts: torch.Tensor) -> torch.Tensor:
    """(n, E) counts -> (n, E) shares of each row (a row of zeros stays zero)."""
    return counts / counts.sum(dim=-1, keepdim=True).clamp_min(1)


def routing_entropy(f: torch.Tensor) -> torch.Tensor:
    # H = −Σ f_i ln f_i along the last dim (0 ln 0 = 0); ln N_E at uniform routing
    f = f.double()
    return -torch.where(f > 0, f * torch.log(f.clamp_min(1e-300)), torch.zeros_like(f)).sum(dim=-1)


def collapse_alerts(top1_share: torch.Tensor, blocks: tuple[int, ...] | list[int], threshold: float) -> list[dict]:
    """Style blocks where one expert is the top-1 choice of more than `threshold` of the images.

    On the top-1 share, not on f_i: with top-2 routing f_i is a share of 2·B slots, so it is at most 0.5
    even when every image picks the same first expert."""
    alerts = []
    for row, block in enumerate(blocks):
        share, expert = top1_share[row].max(dim=0)
        if float(share) > threshold:
            alerts.append({"block": int(block), "expert": int(expert), "share": float(share)})
    return alerts


# ----------------------------------------------------------------------------
# What the forward returns beside the prediction
# ----------------------------------------------------------------------------

@dataclass
class MoEAux:
    """Balance losses and routing of one forward. Per-block tensors are stacked along dim 0
    (style blocks 1, 5, 9, …; quality blocks 3, 7, 11, …, in block order). Under token routing the style
    rows are per image (image_style_routing: ln p̄, p̄ and its top-k) and balance_style is over the tokens;
    a model without style routers (the dense twin) has no style rows (n_S = 0, balance_style = 0)."""

    balance_style: torch.Tensor     # () L_bal^S averaged over style blocks
    balance_quality: torch.Tensor   # () L_bal^Q averaged over quality blocks
    style_logits: torch.Tensor      # (n_S, B, N_S) router logits r^S (fp32)
    style_probs: torch.Tensor       # (n_S, B, N_S) p = softmax(r^S)
    style_experts: torch.Tensor     # (n_S, B, k) chosen experts, best first
    style_gates: torch.Tensor       # (n_S, B, k) renormalised gates (sum 1)
    quality_logits: torch.Tensor    # (n_Q, B, N_Q) router logits r^Q (fp32)
    quality_probs: torch.Tensor     # (n_Q, B, N_Q)
    quality_experts: torch.Tensor   # (n_Q, B) chosen expert
    style_blocks: tuple[int, ...]   # block index of each style row
    quality_blocks: tuple[int, ...] # block index of each quality row
    style_token_experts: torch.Tensor | None = None  # (n_S, B, N, k) per-token choices under token routing, else None

    def specialisation_losses(self, style: torch.Tensor, quality: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(L_spec^S, L_spec^Q): CE(r^S, style label) over labeled images, CE(r^Q, quality tier)."""
        return specialisation_loss(self.style_logits, style), specialisation_loss(self.quality_logits, quality)


# ----------------------------------------------------------------------------
# Parameter groups (phase 2 trains expert FFNs + routers only)
# ----------------------------------------------------------------------------

def is_expert_or_router(name: str) -> bool:
    """True for the parameters phase 2 trains: expert FFN weights and router projections of MoE blocks."""
    return ".ffn.experts." in name or ".ffn.router." in name


def expert_and_router_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(n, p) for n, p in model.named_parameters() if is_expert_or_router(n)]
