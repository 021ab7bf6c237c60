"""Alignment recipes: a reward makes a generator better.

One short file per recipe (``grpo``, ``nft``, ``backprop``, ``dpo``), each reading as its paper's algorithm box
(setup → sample → score → update) over the Generator contract; losses are pure functions in
``losses.py``; ``common.py`` is the shared harness (prompts, rewards, metrics, checkpoints,
evaluation, torchrun). Run one with ``rewardlab train RECIPE --config configs/NAME.yaml``.
``reward_model`` (recipe ``rm``) trains a reward model instead, on preference pairs, with the
harness's settings, metrics and checkpoint helpers.

Importing this package costs nothing: recipes and their torch imports load on demand.
"""

from __future__ import annotations

import importlib

# recipe name → (config class in align.config, module with train(cfg, out_dir, progress))
RECIPES = {
    "grpo": ("GRPOConfig", "grpo", "DDPO / Flow-GRPO / DanceGRPO / MixGRPO: PPO-clip on the sampler's log-probs"),
    "pref_grpo": ("PrefGRPOConfig", "pref_grpo", "Pref-GRPO: grpo rewarded by in-group win rates of a pairwise "
                                                 "judge"),
    "online_dpo": ("OnlineDPOConfig", "online_dpo", "D3PO / RankDPO-style: DPO on judged pairs or rankings of the "
                                                   "policy's own samples"),
    "nft": ("NFTConfig", "nft", "DiffusionNFT (or AWM): likelihood-free RL on the forward process"),
    "backprop": ("BackpropConfig", "backprop", "AlignProp / DRaFT-K / DRaFT-LV / ReFL: reward gradients through the "
                                               "sampler"),
    "dpo": ("DPOConfig", "dpo", "Diffusion-DPO: an offline preference data set against a frozen reference"),
    "rm": ("RMConfig", "reward_model", "a Bradley-Terry reward model (the preference reward) fitted to preference "
                                       "pairs"),
}


def recipe_config(name: str) -> type:
    from . import config

    return getattr(config, _entry(name)[0])


def recipe_train(name: str):
    return importlib.import_module(f".{_entry(name)[1]}", __name__).train


def _entry(name: str):
    if name not in RECIPES:
        raise KeyError(f"unknown recipe {name!r}; available: {', '.join(RECIPES)}")
    return RECIPES[name]
