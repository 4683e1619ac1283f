import pytest
import torch
from scipy.stats import chisquare

from vampdiffusion.config import DiffusionConfig
from vampdiffusion.diffusion.schedule import NoiseSchedule
from vampdiffusion.diffusion.timesteps import (sample_lognormal, sample_logit_normal, sample_timesteps,
                                              sample_uniform)


@pytest.fixture(scope="module")
def schedule():
    return NoiseSchedule(DiffusionConfig())


def test_uniform_passes_chi_square():
    t = sample_uniform(100_000, 1000, torch.Generator().manual_seed(1))
    counts = torch.bincount(t // 50, minlength=20).numpy()       # 20 bins of 50 steps
    assert chisquare(counts).pvalue > 0.01
    assert t.min().item() == 0 and t.max().item() == 999


def test_lognormal_edm_defaults_put_under_one_percent_above_900(schedule):
    t = sample_lognormal(100_000, schedule, -1.2, 1.2, torch.Generator().manual_seed(2))
    assert (t > 900).float().mean().item() < 0.01
    assert (t < 100).float().mean().item() > 0.5                  # mass sits at low noise


def test_lognormal_picks_the_nearest_step_in_log_sigma(schedule):
    log_sigma = schedule.edm_log_sigma()
    for k in (0, 10, 500, 997):
        t = sample_lognormal(100, schedule, log_sigma[k].item(), 1e-9, torch.Generator().manual_seed(3))
        assert (t == k).all()


def test_lognormal_beyond_the_largest_finite_sigma_maps_to_terminal_step(schedule):
    t = sample_lognormal(100, schedule, 20.0, 0.1, torch.Generator().manual_seed(4))
    assert (t == 999).all()


def test_logit_normal_is_centred_and_shifts_with_m():
    t0 = sample_logit_normal(50_000, 1000, 0.0, 1.0, torch.Generator().manual_seed(5)).float()
    t1 = sample_logit_normal(50_000, 1000, 1.0, 1.0, torch.Generator().manual_seed(5)).float()
    assert abs(t0.median().item() - 500) < 10
    assert abs(t1.median().item() - 1000 * torch.sigmoid(torch.tensor(1.0)).item()) < 10
    assert t0.min().item() >= 0 and t0.max().item() <= 999


@pytest.mark.parametrize("name", ["uniform", "lognormal", "logit_normal"])
def test_sample_timesteps_dispatches_and_returns_long_indices(schedule, name):
    cfg = DiffusionConfig(timestep_sampling=name)
    t = sample_timesteps(1000, schedule, cfg, torch.Generator().manual_seed(6))
    assert t.dtype == torch.long and t.shape == (1000,)
    assert 0 <= t.min().item() and t.max().item() <= 999


def test_unknown_timestep_sampler_is_rejected(schedule):
    with pytest.raises(ValueError, match="logit_normal"):
        sample_timesteps(4, schedule, DiffusionConfig(timestep_sampling="beta"))
