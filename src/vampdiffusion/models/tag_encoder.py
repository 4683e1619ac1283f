"""Danbooru tag encoder (docs/model.md): embeddings + learned positions, pre-LN transformer, attention pooling.

tag_ids (B, L) with [PAD]=0 [BOS]=2 [EOS]=3  ->  h (B, L, d_enc), mask (B, L), e_tag (B, d).
Padding is masked everywhere, so appending [PAD] tokens changes neither h at real tokens nor e_tag.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from vampdiffusion.config import ModelConfig
from vampdiffusion.data.vocab import PAD



class EncoderAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape
        qkv = self.qkv(x).view(B, L, 3, self.num_heads, D // self.num_heads).permute(2, 0, 3, 1, 4)  # (3, B, H, L, hd)
        # keep (B, L) -> (B, 1, 1, L): every query attends to the non-pad keys only
        out = F.scaled_dot_product_attention(*qkv.unbind(0), attn_mask=keep[:, None, None, :])  # (B, H, L, hd)
        return self.proj(out.transpose(1, 2).reshape(B, L, D))


class EncoderLayer(nn.Module):
    """Pre-LN transformer layer: x += Attn(LN(x)); x += FFN(LN(x)), FFN = d -> 4d -> d, GELU."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = EncoderAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), keep)
        return x + self.mlp(self.norm2(x))


class TagEncoder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.max_tags = cfg.max_tags
        self.vocab_size = cfg.vocab_size
        self.embed = nn.Embedding(cfg.vocab_size, cfg.enc_dim)             # [V, d_enc]
        self.pos = nn.Parameter(torch.zeros(cfg.max_tags, cfg.enc_dim))     # [max_tags, d_enc]
        self.layers = nn.ModuleList(
            [EncoderLayer(cfg.enc_dim, cfg.enc_heads, cfg.enc_mlp_ratio) for _ in range(cfg.enc_depth)]
        )
        self.norm = nn.LayerNorm(cfg.enc_dim)
        self.pool_query = nn.Parameter(torch.zeros(cfg.enc_dim))           # u; zero init = mean pooling at start
        self.pool_proj = nn.Linear(cfg.enc_dim, cfg.hidden_size, bias=False)  # W_p

    def forward(self, tag_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        B, L = tag_ids.shape
        mask = tag_ids != PAD  # (B, L) True at real tokens
        # Position 0 always counts as a key, so a (malformed) all-[PAD] row yields finite numbers
        # instead of NaN without a host-side check; a real sequence starts with [BOS] anyway.
        keep = mask.clone()
        keep[:, 0] = True
        h = self.embed(tag_ids) + self.pos[:L]  # (B, L, d_enc)
        for layer in self.layers:
            h = layer(h, keep)
        h = self.norm(h)  # (B, L, d_enc)
        # w = softmax over non-pad tokens of (u · h_i)
        score = (h @ self.pool_query.to(h.dtype)).masked_fill(~keep, float("-inf"))  # (B, L)
        w = score.float().softmax(dim=-1).to(h.dtype)
        # e_tag = W_p Σ_i w_i h_i
        e_tag = self.pool_proj((w[:, :, None] * h).sum(dim=1))  # (B, d)
        return h, mask, e_tag
