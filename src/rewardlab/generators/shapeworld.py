"""The embedded ShapeWorld model as a Generator (pixel-space rectified flow)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..world.model import ShapeWorldModel
from ..world.sample import timesteps
from .base import TrajectorySampler, check_prompts
from .steps import FLOW_STEPS, StepOutput, flow_step, ode_step


@dataclass
class FlowCond:
    states: torch.Tensor  # [B or 2B, T, D] text states (conditional first, then unconditional)
    mask: torch.Tensor
    guidance: float
    timesteps: torch.Tensor  # [T+1] noise levels σ, from 1 to 0


class ShapeWorldGenerator(TrajectorySampler):
    """``step_type``: ``flow_sde`` (Flow-GRPO, noise level ``noise_level``), ``dance_sde``
    (DanceGRPO, ``eta``), ``cps`` or ``ode``. Negative prompts replace the empty
    unconditional prompt of classifier-free guidance."""

    name = "shapeworld"

    def __init__(self, model: ShapeWorldModel | None = None, step_type: str = "flow_sde",
                 noise_level: float = 0.7, eta: float = 0.3):
        if step_type not in FLOW_STEPS:
            raise ValueError(f"unknown step type {step_type!r}; expected one of {', '.join(FLOW_STEPS)}")
        self.model = model or ShapeWorldModel.load()
        self.step_type, self.noise_level, self.eta = step_type, noise_level, eta

    @property
    def denoiser(self) -> torch.nn.Module:
        """The network LoRA adapters attach to."""
        return self.model.unet

    @property
    def device(self) -> torch.device:
        return self.model.device

    def latent_shape(self, height=None, width=None) -> tuple[int, int, int]:
        res = self.model.config.resolution
        if (height or res) != res or (width or res) != res:
            raise ValueError(f"the ShapeWorld model samples {res}x{res} images, not {height}x{width}")
        return (3, res, res)

    def condition(self, prompts, guidance: float, steps: int, negative_prompts=None) -> FlowCond:
        prompts = check_prompts(prompts)
        if guidance != 1.0:
            prompts = prompts + (list(negative_prompts) if negative_prompts else [""] * len(prompts))
        states, mask = self.model.encode(prompts)
        return FlowCond(states, mask, guidance, timesteps(steps))

    def step(self, x_t, i, cond: FlowCond, prev_sample=None, noise=None, stochastic=True) -> StepOutput:
        sigma, sigma_prev = cond.timesteps[i], cond.timesteps[i + 1]
        v = self.model.guided_velocity(x_t, sigma.to(x_t.device), (cond.states, cond.mask), cond.guidance)
        if not stochastic:
            return ode_step(x_t, v, sigma, sigma_prev)
        return flow_step(self.step_type, x_t, v, sigma, sigma_prev, noise_level=self.noise_level,
                         eta=self.eta, prev_sample=prev_sample, noise=noise)

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return (x.clamp(-1, 1) + 1) / 2
