"""A Bradley-Terry reward model trained on a preference dataset (``rewardlab rm train``).

The scorer is ShapeCLIP's architecture, ``s(image, prompt) = exp(τ)·cos``; training
minimises ``-[y log σ(s_a - s_b) + (1 - y) log σ(s_b - s_a)]`` (Bradley & Terry 1952;
ties, y = 0.5, pull the two scores together).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..train_configs import RMTrainConfig
from ..training import fit
from .base import Reward, RewardOutput
from .registry import register

PREFERENCE_WEIGHTS = Path(__file__).resolve().parents[1] / "world" / "data" / "preference.safetensors"


def bt_loss(s_a: torch.Tensor, s_b: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Bradley-Terry negative log-likelihood; ``label`` = P(a preferred) in {1, 0, 0.5}."""
    d = s_a - s_b
    return -(label * F.logsigmoid(d) + (1 - label) * F.logsigmoid(-d)).mean()


def _score(model, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
    cos = (model.encode_images(images) * model.encode_text(prompts)).sum(-1)
    return model.clip.logit_scale.exp() * cos


def train_rm(rows: dict[str, list], cfg: RMTrainConfig, out_dir: str | Path, progress=None,
             model_config=None) -> Path:
    """Train (or resume) the reward model into ``out_dir``; returns the weights path."""
    from ..data.preferences import decode_png
    from ..images import to_tensor
    from ..world.clip import ShapeCLIP

    a = to_tensor([decode_png(x) for x in rows["image_a"]])
    b = to_tensor([decode_png(x) for x in rows["image_b"]])
    labels, prompts = torch.tensor(rows["label"], dtype=torch.float32), rows["prompt"]
    torch.manual_seed(cfg.seed)
    model = ShapeCLIP(model_config).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)

    def step_loss(step: int) -> torch.Tensor:
        idx = np.random.default_rng([cfg.seed, step]).integers(len(labels), size=cfg.batch_size)
        p = [prompts[i] for i in idx]
        return bt_loss(_score(model, a[idx], p), _score(model, b[idx], p), labels[idx])

    return fit(model, opt, cfg, Path(out_dir), "preference.safetensors", step_loss, progress=progress)


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
                                    f"`rewardlab rm make-shapeworld` then `rewardlab rm train`")
        self.model = ShapeCLIP.load(path).to(device).requires_grad_(False)

    def score(self, images, prompts, metadata):
        return RewardOutput(_score(self.model, images.to(self.model.clip.logit_scale.device), list(prompts)).cpu())

    def compare(self, images_a, images_b, prompts) -> torch.Tensor:
        return torch.sigmoid(self(images_a, prompts).scores - self(images_b, prompts).scores)


register("preference", "Bradley-Terry reward model trained on ShapeWorld preferences (shipped); pairwise")(
    PreferenceReward)
