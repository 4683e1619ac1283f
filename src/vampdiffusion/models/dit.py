"""VampDiT: the VampDiffusion-V1 diffusion transformer (docs/model.md).

x (B, 4, h, w), t (B,), tag_ids (B, L), quality (B,)  ->  v (B, 4, h, w), MoEAux.

Block kinds by index i: even -> standard FFN, i ≡ 1 (mod 4) -> style MoE, i ≡ 3 (mod 4) -> quality MoE.
adaLN-Zero: modulation and final layer start at zero, so every block starts as the identity and
the untrained model outputs exactly zero. The ablation switches model.style_routing (image | token) and
model.style_ffn (moe | dense) change what the style blocks are; their defaults build the v1 model.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from vampdiffusion.config import Config, ConfigError, ModelConfig, config_from_dict, config_to_dict
from vampdiffusion.data.vocab import VOCAB_NAME  # noqa: F401  (part of a model folder)
from vampdiffusion.models.moe import (
    DenseStyleFFN, ExpertFFNs, MoEAux, QualityMoE, StyleMoE, TokenStyleMoE, balance_loss, image_style_routing,
)
from vampdiffusion.models.tag_encoder import TagEncoder

# a model folder: config.json (the full Config), the EMA weights, the live weights of a training run, the vocabulary
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
LIVE_WEIGHTS_NAME = "model_live.safetensors"


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale[:, None]) + shift[:, None]


def block_kind(i: int) -> str:
    """"dense" for even i, "style" for i ≡ 1 (mod 4), "quality" for i ≡ 3 (mod 4)."""
    return "dense" if i % 2 == 0 else ("style" if i % 4 == 1 else "quality")


# ----------------------------------------------------------------------------
# Embeddings
# ----------------------------------------------------------------------------

class TimestepEmbedder(nn.Module):
    """e_t = MLP(sinusoidal(t, 256))."""

    def __init__(self, dim: int, freq_dim: int):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    @staticmethod
    def sinusoidal(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
        args = t.float()[:, None] * freqs[None]  # (B, half)
        return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (B, dim)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.sinusoidal(t, self.freq_dim))  # (B, d)


# ----------------------------------------------------------------------------
# Blocks
# ----------------------------------------------------------------------------

class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, D = x.shape
        qkv = self.qkv(x).view(B, N, 3, self.num_heads, D // self.num_heads).permute(2, 0, 3, 1, 4)  # (3, B, H, N, hd)
        out = F.scaled_dot_product_attention(*qkv.unbind(0))  # (B, H, N, hd) flash / cuDNN on GPU; unbind: no zero-filled grads
        return self.proj(out.transpose(1, 2).reshape(B, N, D))  # (B, N, d)


class FFN(nn.Module):
    """d -> 4d -> d, GELU (tanh). Takes (and ignores) the routing arguments so every block calls it alike."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, experts: torch.Tensor | None = None, gates: torch.Tensor | None = None) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class Block(nn.Module):
    """adaLN-Zero block; self.ffn is an FFN, a StyleMoE or a QualityMoE depending on the block index
    (a DenseStyleFFN in the style blocks of the dense twin, a TokenStyleMoE in a TokenRoutedBlock)."""

    def __init__(self, cfg: ModelConfig, kind: str):
        super().__init__()
        d, hidden = cfg.hidden_size, int(cfg.hidden_size * cfg.mlp_ratio)
        self.kind = kind
        self.norm1 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(d, cfg.num_heads)
        self.norm2 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        if kind == "style" and cfg.style_ffn == "dense":
            self.ffn = DenseStyleFFN(d, cfg.style_top_k * hidden)
        elif kind == "style" and cfg.style_routing == "token":
            self.ffn = TokenStyleMoE(d, hidden, cfg.num_style_experts, cfg.style_top_k, cfg.moe_dispatch)
        elif kind == "style":
            self.ffn = StyleMoE(d, hidden, cfg.num_style_experts, cfg.style_top_k, cfg.moe_dispatch)
        elif kind == "quality":
            self.ffn = QualityMoE(d, hidden, cfg.num_quality_experts, cfg.moe_dispatch)
        else:
            self.ffn = FFN(d, hidden)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d))

    def forward(self, x: torch.Tensor, c: torch.Tensor, experts: torch.Tensor | None, gates: torch.Tensor | None) -> torch.Tensor:
        # (shift1, scale1, gate1, shift2, scale2, gate2) = Linear(SiLU(c))
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaLN_modulation(c).chunk(6, dim=1)  # 6 × (B, d)
        x = x + gate1[:, None] * self.attn(modulate(self.norm1(x), shift1, scale1))  # (B, N, d)
        x = x + gate2[:, None] * self.ffn(modulate(self.norm2(x), shift2, scale2), experts, gates)
        return x


