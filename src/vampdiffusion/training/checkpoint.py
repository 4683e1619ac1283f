"""Checkpoints that never lose progress.

Full checkpoint: `RUN_DIR/checkpoints/step_NNNNNNNN.pt`, one plain dict (model, EMA, optimizer,
step, data-loader state, RNG states, config, package version) written with `torch.save` through
`vampdiffusion.atomic` (temp + fsync + rename), then a sidecar `step_NNNNNNNN.pt.json` holding the
file's size and sha256. A file without a sidecar, or whose size / hash disagree with it, or that
fails to load, or that lacks a key the trainer resumes from (REQUIRED_KEYS), is skipped with a warning
and the previous one is used. Unusable checkpoints are moved aside (`checkpoints/unusable-<time>/`),
never deleted.

EMA-only: `RUN_DIR/ema/ema_NNNNNNNN.safetensors` (the full model state with EMA weights).
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from vampdiffusion.atomic import atomic_write, atomic_write_json, sha256_file

log = logging.getLogger("vampdiffusion.train")

_STEP_RE = re.compile(r"^step_(\d+)\.pt$")
_EMA_RE = re.compile(r"^ema_(\d+)\.safetensors$")
REQUIRED_KEYS = ("model", "optimizer", "ema", "progress", "data", "rng", "phase")  # what the trainer resumes from
TEMP_FOLDERS = ("checkpoints", "model", "ema")  # where the trainer's atomic writes leave `.*.tmp` when killed


# ----------------------------------------------------------------------------
# Full checkpoints
# ----------------------------------------------------------------------------

def checkpoint_path(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step_{step:08d}.pt"


def save_checkpoint(run_dir: str | Path, step: int, state: dict, keep_last: int) -> Path:
    """Write the checkpoint atomically, then its size/sha256 sidecar; prune to the newest `keep_last`."""
    path = checkpoint_path(run_dir, step)
    atomic_write(path, lambda p: torch.save(state, p))
    atomic_write_json(path.with_name(path.name + ".json"),
                      {"step": step, "size": path.stat().st_size, "sha256": sha256_file(path)})
    prune(path.parent, _STEP_RE, keep_last, sidecar=True)
    return path


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of every full checkpoint file in the run, newest first."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _STEP_RE.match(p.name))]
    return sorted(found, reverse=True)


def verify_checkpoint(path: Path) -> str | None:
    """None when the file matches its sidecar, else the reason it does not."""
    sidecar = path.with_name(path.name + ".json")
    if not sidecar.is_file():
        return "no size/sha256 sidecar (the write did not finish)"
    try:
        meta = json.loads(sidecar.read_text())
        size, digest = int(meta["size"]), str(meta["sha256"])
    except (ValueError, KeyError, TypeError) as e:
        return f"unreadable sidecar {sidecar.name}: {e}"
    actual = path.stat().st_size
    if actual != size:
        return f"size {actual} bytes, sidecar says {size} (truncated?)"
    if sha256_file(path) != digest:
        return "sha256 differs from the sidecar (corrupt)"
    return None


def load_checkpoint(path: str | Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def missing_keys(state: object, required: tuple[str, ...]) -> str | None:
    """None when `state` is a dict with every required key (and a progress step), else what it lacks."""
    if not isinstance(state, dict):
        return f"holds a {type(state).__name__}, not a checkpoint dict"
    missing = [k for k in required if k not in state]
    if missing:
        return f"lacks required key(s) {', '.join(missing)}"
    if "progress" in required and not (isinstance(state["progress"], dict) and "step" in state["progress"]):
        return "its progress entry has no step"
    return None


def load_usable(path: Path, required: tuple[str, ...] = ()) -> tuple[dict | None, str | None]:
    """(state, None) when the checkpoint verifies, loads and has the required keys; else (None, why not)."""
    reason = verify_checkpoint(path)
    if reason is not None:
        return None, reason
    try:
        state = load_checkpoint(path)
    except Exception as e:  # a corrupt pickle stream raises many kinds of errors
        return None, f"failed to load: {type(e).__name__}: {e}"
    reason = missing_keys(state, required)
    return (state, None) if reason is None else (None, reason)


def scan_checkpoints(run_dir: str | Path, required: tuple[str, ...] = ()
                     ) -> tuple[tuple[dict, Path] | None, list[tuple[Path, str]]]:
    """(newest usable (state, path) or None, [(path, reason)] of every newer one that is not usable)."""
    rejected = []
    for _, path in list_checkpoints(run_dir):
        state, reason = load_usable(path, required)
        if reason is None:
            return (state, path), rejected
        log.warning("checkpoint %s is not usable (%s); trying the previous one", path, reason)
        rejected.append((path, reason))
    return None, rejected


def load_latest_valid(run_dir: str | Path, required: tuple[str, ...] = ()) -> tuple[dict, Path] | None:
    """The newest checkpoint that verifies, loads and has the `required` keys; warns about every newer one."""
    return scan_checkpoints(run_dir, required)[0]


def move_aside(run_dir: str | Path, paths: list[Path]) -> Path:
    """Move checkpoints (and their sidecars) into `checkpoints/unusable-<time>/`; returns that folder."""
    base = Path(run_dir) / "checkpoints" / f"unusable-{time.strftime('%Y%m%d-%H%M%S')}"
    folder, n = base, 1
    while folder.exists():  # two restarts within one second
        n += 1
        folder = base.with_name(f"{base.name}-{n}")
    folder.mkdir(parents=True)
    for path in paths:
        for f in (path, path.with_name(path.name + ".json")):
            if f.exists():
                os.replace(f, folder / f.name)
    return folder


def remove_stale_temp_files(run_dir: str | Path) -> list[Path]:
    """Temp files a kill left behind mid-write (`.step_….pt.*.tmp`, `.model.safetensors.*.tmp`, …) in
    checkpoints/, model/ and ema/; never a finished file."""
    stale = [p for name in TEMP_FOLDERS if (Path(run_dir) / name).is_dir()
             for p in (Path(run_dir) / name).glob(".*.tmp")]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def prune(folder: Path, pattern: re.Pattern, keep_last: int, sidecar: bool) -> None:
    files = sorted(((int(m.group(1)), p) for p in folder.iterdir() if (m := pattern.match(p.name))), reverse=True)
    for _, p in files[max(keep_last, 1):]:
        p.unlink(missing_ok=True)
        if sidecar:
            p.with_name(p.name + ".json").unlink(missing_ok=True)


# ----------------------------------------------------------------------------
# EMA-only weights
# ----------------------------------------------------------------------------

def save_ema_weights(run_dir: str | Path, step: int, state: dict[str, torch.Tensor], keep_last: int) -> Path:
    path = Path(run_dir) / "ema" / f"ema_{step:08d}.safetensors"
    save_safetensors(path, state)
    prune(path.parent, _EMA_RE, keep_last, sidecar=False)
    return path


def save_safetensors(path: str | Path, state: dict[str, torch.Tensor], metadata: dict | None = None) -> Path:
    tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    return atomic_write(path, lambda p: save_file(tensors, str(p), metadata=metadata))


# ----------------------------------------------------------------------------
# Weights to start a phase from (--init-from)
# ----------------------------------------------------------------------------

def init_weights_path(init_from: str | Path) -> Path:
    """The live weights to start a phase from: a run folder, a model folder, or a checkpoint file."""
    from vampdiffusion.models.dit import LIVE_WEIGHTS_NAME, WEIGHTS_NAME
    p = Path(init_from)
    for candidate in (p / "model" / LIVE_WEIGHTS_NAME, p / LIVE_WEIGHTS_NAME, p / "model" / WEIGHTS_NAME,
                      p / WEIGHTS_NAME):
        if candidate.is_file():
            return candidate
    if p.is_file():
        return p
    if p.is_dir() and list_checkpoints(p):
        return list_checkpoints(p)[0][1]
    raise FileNotFoundError(f"--init-from {init_from}: found no weights (looked for model/{LIVE_WEIGHTS_NAME}, "
                            f"{LIVE_WEIGHTS_NAME}, {WEIGHTS_NAME}, checkpoints/step_*.pt, or a file)")


def load_init_weights(model: torch.nn.Module, init_from: str | Path) -> Path:
    """Load the weights init_weights_path finds into `model` (architecture checked); returns their file."""
    from vampdiffusion.models.dit import read_weights
    path = init_weights_path(init_from)
    if path.suffix == ".safetensors":
        state = read_weights(path)
    else:
        try:
            loaded = load_checkpoint(path)
        except Exception as e:  # a damaged or foreign pickle raises many kinds of errors
            raise ValueError(f"--init-from {path} is not a readable training checkpoint ({type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''}); pass the previous phase's run folder "
                             f"or its model/ folder") from None
        if (reason := missing_keys(loaded, ("model",))) is not None:
            raise ValueError(f"--init-from {path} {reason}: not a training checkpoint; pass the previous phase's "
                             f"run folder or its model/ folder")
        state = loaded["model"]
    check_architecture(model.state_dict(), state, str(path))
    model.load_state_dict(state)
    return path


# ----------------------------------------------------------------------------
# Architecture check
# ----------------------------------------------------------------------------

def check_architecture(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor], source: str) -> None:
    """Raise a ValueError listing every missing, unexpected and reshaped tensor."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    reshaped = sorted(k for k in set(expected) & set(found) if tuple(expected[k].shape) != tuple(found[k].shape))
    if not (missing or unexpected or reshaped):
        return
    lines = [f"{source} was written for a different architecture than the configured model:"]
    if missing:
        lines.append(f"  missing in the checkpoint ({len(missing)}): {', '.join(missing[:20])}"
                     + (" …" if len(missing) > 20 else ""))
    if unexpected:
        lines.append(f"  not in the model ({len(unexpected)}): {', '.join(unexpected[:20])}"
                     + (" …" if len(unexpected) > 20 else ""))
    for k in reshaped[:20]:
        lines.append(f"  shape of {k}: checkpoint {tuple(found[k].shape)}, model {tuple(expected[k].shape)}")
    if len(reshaped) > 20:
        lines.append(f"  … and {len(reshaped) - 20} more reshaped tensors")
    lines.append("  fix: train with the config the checkpoint was made with (it is saved in the run folder as "
                 "config.yaml), or start a new run")
    raise ValueError("\n".join(lines))


# ----------------------------------------------------------------------------
# RNG states (python, numpy, torch CPU, CUDA)
# ----------------------------------------------------------------------------

def rng_state() -> dict:
    """Every global RNG state as tensors / plain Python values (loadable with weights_only=True)."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
