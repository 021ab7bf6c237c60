"""Aggregating several rewards into one signal. Small pure functions over ``[B]`` tensors;
``groups`` is a ``[B]`` tensor of group ids (samples of the same prompt)."""

from __future__ import annotations

from typing import Callable, Mapping

import torch


def weighted_sum(scores: Mapping[str, torch.Tensor], weights: Mapping[str, float] | None = None) -> torch.Tensor:
    """Σ_k w_k r_k (weights default to 1)."""
    weights = weights or {}
    unknown = set(weights) - set(scores)
    if unknown:
        raise KeyError(f"weights for unknown rewards {sorted(unknown)}; have {sorted(scores)}")
    return sum(weights.get(k, 1.0) * v for k, v in scores.items())


def group_normalize(r: torch.Tensor, groups: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """(r - mean_g) / (std_g + eps) within each group (GRPO's advantage; a group of one gets 0)."""
    out = torch.zeros_like(r, dtype=torch.float32)
    for g in groups.unique():
        m = groups == g
        x = r[m].float()
        out[m] = (x - x.mean()) / (x.std(unbiased=False) + eps) if m.sum() > 1 else 0.0
    return out


def decoupled_advantages(scores: Mapping[str, torch.Tensor], groups: torch.Tensor,
                         weights: Mapping[str, float] | None = None) -> torch.Tensor:
    """GDPO-style: normalise each reward within its group *separately*, then weight and sum,
    so a reward with a large scale or spread cannot drown the others."""
    return weighted_sum({k: group_normalize(v, groups) for k, v in scores.items()}, weights)


def log_tamed(scores: Mapping[str, torch.Tensor], weights: Mapping[str, float] | None = None,
              threshold: float | str = "mean") -> torch.Tensor:
    """PaCo-RL's log-tamed weighted sum: a reward whose coefficient of variation over the
    batch, h = std / mean, exceeds ``threshold`` (a number, or the ``"mean"``/``"median"``
    of all rewards' h) enters as log(1 + r), so one fast-moving reward cannot dominate
    the sum. Rewards must be > -1 where they are tamed."""
    h = {k: (v.float().std(unbiased=False) / (v.float().mean() + 1e-6)).item() for k, v in scores.items()}
    if isinstance(threshold, str):
        if threshold not in ("mean", "median"):
            raise ValueError(f"threshold must be a number, 'mean' or 'median', got {threshold!r}")
        threshold = float(getattr(torch.tensor(list(h.values())), threshold)())
    tamed = {}
    for k, v in scores.items():
        if h[k] > threshold:
            if bool((v <= -1).any()):
                raise ValueError(f"reward {k!r} has values <= -1; log(1 + r) is undefined (shift it first)")
            v = torch.log1p(v.float())
        tamed[k] = v
    return weighted_sum(tamed, weights)


def pareto_front(scores: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Parrot-style selection: ``[B]`` bool, True where no other sample is at least as good
    on every reward and strictly better on one."""
    s = torch.stack(list(scores.values()), 1)  # [B, K]
    ge = (s[:, None, :] >= s[None, :, :]).all(-1)  # ge[j, i]: j at least as good as i everywhere
    gt = (s[:, None, :] > s[None, :, :]).any(-1)
    return ~(ge & gt).any(0)


def uncertainty_penalized(ensemble: torch.Tensor, penalty: float = 1.0) -> torch.Tensor:
    """Mean minus ``penalty`` × std over an ensemble's ``[M, B]`` scores: samples the judges
    disagree on earn less (a guard against exploiting one judge's blind spot)."""
    if ensemble.ndim != 2 or len(ensemble) < 2:
        raise ValueError(f"need [M >= 2, B] ensemble scores, got {tuple(ensemble.shape)}")
    return ensemble.mean(0) - penalty * ensemble.std(0, unbiased=False)


def pairwise_win_rate(compare: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                      groups: torch.Tensor) -> torch.Tensor:
    """Pref-GRPO (Wang et al. 2025, arXiv:2508.20751): each sample's mean probability of beating
    the other members of its group, from a pairwise judge ``compare(idx_a, idx_b) -> P(a beats b)``
    over sample indices; an unreadable verdict (NaN) counts as a tie, half to each. Each
    unordered pair is judged once, P(b beats a) = 1 − P(a beats b): a judge sensitive to the
    order of presentation averages both orders itself (as ``vlm_judge.compare`` does)."""
    out = torch.zeros(len(groups))
    for g in groups.unique():
        idx = torch.nonzero(groups == g).flatten()
        if len(idx) < 2:
            continue
        a, b = torch.combinations(idx, 2).T
        p = compare(a, b).float().nan_to_num(0.5)
        wins = torch.zeros(len(groups)).index_add_(0, a, p).index_add_(0, b, 1 - p)
        out[idx] = wins[idx] / (len(idx) - 1)
    return out