class TokenRoutedBlock(Block):
    """A style block under model.style_routing = token: the router reads each token's LN(x) after attention,
    so the routing happens inside the block; returns it with the new hidden state."""

    def forward(self, x: torch.Tensor, c: torch.Tensor, e_tag_t: torch.Tensor, style_override: torch.Tensor | None):
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaLN_modulation(c).chunk(6, dim=1)  # 6 × (B, d)
        x = x + gate1[:, None] * self.attn(modulate(self.norm1(x), shift1, scale1))  # (B, N, d)
        x_norm = self.norm2(x)                                                        # LN(x), the router's token input
        logits, p, experts, gates = self.ffn.route(x_norm, e_tag_t, style_override)   # (B, N, N_S) ×2, (B, N, k) ×2
        x = x + gate2[:, None] * self.ffn(modulate(x_norm, shift2, scale2), experts, gates)
        return x, logits, p, experts, gates


def make_block(cfg: ModelConfig, i: int) -> Block:
    """Block i of the model: a TokenRoutedBlock for a style block under token routing, else a Block."""
    token = block_kind(i) == "style" and cfg.style_routing == "token" and cfg.style_ffn == "moe"
    return (TokenRoutedBlock if token else Block)(cfg, block_kind(i))


class FinalLayer(nn.Module):
    """Final adaLN (shift, scale) + linear -> p·p·C per token."""

    def __init__(self, dim: int, patch_size: int, out_channels: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(dim, patch_size * patch_size * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm(x), shift, scale))  # (B, N, p·p·C)


# ----------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------

