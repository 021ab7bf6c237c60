"""TEMPORARY shim: sampling lives in the Generator layer now.

Use ``rewardlab.generators.load_generator("shapeworld")`` (or ``ShapeWorldGenerator``) with
``rewardlab.generators.sampling.generate_images``; same seeds, steps and guidance give
bitwise the images this module's Euler loop gave. These two wrappers only keep the CLI
commands working until they move to the Generator layer (issue 9); delete this file then.
They import upwards (``world`` → ``generators``), which the layering otherwise forbids.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .model import ShapeWorldModel


def sample(model: ShapeWorldModel, prompts: Sequence[str], seeds: Sequence[int], steps: int = 20,
           guidance: float = 3.0, batch_size: int = 64, progress=None) -> torch.Tensor:
    """Deprecated: ``generate_images(ShapeWorldGenerator(model, step_type="ode"), ...)``."""
    from ..generators.sampling import generate_images
    from ..generators.shapeworld import ShapeWorldGenerator

    return generate_images(ShapeWorldGenerator(model, step_type="ode"), prompts, seeds, steps=steps,
                           guidance=guidance, batch_size=batch_size, progress=progress)


def sample_fn(weights=None, steps: int = 20, guidance: float = 3.0, device: str = "cpu"):
    """Deprecated: a ``(prompts, seeds) -> uint8 [B, H, W, 3]`` function over the ShapeWorld model."""
    from ..images import to_uint8

    model = ShapeWorldModel.load(weights, device=device)
    return lambda prompts, seeds: to_uint8(sample(model, list(prompts), list(seeds), steps=steps, guidance=guidance))
