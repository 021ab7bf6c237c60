"""Stochastic sampler steps that return their own Gaussian log-probability.

Each step maps ``x_t`` to ``x_prev`` given the network output. Passing ``prev_sample``
re-scores a stored transition with the *same* arithmetic that sampled it, so training
and sampling cannot drift apart. ``log_prob`` is the Gaussian log-density of
``prev_sample`` under ``N(mean, std²)``, **averaged** over every non-batch dimension
(as DDPO and Flow-GRPO do), shape ``[B]``.

Flow convention (SD3, FLUX, ShapeWorld): ``x_σ = (1 - σ) x_0 + σ ε``, network output
``v = ε - x_0``; ``sigma`` / ``sigma_prev`` are per-step noise levels (``sigma_prev <
sigma``). DDIM follows DDPO's ``ddim_step_with_logprob`` on an ε-predicting UNet.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

FLOW_STEPS = ("ode", "flow_sde", "dance_sde", "cps")


@dataclass
class StepOutput:
    prev_sample: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor | float
    log_prob: torch.Tensor  # [B]; zeros for deterministic steps
    pred_x0: torch.Tensor | None = None  # the clean sample the network predicts at this step


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, std) -> torch.Tensor:
    """log N(x; mean, std²), averaged over non-batch dims → ``[B]``."""
    std = torch.as_tensor(std, dtype=mean.dtype, device=mean.device)
    lp = -((x.detach() - mean) ** 2) / (2 * std**2) - torch.log(std) - 0.5 * math.log(2 * math.pi)
    return lp.mean(dim=tuple(range(1, lp.ndim)))


def _finish(mean, std, prev_sample, noise, pred_x0) -> StepOutput:
    if prev_sample is None:
        if noise is None:
            noise = torch.randn_like(mean)
        prev_sample = mean + std * noise
    return StepOutput(prev_sample, mean, std, gaussian_log_prob(prev_sample, mean, std), pred_x0)


def _deterministic(mean, pred_x0) -> StepOutput:
    return StepOutput(mean, mean, 0.0, torch.zeros(len(mean), dtype=mean.dtype, device=mean.device), pred_x0)


def ode_step(x, v, sigma, sigma_prev, **_) -> StepOutput:
    """Deterministic Euler step of the flow ODE (= FlowMatchEulerDiscreteScheduler.step)."""
    return _deterministic(x + (sigma_prev - sigma) * v, x - sigma * v)


def flow_sde_step(x, v, sigma, sigma_prev, *, noise_level=0.7, prev_sample=None, noise=None,
                  **_) -> StepOutput:
    """Flow-GRPO's SDE step (Liu et al. 2025, eq. 9) with noise level ``a``:
    ``σ_t = a·sqrt(σ / (1 - σ))``; at σ = 1 the ratio uses σ_prev instead (as Flow-GRPO)."""
    sigma, sigma_prev = float(sigma), float(sigma_prev)
    dt = sigma_prev - sigma
    std_t = noise_level * math.sqrt(sigma / (1 - (sigma_prev if sigma >= 1 else sigma)))
    mean = x * (1 + std_t**2 / (2 * sigma) * dt) + v * (1 + std_t**2 * (1 - sigma) / (2 * sigma)) * dt
    return _finish(mean, std_t * math.sqrt(-dt), prev_sample, noise, x - sigma * v)


def dance_sde_step(x, v, sigma, sigma_prev, *, eta=0.3, prev_sample=None, noise=None, **_) -> StepOutput:
    """DanceGRPO's SDE step (Xue et al. 2025): Euler mean plus a score correction,
    noise std ``η·sqrt(σ - σ_prev)``."""
    sigma, sigma_prev = float(sigma), float(sigma_prev)
    dsigma = sigma_prev - sigma
    x0 = x - sigma * v
    score = -(x - x0 * (1 - sigma)) / sigma**2
    mean = x + dsigma * v - 0.5 * eta**2 * score * dsigma
    return _finish(mean, eta * math.sqrt(-dsigma), prev_sample, noise, x0)


def cps_step(x, v, sigma, sigma_prev, *, noise_level=0.7, prev_sample=None, noise=None, **_) -> StepOutput:
    """Coefficients-preserving sampling (Wang & Yu 2025): keeps x_prev exactly on the
    ``(1-σ') x_0 + σ' ε`` path, injecting ``σ'·sin(aπ/2)`` of fresh noise."""
    sigma, sigma_prev = float(sigma), float(sigma_prev)
    std = sigma_prev * math.sin(noise_level * math.pi / 2)
    x0 = x - sigma * v
    eps = x + (1 - sigma) * v
    mean = x0 * (1 - sigma_prev) + eps * math.sqrt(max(sigma_prev**2 - std**2, 0.0))
    if std == 0.0:  # last step to σ' = 0 is deterministic
        return _deterministic(mean, x0)
    return _finish(mean, std, prev_sample, noise, x0)


def flow_step(kind: str, x, v, sigma, sigma_prev, **kw) -> StepOutput:
    """Dispatch on the step type: ``ode``, ``flow_sde``, ``dance_sde`` or ``cps``."""
    fns = {"ode": ode_step, "flow_sde": flow_sde_step, "dance_sde": dance_sde_step, "cps": cps_step}
    if kind not in fns:
        raise ValueError(f"unknown step type {kind!r}; expected one of {', '.join(FLOW_STEPS)}")
    return fns[kind](x, v, sigma, sigma_prev, **kw)


def flow_transition(step_type: str, x, v, i: int, timesteps, *, noise_level=0.7, eta=0.3, prev_sample=None,
                    noise=None, stochastic=True) -> StepOutput:
    """Step ``i`` of a flow schedule ``timesteps`` (σ, decreasing): the ODE where the step is
    not stochastic, else ``step_type``'s SDE (what every flow adapter's ``transition`` is)."""
    sigma, sigma_prev = timesteps[i], timesteps[i + 1]
    if not stochastic:
        return ode_step(x, v, sigma, sigma_prev)
    return flow_step(step_type, x, v, sigma, sigma_prev, noise_level=noise_level, eta=eta,
                     prev_sample=prev_sample, noise=noise)


def broadcast_level(t, x: torch.Tensor) -> torch.Tensor:
    """A noise level (scalar or ``[B]``) shaped to broadcast against ``x`` ``[B, ...]``."""
    t = torch.as_tensor(t, device=x.device, dtype=x.dtype)
    return t.reshape(-1, *([1] * (x.ndim - 1))) if t.ndim else t


def flow_add_noise(x0, noise, sigma) -> torch.Tensor:
    """Rectified flow's forward process ``x_σ = (1 - σ) x0 + σ ε`` (σ scalar or per sample)."""
    s = broadcast_level(sigma, x0)
    return (1 - s) * x0 + s * noise


class FlowTransitions:
    """The flow half of an adapter (ShapeWorld, SD3, FLUX): its step type and noise settings,
    and the contract's ``transition`` and ``add_noise`` built from the functions above."""

    def set_flow_step(self, step_type: str, noise_level: float, eta: float) -> None:
        if step_type not in FLOW_STEPS:
            raise ValueError(f"unknown step type {step_type!r}; expected one of {', '.join(FLOW_STEPS)}")
        self.step_type, self.noise_level, self.eta = step_type, noise_level, eta

    def transition(self, x, v, i, timesteps, prev_sample=None, noise=None, stochastic=True) -> StepOutput:
        return flow_transition(self.step_type, x, v, i, timesteps, noise_level=self.noise_level, eta=self.eta,
                               prev_sample=prev_sample, noise=noise, stochastic=stochastic)

    def add_noise(self, x0, noise, t) -> torch.Tensor:
        return flow_add_noise(x0, noise, t)


def ddim_step(x, eps, alpha_prod_t, alpha_prod_prev, *, eta=1.0, prev_sample=None,
              noise=None) -> StepOutput:
    """DDIM step with variance ``η²·β̃`` (Song et al. 2021, eq. 12), as DDPO's
    ``ddim_step_with_logprob``; ``alpha_prod_*`` are ᾱ at t and at the previous step."""
    beta_t = 1 - alpha_prod_t
    x0 = (x - beta_t**0.5 * eps) / alpha_prod_t**0.5
    variance = (1 - alpha_prod_prev) / beta_t * (1 - alpha_prod_t / alpha_prod_prev)
    std = eta * variance**0.5
    mean = alpha_prod_prev**0.5 * x0 + (1 - alpha_prod_prev - std**2) ** 0.5 * eps
    if float(std) == 0.0:
        return _deterministic(mean, x0)
    return _finish(mean, std, prev_sample, noise, x0)