class VampDiT(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.style_routing == "token" and cfg.style_ffn == "dense":
            raise ValueError("model.style_routing=token needs model.style_ffn=moe (the dense twin has no style router)")
        self.cfg = cfg
        d, p, C = cfg.hidden_size, cfg.patch_size, cfg.in_channels
        self.tag_encoder = TagEncoder(cfg)
        self.x_embedder = nn.Linear(p * p * C, d)                       # patch embed
        self.pos_row = nn.Parameter(torch.zeros(cfg.max_grid, d))        # R[max_grid, d]
        self.pos_col = nn.Parameter(torch.zeros(cfg.max_grid, d))        # C[max_grid, d]
        self.t_embedder = TimestepEmbedder(d, cfg.timestep_freq_dim)
        self.q_embedder = nn.Embedding(cfg.num_quality_tiers, d)         # table [4, d] -> e_q
        self.cond_mlp = nn.Sequential(nn.Linear(2 * d, d), nn.SiLU(), nn.Linear(d, d))
        self.blocks = nn.ModuleList([make_block(cfg, i) for i in range(cfg.depth)])
        self.final_layer = FinalLayer(d, p, C)
        # the blocks with a style router (none in the dense twin)
        self.style_blocks = tuple(i for i in range(cfg.depth) if block_kind(i) == "style" and cfg.style_ffn == "moe")
        self.quality_blocks = tuple(i for i in range(cfg.depth) if block_kind(i) == "quality")
        self.initialize_weights()

    def initialize_weights(self) -> None:
        def _basic_init(m: nn.Module) -> None:
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        self.apply(_basic_init)
        for m in self.modules():
            if isinstance(m, ExpertFFNs):
                m.reset_parameters()
        nn.init.normal_(self.tag_encoder.embed.weight, std=0.02)
        nn.init.normal_(self.tag_encoder.pos, std=0.02)
        nn.init.normal_(self.pos_row, std=0.02)
        nn.init.normal_(self.pos_col, std=0.02)
        nn.init.normal_(self.q_embedder.weight, std=0.02)
        for lin in (self.t_embedder.mlp[0], self.t_embedder.mlp[2]):
            nn.init.normal_(lin.weight, std=0.02)
        for i in self.style_blocks + self.quality_blocks:  # small routers: near-uniform p, but not tied
            nn.init.normal_(self.blocks[i].ffn.router.weight, std=0.02)
        # adaLN-Zero: every block starts as the identity, the output layer at exactly zero
        for block in self.blocks:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].weight)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)

    def compile_blocks(self, **kwargs) -> None:
        """Regional torch.compile: every DiT block and tag-encoder layer compiled on its own.

        Blocks of one kind share their compiled code (parameters are graph inputs), so a cold start
        compiles 3 DiT block kinds and 1 encoder layer instead of the whole unrolled model, and the
        compiled regions sit inside DDP buckets, FSDP2 units and activation checkpoints unchanged."""
        for module in (*self.blocks, *self.tag_encoder.layers):
            module.compile(**kwargs)

    # -- tags -----------------------------------------------------------------

    def encode_tags(self, tag_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """tag_ids (B, L) -> h (B, L, d_enc), mask (B, L) True at real tokens, e_tag (B, d)."""
        if tag_ids.dim() != 2 or tag_ids.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"tag_ids must be a (B, L) integer tensor, got {tuple(tag_ids.shape)} {tag_ids.dtype}")
        if tag_ids.shape[1] > self.cfg.max_tags:
            raise ValueError(f"tag sequence length {tag_ids.shape[1]} exceeds model.max_tags={self.cfg.max_tags}; "
                             f"truncate the tags or use a model with a longer position table")
        return self.tag_encoder(tag_ids)

    # -- forward --------------------------------------------------------------

    def forward(self, x: torch.Tensor, t: torch.Tensor, tag_ids: torch.Tensor, quality: torch.Tensor,
                style_override: torch.Tensor | None = None) -> tuple[torch.Tensor, MoEAux]:
        _, _, e_tag = self.encode_tags(tag_ids)
        return self.denoise(x, t, e_tag, quality, style_override)

    def denoise(self, x: torch.Tensor, t: torch.Tensor, e_tag: torch.Tensor, quality: torch.Tensor,
                style_override: torch.Tensor | None = None) -> tuple[torch.Tensor, MoEAux]:
        """The forward from a pooled e_tag (B, d): lets a sampler encode the tags once."""
        gh, gw = self._check_inputs(x, t, e_tag, quality, style_override)
        B, C = x.shape[:2]
        p = self.cfg.patch_size
        e_t = self.t_embedder(t)                                       # (B, d)
        e_q = self.q_embedder(quality)                                 # (B, d)
        c = self.cond_mlp(torch.cat([e_t, e_tag], dim=1)) + e_q        # c = MLP([e_t ; e_tag]) + e_q
        e_tag_t = torch.cat([e_tag, e_t], dim=1)                       # (B, 2d) the style routers' input
        routes, aux = self._route(e_tag_t, e_q, style_override)
        # patchify: (B, C, h, w) -> (B, N, p·p·C), token (i, j) row-major
        tokens = x.view(B, C, gh, p, gw, p).permute(0, 2, 4, 3, 5, 1).reshape(B, gh * gw, p * p * C)
        pos = (self.pos_row[:gh, None, :] + self.pos_col[None, :gw, :]).reshape(gh * gw, -1)  # R[i] + C[j]
        h = self.x_embedder(tokens) + pos                              # (B, N, d)
        token_routes = []
        for i, block in enumerate(self.blocks):
            if isinstance(block, TokenRoutedBlock):
                h, *route = self._run_block(block, h, c, e_tag_t, style_override)
                token_routes.append(route)
                continue
            experts, gates = routes.get(i, (None, None))
            h = self._run_block(block, h, c, experts, gates)
        out = self.final_layer(h, c)                                   # (B, N, p·p·C)
        v = out.view(B, gh, gw, p, p, C).permute(0, 5, 1, 3, 2, 4).reshape(B, C, gh * p, gw * p)
        if token_routes:
            aux = self._with_token_style_routing(aux, token_routes, style_override)
        return v, aux

    def _run_block(self, block: Block, *args):
        if self.cfg.gradient_checkpointing and torch.is_grad_enabled():
            return checkpoint(block, *args, use_reentrant=False)
        return block(*args)

    def route(self, tag_ids: torch.Tensor, t: torch.Tensor, quality: torch.Tensor,
              style_override: torch.Tensor | None = None, x: torch.Tensor | None = None) -> MoEAux:
        """The routers alone: the style and quality experts every MoE block picks for these images at these
        timesteps (per-image routing depends on the conditioning only, so no latents are needed).

        Under model.style_routing = token the style routers read the tokens: give x (B, C, h, w), the noised
        latents x_t, and the whole forward runs; without x the style rows are empty (quality routing only)."""
        if style_override is not None:
            self._check_style_override(style_override, tag_ids.shape[0])
        _, _, e_tag = self.encode_tags(tag_ids)
        if x is not None and self.cfg.style_routing == "token":
            return self.denoise(x, t, e_tag, quality, style_override)[1]
        e_t = self.t_embedder(t)                                       # (B, d)
        e_q = self.q_embedder(quality)                                 # (B, d)
        return self._route(torch.cat([e_tag, e_t], dim=1), e_q, style_override)[1]

    def _route(self, e_tag_t: torch.Tensor, e_q: torch.Tensor, style_override: torch.Tensor | None):
        """Every per-image router runs once, before the blocks (its routing depends only on per-image
        conditioning); token-routed style blocks route inside the block."""
        routes: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        s_logits, s_probs, s_experts, s_gates = [], [], [], []
        image_style_blocks = self.style_blocks if self.cfg.style_routing == "image" else ()
        for i in image_style_blocks:
            logits, p, experts, gates = self.blocks[i].ffn.route(e_tag_t, style_override)
            routes[i] = (experts, gates)
            s_logits.append(logits); s_probs.append(p); s_experts.append(experts); s_gates.append(gates)
        q_logits, q_probs, q_experts = [], [], []
        for i in self.quality_blocks:
            logits, p, expert, gate = self.blocks[i].ffn.route(e_q)
            routes[i] = (expert, gate)
            q_logits.append(logits); q_probs.append(p); q_experts.append(expert)
        B, d = e_q.shape
        k, NS, NQ = self.cfg.style_top_k, self.cfg.num_style_experts, self.cfg.num_quality_experts
        dev = e_q.device
        style_logits = torch.stack(s_logits) if s_logits else torch.zeros(0, B, NS, device=dev)
        style_probs = torch.stack(s_probs) if s_probs else torch.zeros(0, B, NS, device=dev)
        style_experts = torch.stack(s_experts) if s_experts else torch.zeros(0, B, k, dtype=torch.long, device=dev)
        quality_logits = torch.stack(q_logits) if q_logits else torch.zeros(0, B, NQ, device=dev)
        quality_probs = torch.stack(q_probs) if q_probs else torch.zeros(0, B, NQ, device=dev)
        quality_experts = torch.stack(q_experts) if q_experts else torch.zeros(0, B, 1, dtype=torch.long, device=dev)
        aux = MoEAux(
            balance_style=balance_loss(style_probs, style_experts),
            balance_quality=balance_loss(quality_probs, quality_experts),
            style_logits=style_logits, style_probs=style_probs, style_experts=style_experts,
            style_gates=torch.stack(s_gates) if s_gates else torch.zeros(0, B, k, device=dev),
            quality_logits=quality_logits, quality_probs=quality_probs, quality_experts=quality_experts[..., 0],
            style_blocks=image_style_blocks, quality_blocks=self.quality_blocks,
        )
        return routes, aux

    def _with_token_style_routing(self, aux: MoEAux, token_routes: list, style_override: torch.Tensor | None) -> MoEAux:
        """aux with the style rows of the token-routed blocks: per image where MoEAux holds images
        (image_style_routing: ln p̄, p̄, top-k of p̄), L_bal^S over the B·N tokens (f, P per token slot)."""
        logits, probs, experts, _ = (torch.stack(parts) for parts in zip(*token_routes))  # (n_S, B, N, ·)
        image = [image_style_routing(block_logits, self.cfg.style_top_k, style_override) for block_logits in logits]
        img_logits, img_probs, img_experts, img_gates = (torch.stack(parts) for parts in zip(*image))  # (n_S, B, ·)
        return dataclasses.replace(
            aux, balance_style=balance_loss(probs.flatten(1, 2), experts.flatten(1, 2)),
            style_logits=img_logits, style_probs=img_probs, style_experts=img_experts, style_gates=img_gates,
            style_blocks=self.style_blocks, style_token_experts=experts)

    def _check_inputs(self, x, t, e_tag, quality, style_override) -> tuple[int, int]:
        cfg = self.cfg
        if x.dim() != 4 or x.shape[1] != cfg.in_channels:
            raise ValueError(f"x must be (B, {cfg.in_channels}, h, w) latents, got {tuple(x.shape)}")
        B, _, h, w = x.shape
        p = cfg.patch_size
        if h % p or w % p:
            raise ValueError(f"latent size {h}x{w} is not a multiple of the patch size {p}")
        gh, gw = h // p, w // p
        if gh > cfg.max_grid or gw > cfg.max_grid:
            raise ValueError(f"latent {h}x{w} gives a {gh}x{gw} token grid, beyond the position tables "
                             f"(model.max_grid={cfg.max_grid} tokens per side, i.e. latents up to "
                             f"{cfg.max_grid * p}x{cfg.max_grid * p}); use a smaller image or a larger max_grid")
        for name, v in (("t", t), ("quality", quality)):
            if v.shape != (B,):
                raise ValueError(f"{name} must have shape ({B},), got {tuple(v.shape)}")
        if style_override is not None:
            self._check_style_override(style_override, B)
        if e_tag.shape != (B, cfg.hidden_size):
            raise ValueError(f"e_tag must be ({B}, {cfg.hidden_size}), got {tuple(e_tag.shape)}")
        return gh, gw

    def _check_style_override(self, style_override: torch.Tensor, B: int) -> None:
        """(B,) long forced experts (-1 = routed) or (B, N_S) float mixing weights, at most style_top_k per image."""
        cfg = self.cfg
        N, k = cfg.num_style_experts, cfg.style_top_k
        if not self.style_blocks:
            raise ValueError("style_override forces style experts, and this model has no style MoE block "
                             "(model.style_ffn=dense puts a plain FFN where the style experts are); leave the style unset")
        if style_override.shape not in ((B,), (B, N)):
            raise ValueError(f"style_override must have shape ({B},) (one forced expert per image) or ({B}, {N}) "
                             f"(mixing weights per image), got {tuple(style_override.shape)}")
        if torch.compiler.is_compiling():
            return
        if style_override.dim() == 1:  # inference only: a host sync is fine
            if ((style_override < -1) | (style_override >= N)).any():
                raise ValueError(f"style_override must be -1 (router decides) or 0..{N - 1}, "
                                 f"got {style_override.tolist()}")
            return
        w = style_override
        if not w.is_floating_point() or not torch.isfinite(w).all() or (w < 0).any():
            raise ValueError("style_override mixing weights must be finite floats >= 0 (0 = expert not used)")
        if int((w > 0).sum(dim=1).max()) > k:
            raise ValueError(f"style_override mixes more than style_top_k={k} experts in one image; "
                             f"give at most {k} non-zero weights per image")

    # -- files ----------------------------------------------------------------

    def save_pretrained(self, directory: str | Path, config: Config | None = None,
                        extra_files: dict[str, str | bytes] | None = None) -> Path:
        """Write config.json (the full Config; its "model" section is this model's), model.safetensors,
        and any extra_files {name: text or bytes} (e.g. vocab.json), each atomically."""
        from safetensors.torch import save_file
        from vampdiffusion.atomic import atomic_write, atomic_write_bytes, atomic_write_json, atomic_write_text
        directory = Path(directory)
        full = config_to_dict(config if config is not None else Config(model=self.cfg))
        full["model"] = dataclasses.asdict(self.cfg)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        atomic_write(directory / WEIGHTS_NAME, lambda p: save_file(state, str(p), metadata={"format": "pt"}))
        for name, content in (extra_files or {}).items():
            (atomic_write_bytes if isinstance(content, bytes) else atomic_write_text)(directory / name, content)
        atomic_write_json(directory / CONFIG_NAME, full)
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device = "cpu") -> "VampDiT":
        """Rebuild from a folder written by save_pretrained; only config.json's "model" section is read.

        A damaged or foreign file is a ValueError naming it and the fix, never a raw loader traceback."""
        directory = Path(directory)
        cfg_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
        for path in (cfg_path, weights_path):
            if not path.is_file():
                raise FileNotFoundError(f"{path} not found: a model folder holds {CONFIG_NAME} and {WEIGHTS_NAME} "
                                        f"(written by VampDiT.save_pretrained or a training run's export)")
        try:
            values = json.loads(cfg_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ConfigError(f"{cfg_path} is not JSON ({e}); copy the model folder again") from None
        if not isinstance(values, dict) or not isinstance(values.get("model"), dict):
            raise ConfigError(f"{cfg_path}: expected a JSON object with a \"model\" section")
        model_cfg = config_from_dict({"model": values["model"]}).model
        with torch.device("meta"):  # no random init of weights that are about to be replaced
            model = cls(model_cfg)
        state = read_weights(weights_path)
        _check_state(state, model.state_dict(), weights_path, cfg_path)
        model.load_state_dict(state, strict=True, assign=True)
        return model.to(device)


_PICKLE_MAGIC = (b"PK\x03\x04", b"\x80")  # torch.save zip archive, legacy pickle


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file on the CPU (moved to the device after the checks, so a device problem is not
    reported as a bad file)."""
    from safetensors.torch import load_file
    try:
        return load_file(str(path), device="cpu")
    except Exception as e:  # SafetensorError, OSError, ...: the file is not a complete safetensors file
        with open(path, "rb") as f:
            head = f.read(4)
        what = ("a PyTorch pickle (torch.save), not safetensors" if head.startswith(_PICKLE_MAGIC)
                else f"not a complete safetensors file ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})")
        raise ValueError(f"{path} is {what}: copy the model folder again, or re-export it with "
                         f"VampDiT.save_pretrained (a training run writes it to RUN/model/)") from None


def _check_state(state: dict, expected: dict, weights_path: Path, cfg_path: Path) -> None:
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{weights_path} does not match the model of {cfg_path}: "
                         f"missing {missing[:5]}{'…' if len(missing) > 5 else ''}, "
                         f"unexpected {unexpected[:5]}{'…' if len(unexpected) > 5 else ''}")
    wrong = [k for k in expected if tuple(state[k].shape) != tuple(expected[k].shape)]
    if wrong:
        k = wrong[0]
        raise ValueError(f"{weights_path} does not match the model of {cfg_path}: {len(wrong)} tensor(s) have other "
                         f"shapes, e.g. {k} is {list(state[k].shape)}, the config builds {list(expected[k].shape)}; "
                         f"keep the config.json that was saved with these weights")
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise ValueError(f"{weights_path} holds NaN or inf in {len(bad)} tensor(s), e.g. {bad[0]}: these weights "
                         f"cannot draw an image; use an earlier checkpoint of the run (RUN/checkpoints) or the EMA "
                         f"weights, and check the run's loss for a divergence")
