"""Frozen VAE backends (docs/latents.md): images in [-1, 1] -> latents already multiplied by the scaling factor.

Two backends share one interface (`VAE.encode`, `VAE.decode`, `.scaling_factor`, `.name`):

- `sdxl`    diffusers `AutoencoderKL` (hub id or local folder); latents = mean of q(z|x) * 0.13025.
- `taesdxl` diffusers `AutoencoderTiny` (hub id, local diffusers folder, the shared weights root
            holding diffusers/ + original/, or the original-layout taesdxl_encoder/decoder files).
            TAESD-XL predicts SDXL latents already on the scaled scale, so its factor is 1.0.

`VAMP_TAESDXL=/path` replaces the default hub id `madebyollin/taesdxl` by a local copy (offline use).
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

import torch

from vampdiffusion.config import LatentConfig

SDXL_HUB_ID = "madebyollin/sdxl-vae-fp16-fix"
TAESDXL_HUB_ID = "madebyollin/taesdxl"
TAESDXL_ENV = "VAMP_TAESDXL"
HUB_IDS = {"sdxl": SDXL_HUB_ID, "taesdxl": TAESDXL_HUB_ID}  # where each backend's weights live on the hub
HUB_SOURCE = "the hub id"  # vae_sources' last resort: the download itself, $VAMP_TAESDXL having been tried
SCALING_FACTORS = {"sdxl": 0.13025, "taesdxl": 1.0}  # the factor each backend's latents need to reach std ≈ 1
VAE_FACTOR = 8  # spatial compression of the SDXL-space VAEs: latent side = pixel side / 8

# Architecture of TAESD-XL (diffusers AutoencoderTiny kwargs), used to load the original-layout files.
TAESDXL_CONFIG = dict(
    in_channels=3, out_channels=3, encoder_block_out_channels=(64, 64, 64, 64),
    decoder_block_out_channels=(64, 64, 64, 64), act_fn="relu", upsample_fn="nearest",
    latent_channels=4, upsampling_scaling_factor=2, num_encoder_blocks=(1, 3, 3, 3),
    num_decoder_blocks=(3, 3, 3, 1), latent_magnitude=3, latent_shift=0.5, scaling_factor=1.0,
    force_upcast=False, shift_factor=0.0,
)
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class VAE:
    """A frozen autoencoder. `encode`: (B,3,H,W) in [-1,1] -> (B,4,H/8,W/8) scaled latents."""

    name: str = ""

    def __init__(self, module: torch.nn.Module, scaling_factor: float, source: str):
        # channels-last convolutions: measured 1.4x faster for TAESD-XL on the CPU (docs/latents.md)
        self.module = module.eval().requires_grad_(False).to(memory_format=torch.channels_last)
        self.scaling_factor = float(scaling_factor)
        self.source = source  # the folder / file / hub id the weights came from

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.module.parameters()).dtype

    def to(self, device: str | torch.device) -> "VAE":
        self.module.to(device)
        return self


class SDXLVAE(VAE):
    name = "sdxl"

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(self.device, self.dtype, memory_format=torch.channels_last)  # (B, 3, H, W) in [-1, 1]
        z = self.module.encode(x).latent_dist.mean               # (B, 4, H/8, W/8); the mean, so encoding is deterministic
        return z * self.scaling_factor                           # z_stored = scaling_factor * z

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        z = latents.to(self.device, self.dtype, memory_format=torch.channels_last) / self.scaling_factor
        return self.module.decode(z).sample.clamp(-1, 1).contiguous()  # (B, 3, 8h, 8w)


class TinyVAE(VAE):
    name = "taesdxl"

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(self.device, self.dtype, memory_format=torch.channels_last)  # (B, 3, H, W) in [-1, 1]
        return self.module.encode(x).latents * self.scaling_factor  # (B, 4, H/8, W/8)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        z = latents.to(self.device, self.dtype, memory_format=torch.channels_last) / self.scaling_factor
        return self.module.decode(z).sample.clamp(-1, 1).contiguous()  # (B, 3, 8h, 8w)


# ----------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------

@contextlib.contextmanager
def _quiet_diffusers():
    """diffusers warns about `accelerate` and unused config keys on every load; those are not the user's problem."""
    from diffusers.utils import logging as dlog
    level = dlog.get_verbosity()
    dlog.set_verbosity_error()
    try:
        yield
    finally:
        dlog.set_verbosity(level)


def _is_hub_id(s: str) -> bool:
    return bool(_HUB_ID.match(s)) and not Path(s).exists()


def _from_hub(cls, hub_id: str, backend: str, **kwargs):
    try:
        with _quiet_diffusers():
            return cls.from_pretrained(hub_id, **kwargs)
    except Exception as e:  # OSError, HTTP errors, offline mode: all mean "could not get the weights"
        hint = f" or set {TAESDXL_ENV}=<folder with diffusers/ and original/>" if backend == "taesdxl" else ""
        raise FileNotFoundError(
            f"could not load the {backend} VAE {hub_id!r}: it is not a local path, and downloading it from the "
            f"Hugging Face hub failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). "
            f"Connect to the internet, or pass a local folder with latents.vae_path=...{hint}") from None


