"""The ``preference`` reward: a Bradley-Terry reward model on preference pairs.

The scorer is ShapeCLIP's architecture, ``s(image, prompt) = exp(τ)·cos``; P(a beats b) =
σ(s_a - s_b). It is trained by ``rewardlab train rm`` (``align/reward_model.py``, the loss
``align.losses.bt_loss``); this module only loads and scores.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .base import Reward, RewardOutput
from .registry import register

PREFERENCE_WEIGHTS = Path(__file__).resolve().parents[1] / "world" / "data" / "preference.safetensors"


def bt_score(model, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
    """The Bradley-Terry score ``exp(τ)·cos(image, prompt)`` of a ShapeCLIP ``model``, ``[B]``."""
    cos = (model.encode_images(images) * model.encode_text(prompts)).sum(-1)
    return model.clip.logit_scale.exp() * cos


class PreferenceReward(Reward):
    """The trained Bradley-Terry scorer; ``compare`` gives P(a beats b) = σ(s_a - s_b)."""

    name = "preference"
    differentiable = True
    pairwise = True

    def __init__(self, weights=None, device: str = "cpu"):
        from ..world.clip import ShapeCLIP

        path = Path(weights or PREFERENCE_WEIGHTS)
        if not path.exists():
            raise FileNotFoundError(f"preference reward weights not found at {path}; train them with "
                                    f"`rewardlab rm make-shapeworld` then `rewardlab train rm`")
        self.model = ShapeCLIP.load(path).to(device).requires_grad_(False)

    def score(self, images, prompts, metadata):
        return RewardOutput(bt_score(self.model, images.to(self.model.clip.logit_scale.device), list(prompts)).cpu())

    def compare(self, images_a, images_b, prompts) -> torch.Tensor:
        return torch.sigmoid(self(images_a, prompts).scores - self(images_b, prompts).scores)


register("preference", "Bradley-Terry reward model trained on ShapeWorld preferences (shipped); pairwise")(
    PreferenceReward)
