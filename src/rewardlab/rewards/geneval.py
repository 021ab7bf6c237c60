"""The ``geneval`` reward: GenEval's verdict on real images (Mask2Former + CLIP through
transformers, no mmcv). It lives in ``rewardlab.eval.geneval_real``, imported only when the
reward is built."""

from __future__ import annotations

from .base import Reward
from .registry import register

DEFAULT_DETECTOR = "facebook/mask2former-swin-small-coco-instance"
DEFAULT_CLIP = "openai/clip-vit-large-patch14"


@register("geneval", "GenEval on real images: Mask2Former + CLIP colours (detector=, clip= dir|hub id; "
                     "mode=binary|partial; needs GenEval records as metadata); not differentiable")
def geneval(detector: str = DEFAULT_DETECTOR, clip: str = DEFAULT_CLIP, mode: str = "binary", device: str = "cpu",
            size: int = 800, batch_size: int = 8) -> Reward:
    """``size``: the detector's input short side (GenEval's mmdet test scale: 800)."""
    from ..eval.geneval_real import GenEvalReward

    return GenEvalReward(detector=detector, clip=clip, mode=mode, device=device, size=size, batch_size=batch_size)
