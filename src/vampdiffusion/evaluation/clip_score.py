"""CLIP score (docs/evaluation.md): 100 · cos(image embedding, text embedding), each image's score clamped at 0, mean.

Runs only with open_clip installed (`pip install open_clip_torch`), a model name in eval.clip_model
and a local weights file in eval.clip_weights. Any of those missing → a loud "skipped: …" string,
never a number. Our tag encoder is Danbooru-native, so CLIP score is a cross-model baseline only;
prompts are given to CLIP as the comma-separated tags with underscores turned into spaces.
"""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image


def clip_unavailable(model_name: str, weights: str) -> str | None:
    """Why CLIP score cannot run, as the text of the report row; None when it can."""
    if not model_name:
        return "skipped: no CLIP model configured (set eval.clip_model, e.g. ViT-L-14, and eval.clip_weights)"
    if not weights or not Path(weights).expanduser().is_file():
        return f"skipped: no CLIP weights at {weights or '(eval.clip_weights is empty)'}"
    try:
        import open_clip  # noqa: F401
    except ImportError:
        return "skipped: open_clip is not installed (pip install open_clip_torch)"
    return None


def prompt_text(tags: str) -> str:
    """Danbooru tags → the sentence-like text CLIP was trained on: 'red_circle white_background' → 'red circle, white background'."""
    parts = [t.strip().replace("_", " ") for t in tags.replace(",", " ").split()]
    return ", ".join(p for p in parts if p)


def load_clip(model_name: str, weights: str, device: str | torch.device = "cpu"):
    """(model, preprocess, tokenizer) of open_clip; call clip_unavailable first."""
    import open_clip
    model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=str(weights), device=device)
    return model.eval(), preprocess, open_clip.get_tokenizer(model_name)


@torch.no_grad()
def clip_scores(clip, images: list[Image.Image], prompts: list[str]) -> list[float]:
    """Per image: max(100 · cos(E_img(x_i), E_txt(p_i)), 0)."""
    model, preprocess, tokenizer = clip
    if len(images) != len(prompts):
        raise ValueError(f"CLIP score needs one prompt per image, got {len(images)} images and {len(prompts)} prompts")
    if not images:
        return []
    device = next(model.parameters()).device
    x = torch.stack([preprocess(im.convert("RGB")) for im in images]).to(device)
    t = tokenizer([prompt_text(p) for p in prompts]).to(device)
    e_img = torch.nn.functional.normalize(model.encode_image(x).float(), dim=-1)
    e_txt = torch.nn.functional.normalize(model.encode_text(t).float(), dim=-1)
    return (100.0 * (e_img * e_txt).sum(-1)).clamp(min=0.0).cpu().tolist()  # 100·cos, clamped at 0


def clip_score(images: list[Image.Image], prompts: list[str], model_name: str, weights: str,
               device: str | torch.device = "cpu", batch_size: int = 32) -> float:
    """mean_i max(100 · cos(E_img(x_i), E_txt(p_i)), 0)."""
    clip = load_clip(model_name, weights, device)
    scores = [s for i in range(0, len(images), batch_size)
              for s in clip_scores(clip, images[i:i + batch_size], prompts[i:i + batch_size])]
    return float(sum(scores) / len(scores)) if scores else float("nan")
