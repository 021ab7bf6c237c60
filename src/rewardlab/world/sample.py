"""Seeded sampling from the ShapeWorld model: Euler steps of the flow ODE with CFG.

(The trajectory-recording sampler with SDE steps and log-probs is the Generator layer's;
this is the plain sampler the world uses to make pictures and evaluate itself.)
"""

from __future__ import annotations

from typing import Sequence

import torch

from .model import ShapeWorldModel


def seeded_noise(seeds: Sequence[int], shape: tuple[int, ...], device="cpu") -> torch.Tensor:
    """One independent N(0, I) draw per seed, so a sample never depends on its batch mates."""
    return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(int(s)))
                        for s in seeds]).to(device)


def timesteps(steps: int) -> torch.Tensor:
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    return torch.linspace(1.0, 0.0, steps + 1)


@torch.no_grad()
def sample(model: ShapeWorldModel, prompts: Sequence[str], seeds: Sequence[int], steps: int = 20,
           guidance: float = 3.0, batch_size: int = 64, progress=None) -> torch.Tensor:
    """Images ``[B, 3, H, W]`` in [0, 1] for ``prompts``; ``seeds[i]`` fixes image i."""
    if len(prompts) != len(seeds):
        raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
    if not prompts:
        raise ValueError("no prompts to sample")
    out = []
    for i in range(0, len(prompts), batch_size):
        out.append(_sample_batch(model, list(prompts[i:i + batch_size]), seeds[i:i + batch_size],
                                 steps, guidance))
        if progress is not None:
            progress(len(out[-1]))
    return torch.cat(out)


def _sample_batch(model, prompts, seeds, steps, guidance):
    res = model.config.resolution
    x = seeded_noise(seeds, (3, res, res), model.device)
    cond = model.encode(prompts + [""] * len(prompts) if guidance != 1.0 else prompts)
    ts = timesteps(steps).to(model.device)
    for t, t_next in zip(ts[:-1], ts[1:]):
        x = x + (t_next - t) * model.guided_velocity(x, t, cond, guidance)
    return ((x.clamp(-1, 1) + 1) / 2).cpu()


def sample_fn(weights=None, steps: int = 20, guidance: float = 3.0, device: str = "cpu"):
    """A ``(prompts, seeds) -> uint8 [B, H, W, 3]`` function over the ShapeWorld model."""
    from ..images import to_uint8

    model = ShapeWorldModel.load(weights, device=device)

    def fn(prompts, seeds):
        return to_uint8(sample(model, list(prompts), list(seeds), steps=steps, guidance=guidance))

    return fn
