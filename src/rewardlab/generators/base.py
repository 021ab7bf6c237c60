"""The Generator contract: a policy that exposes its denoising trajectory.

* ``sample(prompts, *, seeds | noise, steps, guidance, stochastic) -> Trajectory``
* ``step(x_t, i, cond, prev_sample=None, noise=None) -> StepOutput``: one transition;
  with ``prev_sample`` it re-scores a stored transition with the same arithmetic.
* ``log_prob(trajectory, step_indices) -> [B, len(step_indices)]`` for training.

Per-sample randomness comes from per-sample ``torch.Generator``s seeded from
``seeds``, so an image never depends on which other samples share its batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Sequence, runtime_checkable

import torch

from .steps import StepOutput


@dataclass
class Trajectory:
    prompts: list[str]
    latents: torch.Tensor  # [B, T+1, ...]: x at every step, initial noise first
    timesteps: torch.Tensor  # [T+1]: noise level at each latent (σ for flows, t for DDIM)
    log_probs: torch.Tensor  # [B, T]: log p(latents[:, i+1] | latents[:, i]); 0 where deterministic
    stochastic: torch.Tensor  # [T] bool: which steps were sampled with noise
    images: torch.Tensor  # [B, 3, H, W] in [0, 1]
    x0_preds: torch.Tensor | None = None  # [B, T, ...]: predicted clean sample at each step
    guidance: float = 1.0
    seeds: list[int] | None = None

    @property
    def num_steps(self) -> int:
        return self.log_probs.shape[1]


@runtime_checkable
class Generator(Protocol):
    name: str

    def sample(self, prompts: Sequence[str], *, noise: torch.Tensor | None = None,
               seeds: Sequence[int] | None = None, steps: int = 20, guidance: float = 1.0,
               stochastic: bool = True) -> Trajectory: ...

    def step(self, x_t: torch.Tensor, i: int, cond: Any, prev_sample: torch.Tensor | None = None,
             noise: torch.Tensor | None = None) -> StepOutput: ...

    def log_prob(self, trajectory: Trajectory, step_indices: Sequence[int]) -> torch.Tensor: ...


def check_prompts(prompts: Sequence[str], max_words: int = 77) -> list[str]:
    """Reject an empty list, empty strings and over-long prompts with a clear error."""
    prompts = list(prompts) if not isinstance(prompts, str) else [prompts]
    if not prompts:
        raise ValueError("no prompts given")
    for p in prompts:
        if not isinstance(p, str) or not p.strip():
            raise ValueError(f"empty prompt in {prompts!r}")
        if len(p.split()) > max_words:
            raise ValueError(f"prompt of {len(p.split())} words exceeds {max_words}: {p[:60]!r}...")
    return prompts


def stochastic_window(steps: int, stochastic: bool, window: tuple[int, int] | None) -> torch.Tensor:
    """Which steps draw noise: all (``stochastic``), none, or only ``[start, end)``
    (Flow-GRPO-Fast / MixGRPO: SDE inside the window, ODE elsewhere)."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    mask = torch.full((steps,), bool(stochastic))
    if window is not None and stochastic:
        start, end = window
        if not 0 <= start < end <= steps:
            raise ValueError(f"stochastic window {window} must satisfy 0 <= start < end <= {steps}")
        mask[:] = False
        mask[start:end] = True
    return mask


def per_sample_generators(seeds: Sequence[int]) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(int(s)) for s in seeds]


def per_sample_randn(gens: list[torch.Generator], shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """One draw of ``shape`` from each sample's generator, stacked on the batch dim."""
    return torch.stack([torch.randn(shape, generator=g) for g in gens]).to(like.device, like.dtype)
