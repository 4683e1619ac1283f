"""Samplers driven by closed-form ideal v-predictors, and cross-checked against diffusers."""
import math

import pytest
import torch

from vampdiffusion.config import DiffusionConfig
from vampdiffusion.diffusion.samplers import (SAMPLERS, sample, sample_dpmpp2m, sample_euler,
                                             trailing_timesteps)
from vampdiffusion.diffusion.schedule import NoiseSchedule

ALPHA_BAR_MIN = 2.0 ** -24
S = NoiseSchedule(DiffusionConfig())
X_STAR = torch.tensor([1.5, -0.7, 0.2, 3.0])
MU, STD = 1.0, 0.8                                                # toy data N(μ, s² I)


def point_mass_v(x, t):
    # data = δ(x*): x0̂ = x*, v = (α x_t − x0̂)/σ
    a, s = S.coef(S.alpha, t, x), S.coef(S.sigma, t, x)
    return (a * x - X_STAR) / s


def gaussian_v(x, t):
    # data = N(μ, s²): x0̂ = μ + α s²/(α² s² + σ²) (x_t − α μ)
    a, s = S.coef(S.alpha, t, x), S.coef(S.sigma, t, x)
    x0 = MU + a * STD ** 2 / (a ** 2 * STD ** 2 + s ** 2) * (x - a * MU)
    return (a * x - x0) / s


def gaussian_exact(z, steps):
    """Exact probability-flow map from x_T = z down to the last trailing step, then x0̂ there."""
    t_last = trailing_timesteps(1000, steps)[-1]
    a, s = S.alpha[t_last].item(), S.sigma[t_last].item()
    return MU + a * STD ** 2 / math.sqrt(a ** 2 * STD ** 2 + s ** 2) * z


def noise(n=4096, seed=0):
    return torch.randn(n, 4, generator=torch.Generator().manual_seed(seed))


def test_trailing_spacing_starts_at_terminal_step():
    assert trailing_timesteps(1000, 10) == [999, 899, 799, 699, 599, 499, 399, 299, 199, 99]
    assert trailing_timesteps(1000, 1) == [999]
    assert trailing_timesteps(1000, 1000) == list(range(999, -1, -1))
    assert trailing_timesteps(1000, 28)[:3] == [999, 963, 928]


@pytest.mark.parametrize("steps", [0, 1001])
def test_steps_outside_1_to_T_are_rejected(steps):
    with pytest.raises(ValueError, match="steps must be in 1..1000"):
        trailing_timesteps(1000, steps)


@pytest.mark.parametrize("name", SAMPLERS)
@pytest.mark.parametrize("steps", [10, 28, 50])
def test_samplers_land_on_the_point_mass(name, steps):
    out = sample(name, point_mass_v, noise(), S, steps, ALPHA_BAR_MIN)
    assert (out - X_STAR).abs().max().item() < 1e-5


# Measured max |x − exact| over 4096×4 draws (float32): DDIM/Euler 0.286 / 0.156 / 0.100,
# DPM++ 2M 0.019 / 0.021 / 0.014 at 10 / 28 / 50 steps. Tolerances = measured + ~25–40%.
MAX_ERR = {"ddim": {10: 0.38, 28: 0.21, 50: 0.13}, "euler": {10: 0.38, 28: 0.21, 50: 0.13},
           "dpmpp2m": {10: 0.03, 28: 0.03, 50: 0.02}}
# Measured std / exact std: DDIM/Euler 0.908 / 0.954 / 0.971, DPM++ 2M 0.994 / 1.006 / 1.004.
STD_TOL = {"ddim": {10: 0.12, 28: 0.06, 50: 0.04}, "euler": {10: 0.12, 28: 0.06, 50: 0.04},
           "dpmpp2m": {10: 0.01, 28: 0.01, 50: 0.01}}


@pytest.mark.parametrize("name", SAMPLERS)
@pytest.mark.parametrize("steps", [10, 28, 50])
def test_samplers_reproduce_the_gaussian(name, steps):
    z = noise()
    out = sample(name, gaussian_v, z, S, steps, ALPHA_BAR_MIN)
    exact = gaussian_exact(z, steps)
    assert (out - exact).abs().max().item() < MAX_ERR[name][steps]
    assert abs(out.mean().item() - exact.mean().item()) < 2e-3
    assert abs(out.std().item() / exact.std().item() - 1) < STD_TOL[name][steps]


