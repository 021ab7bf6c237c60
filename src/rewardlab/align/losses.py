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


def diffusion_dpo_loss(err_w: torch.Tensor, err_l: torch.Tensor, ref_err_w: torch.Tensor,
                       ref_err_l: torch.Tensor, beta: float) -> tuple[torch.Tensor, dict[str, float]]:
    """Diffusion-DPO (Wallace et al. 2023, arXiv:2311.12908, eq. 14, as its released
    ``train.py``), per pair ``[B]``: ``−log σ(−β/2 · [(e_w − e_ref,w) − (e_l − e_ref,l)])``
    with ``e = mean‖prediction − target‖²`` of the winner (w) and the loser (l) noised with the
    same ε at the same t — the target is ε for an ε-predicting UNet and the velocity ε − x₀
    for a flow (the same loss on the flow's own denoising error: Flow-DPO, Liu et al. 2025,
    arXiv:2501.13918); T·ω(λ_t) is folded into β (5000 for SD 1.5/SDXL). Stats: ``implicit_acc``
    (share of pairs with a positive inside term: the policy moved towards the winner more than
    the reference) and its mean ``margin``."""
    inside = -0.5 * beta * ((err_w - ref_err_w.detach()) - (err_l - ref_err_l.detach()))
    stats = {"implicit_acc": (inside > 0).float().mean().item(), "margin": inside.mean().item()}
    return -torch.nn.functional.logsigmoid(inside), stats


def bt_loss(s_a: torch.Tensor, s_b: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Bradley–Terry negative log-likelihood (Bradley & Terry 1952; the reward-model loss of
    InstructGPT, Ouyang et al. 2022, arXiv:2203.02155, eq. 1), averaged over pairs:
    ``−[y log σ(s_a − s_b) + (1 − y) log σ(s_b − s_a)]`` with ``y`` = P(a preferred) ∈ {1, 0, 0.5};
    a tie (y = 0.5) pulls the two scores together."""
    d = s_a - s_b
    logsig = torch.nn.functional.logsigmoid
    return -(label * logsig(d) + (1 - label) * logsig(-d)).mean()


def rank_dpo_loss(excess: torch.Tensor, scores: torch.Tensor, beta: float,
                  dcg: bool = True) -> tuple[torch.Tensor, dict[str, float]]:
    """RankDPO (Karthik et al. 2024, arXiv:2410.18013, eq. 7) over one judged group ``[n]``:
    each pair with ``ψ_i > ψ_j`` adds ``−w_ij log σ(−β/2 · (excess_i − excess_j))``, with
    ``excess = e − e_ref`` the Diffusion-DPO error terms (so a pair is exactly
    ``diffusion_dpo_loss``) and ``w_ij = ΔDCG_ij = |G_i − G_j|·|1/log₂(1+τ_i) − 1/log₂(1+τ_j)|``
    (gain ``G = 2^ψ − 1``, ``τ`` the rank under the model's own implicit reward ``−excess``, no
    gradient); ``dcg=False`` weights every pair 1 (all pairs, D3PO-style). Returns the
    weighted mean over pairs (0 with no decided pair) and its stats."""
    i, j = torch.nonzero(scores[:, None] > scores[None, :], as_tuple=True)
    if not len(i):
        return excess.sum() * 0, {}
    inside = -0.5 * beta * (excess[i] - excess[j])
    w = torch.ones_like(inside)
    if dcg:
        with torch.no_grad():
            tau = torch.empty_like(excess).scatter_(0, torch.argsort(excess), torch.arange(1., len(excess) + 1))
            gain, disc = 2.0 ** scores.to(excess) - 1, 1 / torch.log2(1 + tau)
            w = (gain[i] - gain[j]).abs() * (disc[i] - disc[j]).abs()
    loss = (w * -torch.nn.functional.logsigmoid(inside)).sum() / w.sum().clamp_min(1e-12)
    return loss, {"implicit_acc": (inside > 0).float().mean().item(), "margin": inside.mean().item()}
