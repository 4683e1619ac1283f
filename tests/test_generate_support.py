"""Shared by the generation, infotext, pipeline and serve tests: a tiny random VampDiT model folder."""
from pathlib import Path

import torch

from vampdiffusion.config import Config, LatentConfig, ModelConfig
from vampdiffusion.data.vocab import TagVocab
from vampdiffusion.models.dit import VampDiT

TAGS = ["1girl", "solo", "gothic", "dark", "long_hair", "red_eyes", "smile", "outdoors"]


def tiny_config(taesdxl_path, **latents) -> Config:
    return Config(model=ModelConfig(patch_size=2, hidden_size=32, depth=4, num_heads=2, max_grid=8,
                                    vocab_size=4 + len(TAGS), max_tags=8, enc_dim=16, enc_depth=1, enc_heads=2,
                                    moe_dispatch="loop"),
                  latents=LatentConfig(vae="taesdxl", vae_path=str(taesdxl_path), scaling_factor=1.0, resolution=64,
                                       **latents))


def write_tiny_model(d: Path, taesdxl_path, seed: int = 0, **latents) -> Path:
    """A random model whose every layer is live (adaLN-Zero starts at v = 0), its config and vocabulary."""
    torch.manual_seed(seed)
    cfg = tiny_config(taesdxl_path, **latents)
    model = VampDiT(cfg.model)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2 and p.abs().sum() == 0:
                p.normal_(0, 0.05)
        for i in model.style_blocks:  # routers that prefer different experts for different tags
            model.blocks[i].ffn.router.weight.normal_(0, 1.0)
    model.save_pretrained(d, config=cfg)
    TagVocab(TAGS, [100 - i for i in range(len(TAGS))]).save(d / "vocab.json")
    return d
