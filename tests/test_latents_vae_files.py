"""Unreadable VAE weight files are one clear error naming the file; where a moved model looks for its VAE."""
import pytest
import torch

from vampdiffusion.config import LatentConfig
from vampdiffusion.latents.vae import TAESDXL_ENV, load_vae, vae_sources


def taesd_cfg(path) -> LatentConfig:
    return LatentConfig(vae="taesdxl", vae_path=str(path), scaling_factor=1.0)


@pytest.mark.parametrize("suffix,content", [
    (".pth", b"not a pickle, not a zip"),
    (".safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{\"truncated"),
])
def test_unreadable_original_layout_files_name_the_file(tmp_path, suffix, content):
    for part in ("encoder", "decoder"):
        (tmp_path / f"taesdxl_{part}{suffix}").write_bytes(content)
    with pytest.raises(ValueError) as info:
        load_vae(taesd_cfg(tmp_path))
    msg = str(info.value)
    assert f"{tmp_path / ('taesdxl_encoder' + suffix)} is not readable {suffix} weights" in msg
    assert "download the TAESD-XL weights again" in msg and "\n" not in msg


def test_pickle_with_code_is_refused_not_run(tmp_path):
    from fractions import Fraction

    # any class outside torch's weights-only allow-list stands for a pickle that would run code
    for part in ("encoder", "decoder"):
        torch.save({"0.weight": Fraction(1, 3)}, tmp_path / f"taesdxl_{part}.pth")
    with pytest.raises(ValueError, match=r"is not readable \.pth weights \(a pickle holding objects other than "
                                         r"tensors, refused because loading it could run code\)"):
        load_vae(taesd_cfg(tmp_path))


def test_vae_sources_order(tmp_path, monkeypatch):
    monkeypatch.setenv(TAESDXL_ENV, str(tmp_path / "env"))
    missing = taesd_cfg(tmp_path / "gone")
    assert vae_sources(missing) == [(f"${TAESDXL_ENV}", str(tmp_path / "env")), ("the hub id", "madebyollin/taesdxl")]
    assert vae_sources(missing, str(tmp_path / "mine")) == [("--vae-path", str(tmp_path / "mine"))]
    assert vae_sources(taesd_cfg(tmp_path)) == [("latents.vae_path", str(tmp_path))]          # exists here
    assert vae_sources(LatentConfig(vae="sdxl", vae_path=str(tmp_path / "gone"))) == [
        ("the hub id", "madebyollin/sdxl-vae-fp16-fix")]                                       # no env for sdxl
