"""Sampler steps against diffusers' schedulers and hand-computed values."""

import math

import pytest
import torch
from diffusers import DDIMScheduler, FlowMatchEulerDiscreteScheduler

from rewardlab.generators.steps import (cps_step, dance_sde_step, ddim_step, flow_sde_step, flow_step,
                                        gaussian_log_prob, ode_step)


def test_gaussian_log_prob_by_hand():
    x = torch.tensor([[1.0, 3.0]])
    mean = torch.tensor([[0.0, 1.0]])
    # per dim: -(d²)/(2·4) - log 2 - ½ log 2π with d = 1, 2 → mean of the two
    expect = (-(1 / 8) - (4 / 8)) / 2 - math.log(2) - 0.5 * math.log(2 * math.pi)
    assert gaussian_log_prob(x, mean, 2.0).item() == pytest.approx(expect)


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_ddim_step_equals_diffusers(eta):
    sched = DDIMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", clip_sample=False,
                          set_alpha_to_one=False)
    sched.set_timesteps(10)
    g = torch.Generator().manual_seed(0)
    x, eps, noise = (torch.randn(2, 4, 8, 8, generator=g) for _ in range(3))
    for k, t in enumerate(sched.timesteps):
        prev_t = t - sched.config.num_train_timesteps // 10
        a_t = sched.alphas_cumprod[t]
        a_prev = sched.alphas_cumprod[prev_t] if prev_t >= 0 else sched.final_alpha_cumprod
        ours = ddim_step(x, eps, a_t, a_prev, eta=eta, noise=noise)
        theirs = sched.step(eps, t, x, eta=eta, variance_noise=noise).prev_sample
        assert torch.allclose(ours.prev_sample, theirs, atol=1e-5), (k, t)


def test_flow_steps_with_zero_noise_equal_flow_match_euler():
    sched = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0)
    sched.set_timesteps(8)
    g = torch.Generator().manual_seed(1)
    x, v = torch.randn(2, 3, 4, 4, generator=g), torch.randn(2, 3, 4, 4, generator=g)
    for i, t in enumerate(sched.timesteps):
        s, s_prev = sched.sigmas[i], sched.sigmas[i + 1]
        theirs = sched.step(v, t, x).prev_sample
        assert torch.allclose(ode_step(x, v, s, s_prev).prev_sample, theirs, atol=1e-6)
        if s_prev > 0:
            sde = flow_sde_step(x, v, s, s_prev, noise_level=0.0, noise=torch.zeros_like(x))
            assert torch.allclose(sde.mean, theirs, atol=1e-6)
            assert torch.allclose(dance_sde_step(x, v, s, s_prev, eta=0.0, noise=torch.zeros_like(x)).mean,
                                  theirs, atol=1e-6)


@pytest.mark.parametrize("kind", ["flow_sde", "dance_sde", "cps"])
def test_rescoring_a_stored_transition_gives_the_same_log_prob(kind):
    g = torch.Generator().manual_seed(2)
    x, v = torch.randn(3, 3, 4, 4, generator=g), torch.randn(3, 3, 4, 4, generator=g)
    out = flow_step(kind, x, v, 0.8, 0.6, noise=torch.randn(3, 3, 4, 4, generator=g))
    again = flow_step(kind, x, v, 0.8, 0.6, prev_sample=out.prev_sample)
    assert torch.equal(out.log_prob, again.log_prob)
    assert torch.allclose(out.pred_x0, x - 0.8 * v)


def test_cps_keeps_the_flow_marginal_coefficients():
    # x at σ=0.8 built from known x0, ε; with the true velocity the CPS mean plus noise
    # stays on (1-σ')x0 + σ'·(unit-variance mix)
    g = torch.Generator().manual_seed(3)
    x0, eps = torch.randn(1, 1000, generator=g), torch.randn(1, 1000, generator=g)
    x = 0.2 * x0 + 0.8 * eps
    out = cps_step(x, eps - x0, 0.8, 0.5, noise_level=0.5, noise=torch.randn(1, 1000, generator=g))
    resid = (out.prev_sample - 0.5 * x0) / 0.5
    assert resid.std().item() == pytest.approx(1.0, abs=0.08)


def test_unknown_step_type():
    with pytest.raises(ValueError, match="unknown step type"):
        flow_step("heun", torch.zeros(1, 1), torch.zeros(1, 1), 0.5, 0.4)
