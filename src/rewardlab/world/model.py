"""The embedded ShapeWorld text-to-image model.

A pixel-space rectified-flow model built from the classes real pipelines use: a tiny
``diffusers.UNet2DConditionModel`` cross-attending to a tiny ``transformers``
``CLIPTextModel`` trained from scratch over ShapeWorld's word vocabulary.

Flow convention (SD3 / rectified flow): ``x_t = (1 - t) x_0 + t ε`` with ``t`` in
[0, 1], the network predicts the velocity ``v = ε - x_0`` and is fed ``1000 t`` as
its timestep. Images live in [-1, 1] inside the model and [0, 1] outside.
Sampling and guidance are the Generator layer's (``rewardlab.generators.shapeworld``).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from .records import vocabulary

SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")
WEIGHTS_PATH = Path(__file__).parent / "data" / "shapeworld.safetensors"


@dataclass
class ModelConfig:
    resolution: int = 32  # image side in pixels
    channels: tuple[int, ...] = (32, 64, 128)  # UNet block widths, one per resolution
    attn_levels: int = 1  # how many of the lowest resolutions cross-attend to the text
    text_dim: int = 64  # text encoder width (= UNet cross_attention_dim)
    text_layers: int = 2  # text encoder transformer layers
    max_tokens: int = 16  # prompt length incl. <bos>/<eos>; longer prompts are truncated
    vocab: list[str] = field(default_factory=lambda: list(SPECIALS) + vocabulary())


class WordTokenizer:
    """Word-level tokenizer over ShapeWorld's vocabulary (unknown words map to <unk>)."""

    def __init__(self, vocab: list[str], max_tokens: int):
        self.ids = {w: i for i, w in enumerate(vocab)}
        self.max_tokens = max_tokens
        self.bos, self.eos, self.unk = self.ids["<bos>"], self.ids["<eos>"], self.ids["<unk>"]

    def __call__(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.zeros(len(prompts), self.max_tokens, dtype=torch.long)  # <pad> is id 0
        for row, p in enumerate(prompts):
            words = re.findall(r"[a-z]+", p.lower())[: self.max_tokens - 2]
            toks = [self.bos] + [self.ids.get(w, self.unk) for w in words] + [self.eos]
            ids[row, : len(toks)] = torch.tensor(toks)
        return ids, (ids != 0).long()


class ShapeWorldModel(nn.Module):
    def __init__(self, config: ModelConfig | None = None):
        super().__init__()
        from diffusers import UNet2DConditionModel
        from transformers import CLIPTextConfig, CLIPTextModel

        self.config = config = config or ModelConfig()
        self.tokenizer = WordTokenizer(config.vocab, config.max_tokens)
        self.text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=len(config.vocab), hidden_size=config.text_dim,
            intermediate_size=2 * config.text_dim, num_hidden_layers=config.text_layers,
            num_attention_heads=4, max_position_embeddings=config.max_tokens,
            pad_token_id=0, bos_token_id=1, eos_token_id=2))
        n, a = len(config.channels), config.attn_levels
        self.unet = UNet2DConditionModel(
            sample_size=config.resolution, in_channels=3, out_channels=3,
            down_block_types=("DownBlock2D",) * (n - a) + ("CrossAttnDownBlock2D",) * a,
            up_block_types=("CrossAttnUpBlock2D",) * a + ("UpBlock2D",) * (n - a),
            block_out_channels=tuple(config.channels), layers_per_block=1,
            cross_attention_dim=config.text_dim, attention_head_dim=4, norm_num_groups=8)

    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token states ``[B, T, D]`` and attention mask ``[B, T]`` for prompts."""
        ids, mask = self.tokenizer(prompts)
        ids, mask = ids.to(self.device), mask.to(self.device)
        return self.text_encoder(input_ids=ids, attention_mask=mask).last_hidden_state, mask

    def velocity(self, x_t: torch.Tensor, t: torch.Tensor, cond: tuple[torch.Tensor, torch.Tensor]):
        """Predicted velocity ``ε - x_0`` at noise level ``t`` (``[B]`` in [0, 1])."""
        states, mask = cond
        return self.unet(x_t, t * 1000, encoder_hidden_states=states,
                         encoder_attention_mask=mask).sample

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ---- persistence: safetensors weights with the config in the metadata ----
    def save(self, path: str | Path, dtype: torch.dtype = torch.float16) -> None:
        save_weights(self.state_dict(), self.config, path, dtype)

    @classmethod
    def load(cls, path: str | Path | None = None, device: str | torch.device = "cpu") -> "ShapeWorldModel":
        """Load weights written by ``save``; a missing file is FileNotFoundError (saying how to
        get it), anything else unusable is CheckpointError naming the file."""
        from ..utils import load_weights_file, reading

        path = Path(path or WEIGHTS_PATH)
        if not path.exists():
            raise FileNotFoundError(
                f"ShapeWorld weights not found at {path}; train them with "
                f"`rewardlab world train` or restore the file from the repository")
        raw, state = load_weights_file(path, "ShapeWorld")
        with reading(path, "ShapeWorld weights file"):
            config = ModelConfig(**raw)
            config.channels = tuple(config.channels)  # a list in JSON
            model = cls(config)
            model.load_state_dict({k: v.float() for k, v in state.items()})
        return model.to(device).eval()


def save_weights(state: dict[str, torch.Tensor], config: ModelConfig, path: str | Path,
                 dtype: torch.dtype = torch.float16) -> None:
    """Write weights as safetensors (atomically) with the config in the metadata."""
    from safetensors.torch import save_file

    from ..utils import atomic_path

    tensors = {k: v.detach().to(dtype).contiguous() for k, v in state.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"config": json.dumps(asdict(config))})
