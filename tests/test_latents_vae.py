"""VAE backends: loading paths, scaling, round-trip quality, errors."""

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from vampdiffusion.config import LatentConfig
from vampdiffusion.latents import vae as vae_module
from vampdiffusion.latents.vae import TAESDXL_ENV, TAESDXL_HUB_ID, load_vae

# Measured 2026-11-26 on these 8 synthetic 64x64 images (CPU, fp32): mean 31.3 dB, min 29.4 dB.
PSNR_MEAN_FLOOR_DB = 30.5
PSNR_MIN_FLOOR_DB = 28.5


def synthetic_images(n: int = 8, size: int = 64, seed: int = 0) -> torch.Tensor:
    """(n, 3, size, size) in [-1, 1]: a two-colour gradient background and one flat disc or square."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    images = []
    for i in range(n):
        c0, c1, fg = (torch.rand(3, 1, 1, generator=g) * 2 - 1 for _ in range(3))
        cx, cy = (torch.rand(2, generator=g) - 0.5).tolist()
        r = 0.25 + 0.3 * torch.rand(1, generator=g).item()
        inside = ((xx - cx) ** 2 + (yy - cy) ** 2 < r ** 2) if i % 2 else (((xx - cx).abs() < r) & ((yy - cy).abs() < r))
        background = c0 * (xx + 1) / 2 + c1 * (1 - xx) / 2
        images.append(torch.where(inside, fg, background))
    return torch.stack(images).clamp(-1, 1)


def psnr_db(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # PSNR = 10 log10(1 / MSE) on [0, 1] images, per image
    mse = ((a - b) / 2).pow(2).mean(dim=(1, 2, 3))
    return 10 * torch.log10(1 / mse)


def taesd_cfg(path) -> LatentConfig:
    return LatentConfig(vae="taesdxl", vae_path=str(path), scaling_factor=1.0)


def test_taesdxl_round_trip_psnr_is_above_measured_floor(taesdxl_path):
    vae = load_vae(taesd_cfg(taesdxl_path))
    x = synthetic_images()
    z = vae.encode(x)
    assert z.shape == (8, 4, 8, 8)
    assert 0.3 < z.std().item() < 2.0  # TAESD-XL latents are already on the scaled (std ≈ 1) scale
    p = psnr_db(vae.decode(z), x)
    assert p.mean().item() >= PSNR_MEAN_FLOOR_DB
    assert p.min().item() >= PSNR_MIN_FLOOR_DB


def test_taesdxl_shared_root_diffusers_folder_and_original_files_give_the_same_latents(taesdxl_path):
    x = synthetic_images(1, 32)
    sources = [taesdxl_path, taesdxl_path / "original", taesdxl_path / "original" / "taesdxl_decoder.safetensors"]
    latents = [load_vae(taesd_cfg(p)).encode(x) for p in sources]
    for z in latents[1:]:
        assert torch.equal(z, latents[0])


def test_original_layout_pth_files_load_like_safetensors(taesdxl_path, tmp_path):
    from safetensors.torch import load_file
    for part in ("encoder", "decoder"):
        torch.save(load_file(str(taesdxl_path / "original" / f"taesdxl_{part}.safetensors")), tmp_path / f"taesdxl_{part}.pth")
    x = synthetic_images(1, 32)
    z_pth = load_vae(taesd_cfg(tmp_path)).encode(x)
    z_st = load_vae(taesd_cfg(taesdxl_path / "original")).encode(x)
    assert torch.equal(z_pth, z_st)


def test_vamp_taesdxl_env_replaces_the_default_hub_id(taesdxl_path, monkeypatch):
    monkeypatch.setenv(TAESDXL_ENV, str(taesdxl_path))
    vae = load_vae(taesd_cfg(TAESDXL_HUB_ID))
    assert Path(vae.source) == taesdxl_path / "diffusers"
    assert vae.name == "taesdxl" and vae.scaling_factor == 1.0


def test_taesdxl_with_the_sdxl_scaling_factor_is_an_error(taesdxl_path):
    with pytest.raises(ValueError, match="scaling_factor=1.0"):
        load_vae(LatentConfig(vae="taesdxl", vae_path=str(taesdxl_path), scaling_factor=0.13025))


def tiny_autoencoder_kl(folder: Path) -> Path:
    from diffusers import AutoencoderKL
    torch.manual_seed(0)
    model = AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                          block_out_channels=(8, 8, 8, 8), layers_per_block=1, norm_num_groups=4, latent_channels=4)
    model.save_pretrained(folder)
    return folder


def test_sdxl_backend_stores_the_posterior_mean_times_0_13025(tmp_path):
    folder = tiny_autoencoder_kl(tmp_path / "vae")
    vae = load_vae(LatentConfig(vae="sdxl", vae_path=str(folder)))
    x = synthetic_images(2, 32)
    z = vae.encode(x)
    with torch.no_grad():
        mean = vae.module.encode(x).latent_dist.mean
        decoded = vae.module.decode(z / 0.13025).sample.clamp(-1, 1)
    assert vae.scaling_factor == 0.13025 and z.shape == (2, 4, 4, 4)
    torch.testing.assert_close(z, mean * 0.13025)
    torch.testing.assert_close(vae.decode(z), decoded)


def test_sdxl_full_pipeline_folder_uses_its_vae_subfolder(tmp_path):
    tiny_autoencoder_kl(tmp_path / "pipeline" / "vae")
    vae = load_vae(LatentConfig(vae="sdxl", vae_path=str(tmp_path / "pipeline")))
    assert Path(vae.source) == tmp_path / "pipeline" / "vae"


def test_missing_local_path_names_what_was_looked_for(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nope")):
        load_vae(taesd_cfg(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="taesdxl_encoder") as info:
        load_vae(taesd_cfg(tmp_path / "empty"))
    assert "config.json" in str(info.value)
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_vae(LatentConfig(vae="sdxl", vae_path=str(tmp_path / "empty")))


def test_wrong_weight_files_are_a_clear_error(tmp_path):
    save_file({"0.weight": torch.zeros(3, 3)}, str(tmp_path / "taesdxl_encoder.safetensors"))
    save_file({"1.weight": torch.zeros(3, 3)}, str(tmp_path / "taesdxl_decoder.safetensors"))
    with pytest.raises(ValueError, match="not TAESD-XL encoder/decoder weights"):
        load_vae(taesd_cfg(tmp_path))


def test_failed_hub_download_says_how_to_work_offline(monkeypatch):
    from diffusers import AutoencoderTiny

    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co'")

    monkeypatch.setattr(AutoencoderTiny, "from_pretrained", offline)
    monkeypatch.delenv(TAESDXL_ENV, raising=False)
    with pytest.raises(FileNotFoundError, match=TAESDXL_ENV) as info:
        load_vae(taesd_cfg(TAESDXL_HUB_ID))
    assert "madebyollin/taesdxl" in str(info.value) and "local folder" in str(info.value)


def test_unknown_backend_is_an_error():
    from vampdiffusion.config import ConfigError, load_config
    with pytest.raises(ConfigError, match="latents.vae must be one of 'sdxl', 'taesdxl'"):
        load_config("tiny", ["latents.vae=sd15"])
    assert math.isclose(vae_module.SCALING_FACTORS["sdxl"], 0.13025)
