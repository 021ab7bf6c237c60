"""The Reward contract: ``reward(images, prompts, metadata=None) -> RewardOutput``.

``images`` are float ``[B, 3, H, W]`` in [0, 1] (``rewardlab.images`` converts files,
PIL images and arrays). Scores are ``[B]``; a score a reward could not compute (NaN,
inf, unreadable input) is marked ``valid=False`` and set to 0, never silently used.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch


class RewardError(ValueError):
    """Bad input to a reward; the message says what and where."""


@dataclass
class RewardOutput:
    scores: torch.Tensor  # [B]
    sub_scores: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> [B]
    valid: torch.Tensor | None = None  # [B] bool; False where the score could not be computed
    reasons: list[str] | None = None  # [B] why a sample is invalid or scored low, where the reward can say ("" elsewhere)

    def __post_init__(self):
        finite = torch.isfinite(self.scores.detach())
        self.valid = finite if self.valid is None else (self.valid & finite)
        if not bool(self.valid.all()):
            self.scores = torch.where(self.valid, self.scores, torch.zeros_like(self.scores))


class Reward:
    """Base class: subclasses set ``name``/``differentiable`` and implement ``score``."""

    name = "reward"
    differentiable = False
    pairwise = False

    def __call__(self, images: torch.Tensor, prompts: Sequence[str], metadata: Sequence[Any] | None = None
                 ) -> RewardOutput:
        images, prompts = self.check(images, prompts, metadata)
        return self.score(images, prompts, metadata)

    def check(self, images: torch.Tensor, prompts: Sequence[str], metadata: Sequence[Any] | None = None
              ) -> tuple[torch.Tensor, list[str]]:
        """Validate one call's inputs (shape, lengths, gradients); raises ``RewardError``."""
        images = check_images(images)
        prompts = list(prompts)
        if len(prompts) != len(images):
            raise RewardError(f"{len(images)} images but {len(prompts)} prompts")
        if metadata is not None and len(metadata) != len(images):
            raise RewardError(f"{len(images)} images but {len(metadata)} metadata entries")
        if images.requires_grad and not self.differentiable:
            raise RewardError(f"reward {self.name!r} is not differentiable: detach the images or use a "
                              f"differentiable reward for reward backpropagation")
        return images, prompts

    def score(self, images: torch.Tensor, prompts: list[str], metadata) -> RewardOutput:
        raise NotImplementedError


def check_images(images: torch.Tensor) -> torch.Tensor:
    if not isinstance(images, torch.Tensor):
        raise RewardError(f"images must be a float tensor [B, 3, H, W] in [0, 1] (see rewardlab.images.to_tensor), "
                          f"got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] != 3 or not images.is_floating_point():
        raise RewardError(f"images must be a float tensor [B, 3, H, W], got {images.dtype} {tuple(images.shape)}")
    if len(images) == 0:
        raise RewardError("no images to score")
    return images
