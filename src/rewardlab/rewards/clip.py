"""CLIP-family rewards through transformers' ``CLIPModel`` (no open_clip, no torchvision):
``clipscore`` (Hessel et al. 2021: 2.5·max(cos, 0)) and ``pickscore`` (Kirstain et al. 2023:
exp(logit_scale)·cos with the PickScore_v1 weights). Differentiable: preprocessing
(resize, centre crop, normalise) is plain torch."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

from ..utils import local_files_only
from .base import Reward, RewardOutput
from .registry import register

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def load_clip(source: str, tokenizer_source: str | None = None, device: str = "cpu"):
    """A CLIPModel and its tokenizer from a local folder or a hub id, with an error that
    says how to get missing weights."""
    from transformers import AutoTokenizer, CLIPModel

    local, offline = Path(source).exists(), local_files_only(source)
    try:
        model = CLIPModel.from_pretrained(source, local_files_only=offline)
        tok = AutoTokenizer.from_pretrained(tokenizer_source or source, local_files_only=offline)
    except OSError as e:
        raise FileNotFoundError(
            f"cannot load CLIP weights from {source!r}: "
            + ("the folder is not a saved CLIPModel + tokenizer" if local else
               f"download them first (`hf download {source} --local-dir DIR`) and pass DIR")
            + f" ({str(e).splitlines()[0]})") from None
    model.eval().requires_grad_(False).to(device)
    return model, tok


def clip_pixels(images: torch.Tensor, size: int) -> torch.Tensor:
    """CLIP preprocessing in plain torch (differentiable): resize the short side to ``size``
    (bicubic, anti-aliased when shrinking), centre-crop, normalise with OpenAI's statistics."""
    h, w = images.shape[-2:]
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    x = F.interpolate(images, size=(nh, nw), mode="bicubic", align_corners=False, antialias=nh < h)
    top, left = (nh - size) // 2, (nw - size) // 2
    x = x[..., top:top + size, left:left + size]
    mean = torch.tensor(OPENAI_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def _features(out) -> torch.Tensor:  # transformers 5 returns an output object, 4.x a tensor
    return out if torch.is_tensor(out) else out.pooler_output


class CLIPReward(Reward):
    differentiable = True

    def __init__(self, model: str, tokenizer: str | None = None, kind: str = "clipscore", device: str = "cpu",
                 name: str | None = None):
        self.model, self.tokenizer = load_clip(model, tokenizer, device)
        self.kind, self.name = kind, name or kind
        self.size = self.model.config.vision_config.image_size

    def score(self, images, prompts, metadata):
        device = next(self.model.parameters()).device
        pixels = clip_pixels(images.to(device), self.size)
        img = F.normalize(_features(self.model.get_image_features(pixel_values=pixels)), dim=-1)
        tokens = self.tokenizer(prompts, padding=True, truncation=True, return_tensors="pt").to(device)
        txt = F.normalize(_features(self.model.get_text_features(**tokens)), dim=-1)
        cos = (img * txt).sum(-1)
        if self.kind == "clipscore":
            scores = 2.5 * cos.clamp(min=0)
        else:
            scores = self.model.logit_scale.exp() * cos
        return RewardOutput(scores.cpu(), {"cosine": cos.cpu()})


register("clipscore", "CLIPScore (2.5·max(cos,0)) with any transformers CLIP; model=dir|hub id; differentiable")(
    partial(CLIPReward, model="openai/clip-vit-large-patch14", kind="clipscore"))
register("pickscore", "PickScore_v1 (exp(logit_scale)·cos); differentiable")(
    partial(CLIPReward, model="yuvalkirstain/PickScore_v1", tokenizer="laion/CLIP-ViT-H-14-laion2B-s32B-b79K",
            kind="pickscore"))


class AestheticReward(Reward):
    """LAION aesthetic predictor (improved-aesthetic-predictor): an MLP on the unit CLIP
    ViT-L/14 image embedding. ``head`` is the MLP's weights (``.safetensors`` or a ``.pth``
    state dict, read with ``weights_only=True``), e.g. ``sac+logos+ava1-l14-linearMSE.pth``."""

    name = "laion_aesthetic"
    differentiable = True

    def __init__(self, head: str | None = None, model: str = "openai/clip-vit-large-patch14", device: str = "cpu"):
        if head is None or not Path(head).exists():
            raise FileNotFoundError(
                f"aesthetic head not found ({head!r}): pass head=PATH to the MLP weights, e.g. "
                f"sac+logos+ava1-l14-linearMSE.pth from the improved-aesthetic-predictor project")
        self.model, _ = load_clip(model, device=device)
        self.size = self.model.config.vision_config.image_size
        self.mlp = aesthetic_mlp(_read_state(head)).to(device)

    def score(self, images, prompts, metadata):
        device = next(self.model.parameters()).device
        out = self.model.get_image_features(pixel_values=clip_pixels(images.to(device), self.size))
        return RewardOutput(self.mlp(F.normalize(_features(out), dim=-1)).squeeze(-1).cpu())


def aesthetic_mlp(state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """The predictor's MLP (Linear-Dropout ×3, Linear, Linear), sized from ``state``."""
    from torch import nn

    state = {k.removeprefix("module."): v for k, v in state.items()}
    dims = [state[f"layers.{i}.weight"].shape for i in (0, 2, 4, 6, 7)]
    mlp = nn.Sequential(nn.Linear(dims[0][1], dims[0][0]), nn.Dropout(0.2), nn.Linear(*dims[1][::-1]),
                        nn.Dropout(0.2), nn.Linear(*dims[2][::-1]), nn.Dropout(0.1), nn.Linear(*dims[3][::-1]),
                        nn.Linear(*dims[4][::-1]))
    mlp.load_state_dict({k.removeprefix("layers."): v for k, v in state.items()})
    return mlp.eval().requires_grad_(False)


def _read_state(path: str) -> dict[str, torch.Tensor]:
    if str(path).endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    return torch.load(path, map_location="cpu", weights_only=True)


register("laion_aesthetic", "LAION aesthetic MLP on CLIP ViT-L/14 embeddings (head=PATH); differentiable")(
    AestheticReward)