def test_first_order_samplers_converge_with_steps():
    z = noise()
    errs = [(sample("ddim", gaussian_v, z, S, n, ALPHA_BAR_MIN) - gaussian_exact(z, n)).abs().max().item()
            for n in (10, 50, 250)]
    assert errs[0] > errs[1] > errs[2]
    assert errs[2] < 0.05


def test_dpmpp2m_beats_ddim_at_28_steps():
    z = noise()
    err = {n: (sample(n, gaussian_v, z, S, 28, ALPHA_BAR_MIN) - gaussian_exact(z, 28)).abs().max().item()
           for n in ("ddim", "dpmpp2m")}
    assert err["dpmpp2m"] < 0.25 * err["ddim"]


def test_euler_equals_ddim_up_to_the_terminal_clamp():
    # In EDM coordinates DDIM (η = 0) *is* the Euler step of the probability-flow ODE.
    z = noise()
    ddim = sample("ddim", gaussian_v, z, S, 28, ALPHA_BAR_MIN)
    euler = sample("euler", gaussian_v, z, S, 28, ALPHA_BAR_MIN)
    assert (ddim - euler).abs().max().item() < 1e-3


def test_one_step_returns_the_terminal_x0_prediction():
    # at t = T−1: α = 0, σ = 1, so x0̂ = −v = μ for the Gaussian
    for name in SAMPLERS:
        out = sample(name, gaussian_v, noise(64), S, 1, ALPHA_BAR_MIN)
        assert (out - MU).abs().max().item() < 1e-3


@pytest.mark.parametrize("sampler", [sample_euler, sample_dpmpp2m])
def test_terminal_clamp_is_needed_by_euler_and_dpm(sampler):
    with pytest.raises((ZeroDivisionError, ValueError)):         # x/α_T with α_T = 0; ln(0) in λ_T
        sampler(gaussian_v, noise(64), S, 10, 0.0)
    clamped = sampler(gaussian_v, noise(64), S, 10, ALPHA_BAR_MIN)
    assert torch.isfinite(clamped).all()


def test_ddim_needs_no_clamp_at_the_terminal_step():
    out = sample("ddim", gaussian_v, noise(64), S, 10, 0.0)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", SAMPLERS)
def test_sampler_calls_the_model_once_per_step_with_trailing_timesteps(name):
    seen = []

    def spy(x, t):
        seen.append(int(t[0]))
        return gaussian_v(x, t)

    sample(name, spy, noise(8), S, 7, ALPHA_BAR_MIN)
    assert seen == trailing_timesteps(1000, 7)


def test_unknown_sampler_is_rejected():
    with pytest.raises(ValueError, match="dpmpp2m"):
        sample("heun", gaussian_v, noise(8), S, 4, ALPHA_BAR_MIN)


# ----------------------------------------------------------------------------
# Cross-check against diffusers' schedulers (v_prediction, zero-SNR, trailing)
# ----------------------------------------------------------------------------

DIFFUSERS_KW = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="linear",
                    prediction_type="v_prediction", rescale_betas_zero_snr=True, timestep_spacing="trailing")


def run_diffusers(scheduler, steps, z):
    scheduler.set_timesteps(steps)
    x = z * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        v = gaussian_v(scheduler.scale_model_input(x, t), torch.full((x.shape[0],), int(t)))
        x = scheduler.step(v, t, x).prev_sample
    return x


def diffusers_scheduler(name):
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler
    if name == "ddim":
        return DDIMScheduler(**DIFFUSERS_KW, set_alpha_to_one=True, clip_sample=False)
    if name == "euler":
        return EulerDiscreteScheduler(**DIFFUSERS_KW, final_sigmas_type="zero")
    return DPMSolverMultistepScheduler(**DIFFUSERS_KW, algorithm_type="dpmsolver++", solver_order=2,
                                       final_sigmas_type="zero")


# diffusers' DDIM steps to t − T//n, which is the next trailing step only when n divides T.
@pytest.mark.parametrize("name,steps", [("ddim", 10), ("ddim", 50), ("euler", 10), ("euler", 28),
                                        ("euler", 50), ("dpmpp2m", 10), ("dpmpp2m", 28), ("dpmpp2m", 50)])
def test_sampler_matches_diffusers(name, steps):
    z = noise(256)
    ours = sample(name, gaussian_v, z, S, steps, ALPHA_BAR_MIN)
    theirs = run_diffusers(diffusers_scheduler(name), steps, z)
    assert (ours - theirs).abs().max().item() < 1e-4
