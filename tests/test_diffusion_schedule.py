import pytest
import torch
from diffusers.schedulers.scheduling_ddim import rescale_zero_terminal_snr as diffusers_rescale
from diffusers import DDPMScheduler

from vampdiffusion.config import DiffusionConfig
from vampdiffusion.diffusion.schedule import NoiseSchedule, make_betas, rescale_zero_terminal_snr

SCHEDULES = ["linear", "scaled_linear", "cosine"]
DIFFUSERS_NAME = {"linear": "linear", "scaled_linear": "scaled_linear", "cosine": "squaredcos_cap_v2"}


@pytest.mark.parametrize("name", SCHEDULES)
def test_betas_equal_diffusers(name):
    ours = make_betas(DiffusionConfig(beta_schedule=name))
    ref = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                        beta_schedule=DIFFUSERS_NAME[name]).betas.double()
    assert (ours - ref).abs().max().item() < 1e-6


@pytest.mark.parametrize("name", SCHEDULES)
def test_zero_terminal_snr_equals_diffusers(name):
    betas = make_betas(DiffusionConfig(beta_schedule=name))
    ours = rescale_zero_terminal_snr(betas)
    ref = diffusers_rescale(betas.clone())
    assert (ours - ref).abs().max().item() <= 1e-6


@pytest.mark.parametrize("name", SCHEDULES)
def test_zero_terminal_snr_makes_last_alpha_bar_exactly_zero(name):
    s = NoiseSchedule(DiffusionConfig(beta_schedule=name))
    assert s.alpha_bar[-1].item() == 0.0
    assert s.snr[-1].item() == 0.0
    assert s.sigma[-1].item() == 1.0


@pytest.mark.parametrize("name", SCHEDULES)
def test_zero_terminal_snr_keeps_first_alpha_bar(name):
    on = NoiseSchedule(DiffusionConfig(beta_schedule=name))
    off = NoiseSchedule(DiffusionConfig(beta_schedule=name, zero_terminal_snr=False))
    assert abs(on.alpha_bar[0].item() - off.alpha_bar[0].item()) < 1e-12
    assert off.alpha_bar[-1].item() > 0


@pytest.mark.parametrize("name", SCHEDULES)
def test_tables_are_finite_and_monotone(name):
    s = NoiseSchedule(DiffusionConfig(beta_schedule=name))
    for table in (s.betas, s.alpha_bar, s.alpha, s.sigma, s.snr):
        assert torch.isfinite(table).all()
        assert table.shape == (1000,)
    assert (s.alpha_bar[1:] < s.alpha_bar[:-1]).all()
    assert torch.allclose(s.alpha ** 2 + s.sigma ** 2, torch.ones(1000, dtype=torch.float64))


def test_recovery_of_x0_and_eps_from_v_at_every_t_including_terminal():
    s = NoiseSchedule(DiffusionConfig())
    g = torch.Generator().manual_seed(0)
    t = torch.arange(1000)                                        # every step, T−1 included
    x0 = torch.randn(1000, 4, 2, 2, generator=g)
    eps = torch.randn(1000, 4, 2, 2, generator=g)
    x_t = s.q_sample(x0, t, eps)
    v = s.v_target(x0, t, eps)
    assert torch.isfinite(x_t).all() and torch.isfinite(v).all()
    assert (s.x0_from_v(x_t, t, v) - x0).abs().max().item() < 1e-5
    assert (s.eps_from_v(x_t, t, v) - eps).abs().max().item() < 1e-5


def test_terminal_step_is_pure_noise_and_v_is_minus_x0():
    s = NoiseSchedule(DiffusionConfig())
    x0, eps = torch.full((1, 3), 2.0), torch.full((1, 3), -0.5)
    t = torch.tensor([999])
    assert torch.equal(s.q_sample(x0, t, eps), eps)
    assert torch.equal(s.v_target(x0, t, eps), -x0)


def test_unknown_beta_schedule_is_rejected_with_the_choices():
    with pytest.raises(ValueError, match="scaled_linear"):
        NoiseSchedule(DiffusionConfig(beta_schedule="quadratic"))
