"""The embedded ShapeWorld model as a Generator (pixel-space rectified flow).

Its images are what ``rewardlab generate`` and ``eval geneval`` show: ``generate_images``
with the ODE step gives, for the same seeds, steps and guidance, bitwise the images of the
Euler sampler that ``world/sample.py`` held before (a test keeps that loop as the oracle).
"""

from __future__ import annotations

import torch

from ..world.model import ShapeWorldModel
from . import DEFAULT_GUIDANCE
from .base import Cond, TrajectorySampler, check_prompts, uncond_prompts
from .steps import FlowTransitions


def flow_timesteps(steps: int) -> torch.Tensor:
    """Uniform noise levels σ from 1 to 0 (``steps + 1`` of them)."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    return torch.linspace(1.0, 0.0, steps + 1)


class ShapeWorldGenerator(FlowTransitions, TrajectorySampler):
    """``step_type``: ``flow_sde`` (Flow-GRPO, noise level ``noise_level``), ``dance_sde``
    (DanceGRPO, ``eta``), ``cps`` or ``ode``. Negative prompts replace the empty
    unconditional prompt of classifier-free guidance."""

    name = "shapeworld"
    default_guidance = DEFAULT_GUIDANCE

    def __init__(self, model: ShapeWorldModel | None = None, step_type: str = "flow_sde",
                 noise_level: float = 0.7, eta: float = 0.3):
        self.set_flow_step(step_type, noise_level, eta)
        self.model = model or ShapeWorldModel.load()

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

    @torch.no_grad()
    def condition(self, prompts, negative_prompts=None) -> Cond:
        """Prompts and their unconditional side encoded in one text-encoder pass."""
        prompts = check_prompts(prompts)
        negs = uncond_prompts(prompts, negative_prompts)
        states, mask = self.model.encode(prompts + negs)
        n = len(prompts)
        return Cond(prompts, {"states": states[:n], "mask": mask[:n]}, {"states": states[n:], "mask": mask[n:]},
                    None if negative_prompts is None else negs)

    def denoise(self, x, t, cond: Cond) -> torch.Tensor:
        """Velocity ``ε - x0`` at noise level σ = ``t`` (scalar or ``[B]``)."""
        t = torch.as_tensor(t, device=x.device)
        t = t.expand(len(x)) if t.ndim == 0 else t
        return self.model.velocity(x, t, (cond.pos["states"], cond.pos["mask"]))

    def schedule(self, steps: int, shape=None) -> torch.Tensor:
        return flow_timesteps(steps)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return images.to(self.device) * 2 - 1

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return (x.clamp(-1, 1) + 1) / 2
