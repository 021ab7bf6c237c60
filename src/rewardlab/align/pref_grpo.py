"""Pref-GRPO (Wang et al. 2025, "Pref-GRPO: Pairwise Preference Reward-based GRPO for Stable
Text-to-Image Reinforcement Learning", arXiv:2508.20751): the grpo recipe with each sample's
reward replaced by its win rate against the other members of its group under a pairwise judge.

    score   w_i = 1/(G−1) Σ_{j≠i} P(x_i beats x_j | prompt)   over all ordered pairs of the group
            (a tie or an unreadable verdict counts half to each; rollouts.Rewarder.win_rates)

Everything else — sampling, advantages, the PPO-clip update, KL — is ``grpo``'s. A win rate
is bounded and relative, so a judge's scale cannot be inflated (the reward hacking Pref-GRPO
observed with pointwise scores whose small gaps normalisation blows up). The judge is
``reward.names[0]`` with ``reward.aggregate=win_rate`` (the default here): the shipped
``preference`` model, or ``vlm_judge`` comparing two images in one prompt.
"""

from __future__ import annotations

from pathlib import Path

from .config import PrefGRPOConfig
from .grpo import train as grpo_train


def train(cfg: PrefGRPOConfig, out_dir: str | Path, progress=None) -> Path:
    return grpo_train(cfg, out_dir, progress, recipe="pref_grpo")
