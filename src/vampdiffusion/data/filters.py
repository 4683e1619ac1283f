"""The five filter stages (docs/data.md) and the stage table.

Each stage is a function of columns returning a keep mask, callable on its own:
  1 resolution      keep_resolution(width, height, min_side, min_pixels)
  2 score           keep_score(score_tag, min_score_tag)
  3 aesthetic       keep_aesthetic(aesthetic, min_aesthetic)   (NaN rows pass; see stage_aesthetic)
  4 tag density     keep_tag_density(n_general, min_general_tags)
  5 near-duplicates dedup.duplicate_clusters(...).keep
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SKIPPED = "SKIPPED"


# ----------------------------------------------------------------------------
# Stages
# ----------------------------------------------------------------------------

def keep_resolution(width: np.ndarray, height: np.ndarray, min_side: int, min_pixels: int) -> np.ndarray:
    w, h = np.asarray(width, np.int64), np.asarray(height, np.int64)
    return (np.minimum(w, h) >= min_side) & (w * h >= min_pixels)  # min(w,h) >= min_side and w*h >= min_pixels


def keep_score(score_tag: np.ndarray, min_score_tag: int) -> np.ndarray:
    return np.asarray(score_tag) >= min_score_tag


def keep_aesthetic(aesthetic: np.ndarray, min_aesthetic: float) -> np.ndarray:
    """aesthetic >= min_aesthetic; rows without a value (NaN) pass and are counted as unscored."""
    a = np.asarray(aesthetic, np.float64)
    return np.isnan(a) | (a >= min_aesthetic)


def keep_tag_density(n_general: np.ndarray, min_general_tags: int) -> np.ndarray:
    return np.asarray(n_general) >= min_general_tags


# ----------------------------------------------------------------------------
# LAION aesthetic predictor (optional: open_clip + the MLP weights file)
# ----------------------------------------------------------------------------

def laion_aesthetic_scores(paths: list[str], weights: str, clip_model: str, clip_pretrained: str,
                           batch_size: int = 32) -> np.ndarray:
    """(N,) float32 scores of the LAION improved aesthetic predictor: CLIP ViT-L/14 image embedding,
    L2-normalised -> MLP (sac+logos+ava1-l14-linearMSE.pth)."""
    try:
        import open_clip
    except ImportError:
        raise RuntimeError("the aesthetic predictor needs open_clip: pip install open_clip_torch "
                           "(or remove data.aesthetic_weights to use the posts' aesthetic column / skip the stage)") from None
    import torch
    from torch import nn

    from vampdiffusion.data.images import load_image

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, _, preprocess = open_clip.create_model_and_transforms(clip_model, pretrained=clip_pretrained, device=device)
    model.eval()
    mlp = nn.Sequential(nn.Linear(768, 1024), nn.Dropout(0.2), nn.Linear(1024, 128), nn.Dropout(0.2),
                        nn.Linear(128, 64), nn.Dropout(0.1), nn.Linear(64, 16), nn.Linear(16, 1))
    state = torch.load(weights, map_location="cpu", weights_only=True)
    state = {k.removeprefix("layers."): v for k, v in state.items()}
    mlp.load_state_dict(state)
    mlp.to(device).eval()
    out = np.full(len(paths), np.nan, np.float32)
    with torch.no_grad():
        for s in range(0, len(paths), batch_size):
            x = torch.stack([preprocess(load_image(p)) for p in paths[s:s + batch_size]]).to(device)
            e = model.encode_image(x).float()
            e = e / e.norm(dim=-1, keepdim=True)
            out[s:s + batch_size] = mlp(e).squeeze(-1).cpu().numpy()
    return out


# ----------------------------------------------------------------------------
# The stage table
# ----------------------------------------------------------------------------

@dataclass
class StageRow:
    stage: str
    n_in: int
    n_out: int
    status: str = "applied"      # "applied" | "SKIPPED"
    note: str = ""

    @property
    def removed(self) -> int:
        return self.n_in - self.n_out

    @property
    def pct_removed(self) -> float:
        return 100.0 * self.removed / self.n_in if self.n_in else 0.0

    def as_dict(self) -> dict:
        return {"stage": self.stage, "in": self.n_in, "out": self.n_out, "removed": self.removed,
                "pct_removed": round(self.pct_removed, 2), "status": self.status, "note": self.note}


@dataclass
class StageTable:
    rows: list[StageRow] = field(default_factory=list)

    def add(self, stage: str, keep_before: np.ndarray, keep_after: np.ndarray, status: str = "applied", note: str = "") -> None:
        self.rows.append(StageRow(stage, int(keep_before.sum()), int(keep_after.sum()), status, note))

    def as_list(self) -> list[dict]:
        return [r.as_dict() for r in self.rows]

    def format(self) -> str:
        lines = [f"{'stage':<26} {'in':>10} {'out':>10} {'removed':>10} {'%':>7}  note",
                 "-" * 80]
        for r in self.rows:
            pct = f"{r.pct_removed:6.1f}%" if r.status != SKIPPED else SKIPPED
            lines.append(f"{r.stage:<26} {r.n_in:>10,} {r.n_out:>10,} {r.removed:>10,} {pct:>7}  {r.note}")
        return "\n".join(lines)


def format_counts(title: str, rows: list[tuple[str, int]], total: int | None = None) -> str:
    """A small `name  count  %` table (the tier and style tables)."""
    total = total if total is not None else sum(c for _, c in rows)
    lines = [f"{title:<26} {'count':>10} {'%':>7}", "-" * 46]
    for name, c in rows:
        pct = f"{100.0 * c / total:6.1f}%" if total else "     -"
        lines.append(f"{name:<26} {c:>10,} {pct:>7}")
    return "\n".join(lines)


__all__ = ["SKIPPED", "StageRow", "StageTable", "format_counts", "keep_aesthetic", "keep_resolution",
           "keep_score", "keep_tag_density", "laion_aesthetic_scores"]