def _load_state(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # SafetensorError, UnpicklingError, zip errors: all mean "not readable weights"
        raise ValueError(f"{path} is not readable {path.suffix} weights ({_load_failure(e)}): the file is truncated "
                         f"or not a state dict of tensors; download the TAESD-XL weights again") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict of tensors, got {type(state).__name__}")
    return state


def _load_failure(e: Exception) -> str:
    """Why a weights file did not load, in a few words (torch's weights-only refusal advises loading the
    file unsafely, which is not advice to repeat for a file that should hold tensors only)."""
    if "Weights only load failed" in str(e):
        return "a pickle holding objects other than tensors, refused because loading it could run code"
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).strip()
    return f"{type(e).__name__}: {text.splitlines()[0][:200]}" if text else type(e).__name__


def _original_files(path: Path) -> tuple[Path, Path] | None:
    """The (encoder, decoder) pair of original-layout TAESD-XL files for a folder or one of the two files."""
    folder, names = (path, None) if path.is_dir() else (path.parent, path.name)
    for suffix in WEIGHT_SUFFIXES:
        enc, dec = folder / f"taesdxl_encoder{suffix}", folder / f"taesdxl_decoder{suffix}"
        if names is not None and names not in (enc.name, dec.name):
            continue
        if enc.is_file() and dec.is_file():
            return enc, dec
    if names is not None and "encoder" in names:  # any pair named *encoder* / *decoder* side by side
        dec = folder / names.replace("encoder", "decoder")
        if dec.is_file():
            return path, dec
    if names is not None and "decoder" in names:
        enc = folder / names.replace("decoder", "encoder")
        if enc.is_file():
            return enc, path
    return None


def load_taesd_original(encoder_file: str | Path, decoder_file: str | Path) -> torch.nn.Module:
    """AutoencoderTiny from the original taesd.py layout: encoder `N.*` -> `encoder.layers.N.*`,
    decoder `N.*` -> `decoder.layers.(N-1).*` (the original decoder starts with a Clamp at index 0)."""
    from diffusers import AutoencoderTiny
    with _quiet_diffusers():
        module = AutoencoderTiny(**TAESDXL_CONFIG)
    state = {}
    for key, value in _load_state(Path(encoder_file)).items():
        state[f"encoder.layers.{key}"] = value
    for key, value in _load_state(Path(decoder_file)).items():
        index, rest = key.split(".", 1)
        if not index.isdigit():
            raise ValueError(f"{decoder_file}: key {key!r} is not in the original TAESD decoder layout (N.weight, N.conv.M.bias, ...)")
        state[f"decoder.layers.{int(index) - 1}.{rest}"] = value
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    bad_shape = [k for k in set(state) & set(expected) if state[k].shape != expected[k].shape]
    if missing or unexpected or bad_shape:
        raise ValueError(
            f"{encoder_file} / {decoder_file} are not TAESD-XL encoder/decoder weights in the original layout: "
            f"{len(missing)} missing keys (e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]}), "
            f"{len(bad_shape)} with a wrong shape (e.g. {bad_shape[:2]})")
    module.load_state_dict({k: v.float() for k, v in state.items()})
    return module


def _load_taesdxl(path_or_id: str, use_env: bool = True) -> tuple[torch.nn.Module, str]:
    from diffusers import AutoencoderTiny
    env = os.environ.get(TAESDXL_ENV) if use_env else None
    if path_or_id == TAESDXL_HUB_ID and env:
        path_or_id = env
    path = Path(path_or_id).expanduser()
    if not path.exists():
        if _is_hub_id(path_or_id):
            return _from_hub(AutoencoderTiny, path_or_id, "taesdxl"), path_or_id
        raise FileNotFoundError(f"TAESD-XL weights not found: {path} does not exist (expected a diffusers folder with "
                                f"config.json, a folder with diffusers/ or original/, or taesdxl_encoder/decoder files)")
    for folder in (path, path / "diffusers"):
        if (folder / "config.json").is_file():
            try:
                with _quiet_diffusers():
                    return AutoencoderTiny.from_pretrained(str(folder)), str(folder)
            except Exception as e:
                raise ValueError(f"{folder} is not a diffusers AutoencoderTiny folder: {type(e).__name__}: {e}") from None
    for candidate in (path, path / "original"):
        if candidate.exists() and (pair := _original_files(candidate)):
            return load_taesd_original(*pair), str(pair[0].parent)
    raise FileNotFoundError(
        f"no TAESD-XL weights in {path}: looked for {path}/config.json, {path}/diffusers/config.json and "
        f"taesdxl_encoder/taesdxl_decoder{{{','.join(WEIGHT_SUFFIXES)}}} in {path} and {path}/original")


