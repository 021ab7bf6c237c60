"""The settings of the shipped trainers — the one place their defaults live.

Torch-free, so that the CLI builds its options from these classes (``rewardlab world train
--help`` lists every field with its default) without importing torch. The trainers take
them from here (``world.train``, ``world.clip``; the reward model's are a recipe's,
``align.config.RMConfig``); files and ``key=value`` overrides are read by
:func:`rewardlab.config.load_config`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .config import setting


@dataclass
class TrainConfig:
    """The ShapeWorld model (``rewardlab world train``). The defaults are the shipped model's run."""

    steps: int = setting(2400, "total optimiser steps (a rerun resumes towards this)", min=1)
    batch_size: int = setting(64, "images per step", min=1)
    lr: float = setting(6e-4, "peak AdamW learning rate", gt=0)
    warmup: int = setting(100, "linear learning-rate warm-up steps, then cosine decay to 10% of lr", min=0)
    weight_decay: float = setting(0.01, "AdamW weight decay", min=0)
    ema_decay: float = setting(0.999, "EMA decay of the exported weights (warms up as (1+step)/(10+step))",
                               min=0, max=1)
    cfg_dropout: float = setting(0.1, "probability of training on the empty prompt (for classifier-free "
                                      "guidance)", min=0, max=1)
    t_location: float = setting(0.0, "location of the logit-normal noise levels t (SD3's m); above 0 trains more "
                                     "at high noise, where an image's layout is decided")
    seed: int = setting(0, "seeds the initial weights, prompts, renders and noise")
    checkpoint_every: int = setting(100, "steps between (atomic) checkpoints", min=1)
    resolution: int = setting(32, "image side in pixels", min=8)
    init: Optional[Path] = setting(None, "start from these weights (e.g. the shipped model) instead of random: "
                                         "continued training")


@dataclass
class ClipTrainConfig:
    """ShapeCLIP, the learned ShapeWorld reward (``rewardlab world train-clip``)."""

    steps: int = setting(2000, "total optimiser steps (a rerun resumes towards this)", min=1)
    batch_size: int = setting(128, "images per step, plus as many near-miss captions", min=1)
    lr: float = setting(1e-3, "peak AdamW learning rate (cosine decay to 10%)", gt=0)
    seed: int = setting(0, "seeds the initial weights, prompts and renders")
    checkpoint_every: int = setting(100, "steps between (atomic) checkpoints", min=1)

