"""ImageReward (Xu et al. 2023, "ImageReward: Learning and Evaluating Human Preferences for
Text-to-Image Generation", arXiv:2304.05977), the reward ReFL trains against: the prompt's
BERT cross-attends to a BLIP ViT-L/16's image tokens, its first ([CLS]) output goes through
a linear MLP head, and the score is normalised as (s - 0.1672) / 1.0333. The released
``ImageReward.pt`` (BLIP's own naming) is mapped key by key onto transformers'
``BlipVisionModel`` + ``BlipTextModel`` (``blip_to_hf``), so neither the ``image-reward``
package nor its pinned transformers is needed. Differentiable: preprocessing is CLIP's
(``clip_pixels``, plain torch), as in the reference implementation."""

from __future__ import annotations

import re

import torch

from ..utils import load_into, load_released_state, load_tokenizer
from .base import Reward, RewardOutput
from .clip import clip_pixels
from .registry import register

MEAN, STD = 0.16717362830052426, 1.0333394966054072  # the reference's score normalisation
MAX_LENGTH = 35  # the reference pads/truncates prompts to 35 tokens
BLIP_LARGE = dict(  # BLIP ViT-L/16 at 224 px + med_config.json's BERT (cross-attention width 1024)
    vision_config=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                       image_size=224, patch_size=16, hidden_act="gelu", layer_norm_eps=1e-6),
    text_config=dict(vocab_size=30524, hidden_size=768, encoder_hidden_size=1024, intermediate_size=3072,
                     num_hidden_layers=12, num_attention_heads=12, max_position_embeddings=512,
                     hidden_act="gelu", layer_norm_eps=1e-12, pad_token_id=0))

_VIT = {"cls_token": "embeddings.class_embedding", "pos_embed": "embeddings.position_embedding",
        "patch_embed.proj": "embeddings.patch_embedding", "norm": "post_layernorm"}
_BLOCK = {"norm1": "layer_norm1", "norm2": "layer_norm2", "attn.qkv": "self_attn.qkv",
          "attn.proj": "self_attn.projection", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}
_HEAD = {"0": "0", "2": "1", "4": "2", "6": "3", "7": "4"}  # nn.Sequential indices between the Dropouts
_UNUSED = ("blip.vision_proj.", "blip.text_proj.")  # the BLIP contrastive projections; unused by the score


def blip_to_hf(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a released ImageReward state dict onto ``vision.*`` (BlipVisionModel), ``text.*``
    (BlipTextModel, same names as BLIP's med.py) and ``head.*`` (the MLP's five Linears).
    BLIP's fused ``attn.qkv`` is laid out as transformers' ``self_attn.qkv``: no split."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        if key.startswith(_UNUSED) or key.endswith("position_ids"):
            continue
        if key.startswith("blip.text_encoder."):
            out["text." + key.removeprefix("blip.text_encoder.")] = value
        elif m := re.fullmatch(r"blip\.visual_encoder\.blocks\.(\d+)\.(.+)\.(weight|bias)", key):
            out[f"vision.encoder.layers.{m[1]}.{_BLOCK[m[2]]}.{m[3]}"] = value
        elif m := re.fullmatch(r"blip\.visual_encoder\.(cls_token|pos_embed|patch_embed\.proj|norm)(\.weight|\.bias)?",
                               key):
            out[f"vision.{_VIT[m[1]]}{m[2] or ''}"] = value
        elif (m := re.fullmatch(r"mlp\.layers\.(\d+)\.(weight|bias)", key)) and m[1] in _HEAD:
            out[f"head.{_HEAD[m[1]]}.{m[2]}"] = value
        else:
            raise KeyError(f"unexpected ImageReward key {key!r}")
    return out


class ImageRewardReward(Reward):
    name = "imagereward"
    differentiable = True

    def __init__(self, checkpoint: str | None = None, tokenizer: str = "google-bert/bert-base-uncased",
                 config: dict | None = None, device: str = "cpu"):
        from torch import nn
        from transformers import BlipTextConfig, BlipTextModel, BlipVisionConfig, BlipVisionModel

        if checkpoint is None:
            raise FileNotFoundError("pass checkpoint=PATH to ImageReward.pt (hub repo THUDM/ImageReward)")
        state = blip_to_hf(load_released_state(  # fails fast when missing
            checkpoint, "download ImageReward.pt (hub repo THUDM/ImageReward) and pass checkpoint=PATH"))
        config = config or BLIP_LARGE
        try:  # the head's sizes come from the checkpoint: 768→1024→128→64→16→1, no activations between
            head = [nn.Linear(*state[f"head.{i}.weight"].shape[::-1]) for i in range(5)]
        except KeyError:
            raise ValueError(f"{checkpoint} has no complete ImageReward MLP head (mlp.layers.0-7)") from None
        self.model = nn.ModuleDict(dict(
            vision=BlipVisionModel(BlipVisionConfig(**config["vision_config"])),
            # is_decoder=True is what gives BlipTextModel its cross-attention layers; forward runs it bidirectionally
            text=BlipTextModel(BlipTextConfig(**config["text_config"], is_decoder=True), add_pooling_layer=False),
            head=nn.Sequential(*head)))
        load_into(self.model, state, checkpoint)
        self.model.eval().requires_grad_(False).to(device)
        self.tokenizer = load_tokenizer(tokenizer, "BERT")
        self.tokenizer.add_special_tokens({"bos_token": "[DEC]"})  # BLIP's init_tokenizer: vocab 30522 + 2
        self.tokenizer.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
        if len(self.tokenizer) != self.model.text.config.vocab_size:
            raise ValueError(f"tokenizer {tokenizer!r} has {len(self.tokenizer)} tokens with [DEC]/[ENC], the "
                             f"checkpoint's text encoder {self.model.text.config.vocab_size}: use bert-base-uncased")
        self.size = self.model.vision.config.image_size

    def score(self, images, prompts, metadata):
        device = next(self.model.parameters()).device
        image_embeds = self.model.vision(pixel_values=clip_pixels(images.to(device), self.size)).last_hidden_state
        # the reference feeds the tokenizer's ids as they are: [CLS] first (not BLIP's [ENC] swap)
        tokens = self.tokenizer(list(prompts), padding="max_length", truncation=True, max_length=MAX_LENGTH,
                                return_tensors="pt").to(device)
        text = self.model.text(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask,
                               encoder_hidden_states=image_embeds, is_decoder=False).last_hidden_state
        raw = self.model.head(text[:, 0].float()).squeeze(-1)
        return RewardOutput(((raw - MEAN) / STD).cpu(), {"raw": raw.detach().cpu()})


register("imagereward", "ImageReward (BLIP ViT-L + MLP from ImageReward.pt mapped onto transformers' BLIP; "
         "checkpoint=PATH); differentiable")(ImageRewardReward)