def _load_sdxl(path_or_id: str) -> tuple[torch.nn.Module, str]:
    from diffusers import AutoencoderKL
    path = Path(path_or_id).expanduser()
    if not path.exists():
        if _is_hub_id(path_or_id):
            try:
                return _from_hub(AutoencoderKL, path_or_id, "sdxl"), path_or_id
            except FileNotFoundError:
                return _from_hub(AutoencoderKL, path_or_id, "sdxl", subfolder="vae"), path_or_id  # a full pipeline repo
        raise FileNotFoundError(f"SDXL VAE not found: {path} does not exist (expected a diffusers AutoencoderKL "
                                f"folder with config.json, or a hub id such as {SDXL_HUB_ID})")
    for folder in (path, path / "vae"):
        if (folder / "config.json").is_file():
            try:
                with _quiet_diffusers():
                    return AutoencoderKL.from_pretrained(str(folder)), str(folder)
            except Exception as e:
                raise ValueError(f"{folder} is not a diffusers AutoencoderKL folder: {type(e).__name__}: {e}") from None
    raise FileNotFoundError(f"no SDXL VAE in {path}: looked for {path}/config.json and {path}/vae/config.json "
                            f"(a diffusers AutoencoderKL folder, e.g. a download of {SDXL_HUB_ID})")


def with_backend(cfg: LatentConfig, backend: str, path: str | None = None, scaling_factor: float | None = None) -> LatentConfig:
    """`cfg` switched to another VAE backend: its weights (`path`, else the backend's hub id when the backend
    changes) and its scaling factor (`scaling_factor`, else the backend's own)."""
    import dataclasses
    if backend not in SCALING_FACTORS:
        raise ValueError(f"the VAE backend must be one of {', '.join(SCALING_FACTORS)}, got {backend!r}")
    default_path = cfg.vae_path if backend == cfg.vae else (TAESDXL_HUB_ID if backend == "taesdxl" else SDXL_HUB_ID)
    return dataclasses.replace(cfg, vae=backend, vae_path=path or default_path,
                               scaling_factor=SCALING_FACTORS[backend] if scaling_factor is None else scaling_factor)


def vae_sources(cfg: LatentConfig, override: str | None = None) -> list[tuple[str, str]]:
    """Where a model's VAE weights are looked for, in order, as (what, path or hub id).

    An explicit `override` is the only source (asked for by name, so it must not be silently replaced).
    Otherwise latents.vae_path when it exists here or names a hub repo; a model folder copied from another
    machine often names a local path that is not here, so then $VAMP_TAESDXL (taesdxl) and the backend's hub id."""
    if override:
        return [("--vae-path", str(override))]
    stored = cfg.vae_path
    if Path(stored).expanduser().exists() or _is_hub_id(stored):
        return [("latents.vae_path", stored)]
    sources = []
    if cfg.vae == "taesdxl" and os.environ.get(TAESDXL_ENV):
        sources.append((f"${TAESDXL_ENV}", os.environ[TAESDXL_ENV]))
    sources.append((HUB_SOURCE, HUB_IDS[cfg.vae]))
    return sources


def missing_vae_error(cfg: LatentConfig, tried: list[str]) -> FileNotFoundError:
    """The error when no source of vae_sources() worked: what was tried and the three ways to fix it."""
    env = f", set {TAESDXL_ENV}=<folder with diffusers/ and original/>" if cfg.vae == "taesdxl" else ""
    return FileNotFoundError(
        f"the model's {cfg.vae} VAE latents.vae_path={cfg.vae_path} does not exist on this machine and no fallback "
        f"worked ({'; '.join(tried)}); pass --vae-path <local {cfg.vae} weights>{env}, or connect to the internet "
        f"so {HUB_IDS[cfg.vae]} can be downloaded")


def load_vae(latent_cfg: LatentConfig, device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
             use_env: bool = True) -> VAE:
    """The frozen VAE named by `latents.vae` / `latents.vae_path`, in eval mode on `device` (fp32 unless `dtype`).

    `use_env=False`: the TAESD-XL hub id means the hub, not $VAMP_TAESDXL."""
    backend = latent_cfg.vae
    if backend == "taesdxl" and latent_cfg.scaling_factor != SCALING_FACTORS["taesdxl"]:
        raise ValueError(f"latents.scaling_factor={latent_cfg.scaling_factor} does not fit latents.vae=taesdxl: "
                         f"TAESD-XL latents are already on the scaled SDXL scale; set latents.scaling_factor=1.0")
    if backend == "sdxl":
        module, source = _load_sdxl(latent_cfg.vae_path)
        vae: VAE = SDXLVAE(module, latent_cfg.scaling_factor, source)
    else:
        module, source = _load_taesdxl(latent_cfg.vae_path, use_env)
        vae = TinyVAE(module, latent_cfg.scaling_factor, source)
    with _quiet_diffusers():
        vae.module.to(device=device, dtype=dtype or torch.float32)
    return vae


__all__ = ["HUB_IDS", "HUB_SOURCE", "SCALING_FACTORS", "VAE_FACTOR", "SDXL_HUB_ID", "TAESDXL_ENV", "TAESDXL_HUB_ID", "SDXLVAE", "TinyVAE", "VAE",
           "load_taesd_original", "load_vae", "missing_vae_error", "vae_sources", "with_backend"]
