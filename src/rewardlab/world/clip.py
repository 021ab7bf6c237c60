"""ShapeCLIP: a tiny CLIP (transformers ``CLIPModel``) trained contrastively on ShapeWorld
renders and their captions — a realistic, *hackable* learned proxy next to the exact
verifier. Each batch adds a near-miss caption per image (other colour, count, relation…)
as a hard negative, so the model must read attributes, not just topics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..train_configs import ClipTrainConfig
from ..training import fit
from .model import WordTokenizer
from .prompts import PromptSampler, near_miss
from .records import vocabulary
from .render import render, sample_scene

CLIP_WEIGHTS = Path(__file__).parent / "data" / "shapeclip.safetensors"
# <eos> must not be id 2: transformers' CLIP then pools at the highest token id (legacy)
CLIP_SPECIALS = ("<pad>", "<eos>", "<bos>", "<unk>")


@dataclass
class ClipConfig:
    resolution: int = 32  # image side
    patch: int = 4  # ViT patch size
    width: int = 64  # transformer width (both towers)
    layers: int = 3  # transformer layers (both towers)
    embed: int = 64  # shared embedding size
    max_tokens: int = 16
    vocab: list[str] = field(default_factory=lambda: list(CLIP_SPECIALS) + vocabulary())


class ShapeCLIP(nn.Module):
    def __init__(self, config: ClipConfig | None = None):
        super().__init__()
        from transformers import CLIPConfig, CLIPModel

        self.config = c = config or ClipConfig()
        self.tokenizer = WordTokenizer(c.vocab, c.max_tokens)
        tower = dict(hidden_size=c.width, intermediate_size=2 * c.width, num_hidden_layers=c.layers,
                     num_attention_heads=4)
        self.clip = CLIPModel(CLIPConfig(
            text_config=dict(vocab_size=len(c.vocab), max_position_embeddings=c.max_tokens, pad_token_id=0,
                             bos_token_id=self.tokenizer.bos, eos_token_id=self.tokenizer.eos, **tower),
            vision_config=dict(image_size=c.resolution, patch_size=c.patch, **tower), projection_dim=c.embed))

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Unit embeddings of ``[B,3,H,W]`` images in [0, 1] (another size is resized, antialiased
        and differentiably, to the model's resolution)."""
        res = self.config.resolution
        if images.shape[-2:] != (res, res):
            images = F.interpolate(images, size=(res, res), mode="bilinear", align_corners=False, antialias=True)
        out = self.clip.get_image_features(pixel_values=images * 2 - 1)
        return F.normalize(out if torch.is_tensor(out) else out.pooler_output, dim=-1)

    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        ids, mask = self.tokenizer(prompts)
        dev = self.clip.logit_scale.device
        out = self.clip.get_text_features(input_ids=ids.to(dev), attention_mask=mask.to(dev))
        return F.normalize(out if torch.is_tensor(out) else out.pooler_output, dim=-1)

    def save(self, path: str | Path) -> None:
        from .model import save_weights

        save_weights(self.state_dict(), self.config, path, torch.float32)

    @classmethod
    def load(cls, path: str | Path | None = None) -> "ShapeCLIP":
        """Load weights written by ``save`` (FileNotFoundError if missing, CheckpointError if unusable)."""
        from ..utils import load_weights_file, reading

        path = Path(path or CLIP_WEIGHTS)
        if not path.exists():
            raise FileNotFoundError(f"ShapeCLIP weights not found at {path}; train them with "
                                    f"`rewardlab world train-clip`")
        raw, state = load_weights_file(path, "ShapeCLIP")
        with reading(path, "ShapeCLIP weights file"):
            model = cls(ClipConfig(**raw))
            model.load_state_dict(state)
        return model.eval()


def clip_batch(step: int, cfg: ClipTrainConfig, sampler: PromptSampler, resolution: int):
    rng = np.random.default_rng([cfg.seed, step, 7])
    records = sampler(cfg.batch_size, rng)
    imgs = np.stack([render(sample_scene(r, rng), resolution, rng) for r in records])
    images = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255
    return images, [r["prompt"] for r in records], [near_miss(r, rng)["prompt"] for r in records]


def clip_loss(model: ShapeCLIP, images, captions, negatives) -> torch.Tensor:
    """Symmetric InfoNCE; images also compete against every near-miss caption.
    Repeated captions in a batch are all counted as positives (soft targets)."""
    img = model.encode_images(images)
    txt = model.encode_text(captions + negatives)
    logits = model.clip.logit_scale.exp() * img @ txt.T  # [B, 2B]
    same = torch.tensor([[a == b for b in captions] for a in captions], dtype=torch.float32)
    target = torch.cat([same, torch.zeros_like(same)], 1)
    loss_i = -(target / target.sum(1, keepdim=True) * logits.log_softmax(1)).sum(1).mean()
    loss_t = -(same / same.sum(0, keepdim=True) * logits[:, :len(captions)].log_softmax(0)).sum(0).mean()
    return (loss_i + loss_t) / 2


def train_clip(cfg: ClipTrainConfig, out_dir: str | Path, progress=None,
               model_config: ClipConfig | None = None) -> Path:
    """Train (or resume) ShapeCLIP into ``out_dir``; returns the weights path."""
    torch.manual_seed(cfg.seed)
    model = ShapeCLIP(model_config).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
    sampler = PromptSampler("train", seed=cfg.seed)
    return fit(model, opt, cfg, Path(out_dir), "shapeclip.safetensors",
               lambda step: clip_loss(model, *clip_batch(step, cfg, sampler, model.config.resolution)),
               lr_at=lambda step: cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / cfg.steps))),
               progress=progress)
