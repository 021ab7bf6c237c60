"""HPSv2 / HPSv2.1 (Wu et al. 2023): an open_clip ViT-H-14 fine-tuned on human
preferences, run here as a transformers ``CLIPModel`` — the checkpoint's open_clip keys
are mapped onto CLIPModel's (``open_clip_to_hf``), so neither open_clip nor torchvision
is needed. The score is the image-text cosine, as the reference implementation's."""

from __future__ import annotations

import re
from functools import partial

import torch
import torch.nn.functional as F

from ..utils import load_into, load_released_state, load_tokenizer
from .base import Reward, RewardOutput
from .clip import _features, clip_pixels
from .registry import register

VIT_H_14 = dict(
    text_config=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                     hidden_act="gelu", vocab_size=49408, max_position_embeddings=77),
    vision_config=dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16,
                       hidden_act="gelu", image_size=224, patch_size=14), projection_dim=1024)

_BLOCK = {"ln_1": "layer_norm1", "ln_2": "layer_norm2", "attn.out_proj": "self_attn.out_proj",
          "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}
_TOP = {"token_embedding.weight": "text_model.embeddings.token_embedding.weight",
        "positional_embedding": "text_model.embeddings.position_embedding.weight",
        "ln_final": "text_model.final_layer_norm",
        "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
        "visual.class_embedding": "vision_model.embeddings.class_embedding",
        "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
        "visual.ln_pre": "vision_model.pre_layrnorm", "visual.ln_post": "vision_model.post_layernorm",
        "logit_scale": "logit_scale"}


def open_clip_to_hf(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map an open_clip CLIP state dict onto transformers' CLIPModel keys."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        m = re.fullmatch(r"(visual\.)?transformer\.resblocks\.(\d+)\.(.+?)[._](weight|bias)", key)
        if m:
            tower = "vision_model" if m.group(1) else "text_model"
            prefix = f"{tower}.encoder.layers.{m.group(2)}."
            if m.group(3) == "attn.in_proj":
                for name, part in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3)):
                    out[f"{prefix}self_attn.{name}.{m.group(4)}"] = part
            else:
                out[prefix + _BLOCK[m.group(3)] + "." + m.group(4)] = value
        elif key in ("visual.proj", "text_projection"):
            out["visual_projection.weight" if key == "visual.proj" else "text_projection.weight"] = value.T
        elif key == "attn_mask":
            continue
        else:
            base, _, leaf = key.rpartition(".")
            if key in _TOP:
                out[_TOP[key]] = value
            elif base in _TOP:
                out[f"{_TOP[base]}.{leaf}"] = value
            else:
                raise KeyError(f"unexpected open_clip key {key!r}")
    return out


class HPSReward(Reward):
    differentiable = True

    def __init__(self, checkpoint: str | None = None, tokenizer: str = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K",
                 config: dict | None = None, device: str = "cpu", name: str = "hpsv2"):
        from transformers import CLIPConfig, CLIPModel

        if checkpoint is None:
            raise FileNotFoundError("pass checkpoint=PATH to HPS_v2(.1)_compressed.pt (hub repo xswu/HPSv2)")
        self.name = name
        state = open_clip_to_hf(load_released_state(  # fails fast when missing
            checkpoint, "download HPS_v2_compressed.pt or HPS_v2.1_compressed.pt (hub repo xswu/HPSv2) and pass "
                        "checkpoint=PATH"))
        self.model = CLIPModel(CLIPConfig(**(config or VIT_H_14)))
        load_into(self.model, state, checkpoint)
        self.model.eval().requires_grad_(False).to(device)
        self.tokenizer = load_tokenizer(tokenizer, "CLIP")
        self.size = self.model.config.vision_config.image_size

    def score(self, images, prompts, metadata):
        device = next(self.model.parameters()).device
        img = F.normalize(_features(self.model.get_image_features(pixel_values=clip_pixels(images.to(device), self.size))), dim=-1)
        tokens = self.tokenizer(list(prompts), padding="max_length", truncation=True, max_length=77,
                                return_tensors="pt").to(device)
        txt = F.normalize(_features(self.model.get_text_features(**tokens)), dim=-1)
        return RewardOutput((img * txt).sum(-1).cpu())


register("hpsv2", "HPSv2 (open_clip ViT-H-14 checkpoint mapped to CLIPModel; checkpoint=PATH); differentiable")(
    partial(HPSReward, name="hpsv2"))
register("hpsv2.1", "HPSv2.1 (checkpoint=PATH to HPS_v2.1_compressed.pt); differentiable")(
    partial(HPSReward, name="hpsv2.1"))
