"""ShapeCLIP as a reward: the cosine similarity of image and caption under the tiny CLIP
trained on ShapeWorld (``rewardlab world train-clip``), scaled by its learned
temperature. Differentiable — and, unlike the verifier, hackable."""

from __future__ import annotations

from .base import Reward, RewardOutput
from .registry import register


class ShapeCLIPReward(Reward):
    name = "shapeclip"
    differentiable = True

    def __init__(self, weights=None, device: str = "cpu"):
        from ..world.clip import ShapeCLIP

        self.model = ShapeCLIP.load(weights).to(device).requires_grad_(False)

    def score(self, images, prompts, metadata):
        x = images.to(self.model.clip.logit_scale.device)
        cos = (self.model.encode_images(x) * self.model.encode_text(list(prompts))).sum(-1)
        return RewardOutput((self.model.clip.logit_scale.exp() * cos).cpu(), {"cosine": cos.cpu()})


register("shapeclip", "ShapeCLIP: tiny CLIP trained on ShapeWorld (shipped); differentiable, hackable proxy")(
    ShapeCLIPReward)
