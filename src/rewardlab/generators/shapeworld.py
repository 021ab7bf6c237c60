"""The embedded ShapeWorld model as a Generator (pixel-space rectified flow)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..world.model import ShapeWorldModel
from .base import (Trajectory, check_prompts, per_sample_generators, per_sample_randn,
                   stochastic_window)
from .steps import FLOW_STEPS, StepOutput, flow_step, ode_step


@dataclass
class FlowCond:
    states: torch.Tensor  # [B or 2B, T, D] text states (conditional first, then unconditional)
    mask: torch.Tensor
    guidance: float
    sigmas: torch.Tensor  # [T+1]


class ShapeWorldGenerator:
    """``step_type``: ``flow_sde`` (Flow-GRPO, noise level ``noise_level``), ``dance_sde``
    (DanceGRPO, ``eta``), ``cps`` or ``ode``."""

    name = "shapeworld"

    def __init__(self, model: ShapeWorldModel | None = None, step_type: str = "flow_sde",
                 noise_level: float = 0.7, eta: float = 0.3):
        if step_type not in FLOW_STEPS:
            raise ValueError(f"unknown step type {step_type!r}; expected one of {', '.join(FLOW_STEPS)}")
        self.model = model or ShapeWorldModel.load()
        self.step_type, self.noise_level, self.eta = step_type, noise_level, eta

    def condition(self, prompts: Sequence[str], guidance: float, steps: int) -> FlowCond:
        prompts = check_prompts(prompts)
        use_cfg = guidance != 1.0
        states, mask = self.model.encode(prompts + [""] * len(prompts) if use_cfg else prompts)
        return FlowCond(states, mask, guidance, torch.linspace(1.0, 0.0, steps + 1))

    def velocity(self, x: torch.Tensor, sigma: torch.Tensor, cond: FlowCond) -> torch.Tensor:
        if cond.guidance == 1.0:
            return self.model.velocity(x, sigma.expand(len(x)), (cond.states, cond.mask))
        v_c, v_u = self.model.velocity(torch.cat([x, x]), sigma.expand(2 * len(x)),
                                       (cond.states, cond.mask)).chunk(2)
        return v_u + cond.guidance * (v_c - v_u)

    def step(self, x_t, i, cond: FlowCond, prev_sample=None, noise=None, stochastic=True) -> StepOutput:
        sigma, sigma_prev = cond.sigmas[i], cond.sigmas[i + 1]
        v = self.velocity(x_t, sigma.to(x_t.device), cond)
        if not stochastic:
            return ode_step(x_t, v, sigma, sigma_prev)
        return flow_step(self.step_type, x_t, v, sigma, sigma_prev, noise_level=self.noise_level,
                         eta=self.eta, prev_sample=prev_sample, noise=noise)

    def sample(self, prompts, *, noise=None, seeds=None, steps=20, guidance=3.0, stochastic=True,
               window: tuple[int, int] | None = None, grad: bool = False) -> Trajectory:
        prompts = check_prompts(prompts)
        mask = stochastic_window(steps, stochastic, window)
        if seeds is None:
            seeds = torch.randint(0, 2**31 - 1, (len(prompts),)).tolist()
        if len(seeds) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
        gens = per_sample_generators(seeds)
        res = self.model.config.resolution
        shape = (3, res, res)
        device = self.model.device
        x = per_sample_randn(gens, shape, torch.empty(0, device=device)) if noise is None else noise.to(device)
        if tuple(x.shape) != (len(prompts), *shape):
            raise ValueError(f"noise must have shape {(len(prompts), *shape)}, got {tuple(x.shape)}")
        with torch.set_grad_enabled(grad):
            cond = self.condition(prompts, guidance, steps)
            latents, log_probs, x0s = [x], [], []
            for i in range(steps):
                eps = per_sample_randn(gens, shape, x) if mask[i] else None
                out = self.step(x, i, cond, noise=eps, stochastic=bool(mask[i]))
                x0s.append(out.pred_x0)
                x = out.prev_sample
                latents.append(x)
                log_probs.append(out.log_prob)
        images = (x.clamp(-1, 1) + 1) / 2
        return Trajectory(prompts, torch.stack(latents, 1), cond.sigmas, torch.stack(log_probs, 1),
                          mask, images, torch.stack(x0s, 1), guidance, list(seeds))

    def log_prob(self, traj: Trajectory, step_indices: Sequence[int]) -> torch.Tensor:
        """Recompute ``log p(x_{i+1} | x_i)`` for the given steps (with gradients)."""
        cond = self.condition(traj.prompts, traj.guidance, traj.num_steps)
        out = []
        for i in step_indices:
            x_t, x_prev = traj.latents[:, i], traj.latents[:, i + 1]
            out.append(self.step(x_t, i, cond, prev_sample=x_prev, stochastic=bool(traj.stochastic[i])).log_prob)
        return torch.stack(out, 1)
