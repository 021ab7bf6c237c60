"""Losses and advantages of the alignment recipes: small pure functions in the papers'
notation, each with a hand-computed test (``tests/unit/test_align_losses.py``).

Per-sample tensors are ``[B]``; images/latents ``[B, ...]``; ``t`` is the flow noise level σ
(``x_t = (1 - t) x0 + t ε``, velocity ``v = ε - x0``).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Callable, Sequence

import torch

from ..rewards.combine import group_normalize


def _flat_mean(x: torch.Tensor) -> torch.Tensor:
    return x.mean(dim=tuple(range(1, x.ndim))) if x.ndim > 1 else x


def group_advantages(rewards: torch.Tensor, groups: torch.Tensor, mode: str = "group",
                     eps: float = 1e-4) -> torch.Tensor:
    """GRPO (Shao et al. 2024; Flow-GRPO): ``(r - mean_g) / (std_g + eps)`` within each group;
    ``global``: ``(r - mean_g) / (std_batch + eps)`` (Dr. GRPO / DiffusionNFT's global_std)."""
    if mode == "group":
        return group_normalize(rewards, groups, eps)
    if mode != "global":
        raise ValueError(f"unknown advantage mode {mode!r}; expected group or global")
    centred = rewards.float().clone()
    for g in groups.unique():
        m = groups == g
        centred[m] -= centred[m].mean()
    return centred / (rewards.float().std(unbiased=False) + eps)


class PerPromptStats:
    """DDPO's per-prompt running statistics (Black et al. 2023, ``PerPromptStatTracker``):
    each prompt keeps its last ``buffer`` rewards; an advantage is ``(r - mean) / (std + eps)``
    over that buffer, or over the batch while a prompt has fewer than ``min_count``."""

    def __init__(self, buffer: int = 32, min_count: int = 16):
        self.buffer, self.min_count = buffer, min_count
        self.history: dict[str, list[float]] = defaultdict(list)

    def __call__(self, prompts: Sequence[str], rewards: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
        rewards = rewards.double()
        out = torch.empty_like(rewards)
        for p in dict.fromkeys(prompts):
            m = torch.tensor([q == p for q in prompts])
            hist = (self.history[p] + rewards[m].tolist())[-self.buffer:]
            self.history[p] = hist
            ref = torch.tensor(hist, dtype=torch.float64) if len(hist) >= self.min_count else rewards
            out[m] = (rewards[m] - ref.mean()) / (ref.std(unbiased=False) + eps)
        return out.float()

    def state_dict(self) -> dict:
        return {"history": dict(self.history)}

    def load_state_dict(self, state: dict) -> None:
        self.history = defaultdict(list, {k: list(v) for k, v in state["history"].items()})


def ppo_clip(log_ratio: torch.Tensor, advantages: torch.Tensor, clip_range: float) -> torch.Tensor:
    """PPO's clipped surrogate (Schulman et al. 2017) per sample, as DDPO and Flow-GRPO use it:
    ``max(-A·ρ, -A·clip(ρ, 1-ε, 1+ε))`` with ρ = exp(log π − log π_old); its mean is the loss."""
    ratio = torch.exp(log_ratio)
    return torch.maximum(-advantages * ratio, -advantages * torch.clamp(ratio, 1 - clip_range, 1 + clip_range))


def ratio_stats(log_ratio: torch.Tensor, clip_range: float) -> dict[str, float]:
    """Clip fraction and ratio mean/min/max, for the logs."""
    ratio = torch.exp(log_ratio.detach())
    return {"clip_frac": ((ratio - 1).abs() > clip_range).float().mean().item(), "ratio_mean": ratio.mean().item(),
            "ratio_min": ratio.min().item(), "ratio_max": ratio.max().item()}


def guard_log_ratio(log_prob: torch.Tensor, old_log_prob: torch.Tensor, mean: torch.Tensor,
                    old_mean: torch.Tensor, std) -> torch.Tensor:
    """GRPO-Guard's ratio normalisation (Wang et al. 2025, arXiv:2510.22319): with per-step
    std s, ``s·(log π − log π_old) + mean‖μθ − μold‖²/(2s)`` removes the negative bias of the
    Gaussian log-ratio and equalises its scale across steps (log-probs averaged over dims)."""
    s = torch.as_tensor(std, dtype=log_prob.dtype, device=log_prob.device)
    return (log_prob - old_log_prob) * s + _flat_mean((mean - old_mean) ** 2) / (2 * s)


def gaussian_kl(mean: torch.Tensor, ref_mean: torch.Tensor, std) -> torch.Tensor:
    """KL between the step Gaussians of the policy and the reference (equal std), in closed
    form per dimension and averaged: ``‖μθ − μref‖² / (2σ²)`` (Flow-GRPO, eq. 12). ``[B]``."""
    std = torch.as_tensor(std, dtype=mean.dtype, device=mean.device)
    return _flat_mean((mean - ref_mean) ** 2) / (2 * std**2)


def optimality_prob(advantages: torch.Tensor, clip: float) -> torch.Tensor:
    """DiffusionNFT's r ∈ [0, 1]: ``clip(A, -c, c) / (2c) + 1/2``."""
    return (advantages.clamp(-clip, clip) / (2 * clip) + 0.5).clamp(0, 1)


def nft_loss(v: torch.Tensor, v_old: torch.Tensor, x0: torch.Tensor, r: torch.Tensor, beta: float,
             to_x0: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """DiffusionNFT (Zheng et al. 2025, arXiv:2509.16117, eq. 8 with its adaptive weights),
    per sample ``[B]``. Implicit policies ``v⁺ = (1-β)v_old + βv`` and ``v⁻ = (1+β)v_old − βv``
    give clean predictions ``x̂₀± = to_x0(v±)`` (for a flow ``x_t − t·v±``); the loss is
    ``[r‖x̂₀⁺ − x₀‖²/w⁺ + (1−r)‖x̂₀⁻ − x₀‖²/w⁻] / β``, each ``w = mean|x̂₀ − x₀|`` (no gradient,
    ≥ 1e-5) so every sample's error counts on the same scale."""
    v_old = v_old.detach()
    pos = to_x0((1 - beta) * v_old + beta * v)
    neg = to_x0((1 + beta) * v_old - beta * v)

    def weighted(pred):
        w = (pred.detach().double() - x0.double()).abs().mean(dim=tuple(range(1, x0.ndim)), keepdim=True)
        return _flat_mean((pred - x0) ** 2 / w.clamp_min(1e-5).to(pred.dtype))

    return (r * weighted(pos) + (1 - r) * weighted(neg)) / beta


def matching_log_prob(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Advantage-weighted matching (Xue et al. 2025, AWM): the denoising error as a
    log-likelihood surrogate, ``-mean‖v − (ε − x₀)‖²`` for a flow (``-mean‖ε̂ − ε‖²`` for an
    ε-predicting UNet), ``[B]``; AWM weights it by the advantage inside a PPO-clipped ratio."""
    return -_flat_mean((pred - target) ** 2)
