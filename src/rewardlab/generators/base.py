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
    negative_prompts: list[str] | None = None

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


class TrajectorySampler:
    """The sampling loop and log-prob recomputation every adapter shares.

    An adapter provides ``condition(prompts, guidance, steps, negative_prompts)`` (an
    object with ``.guidance``), ``step(x, i, cond, prev_sample, noise, stochastic)``,
    ``latent_shape(height, width)`` and ``decode(latents) -> [B,3,H,W] in [0,1]``."""

    device: torch.device

    def sample(self, prompts, *, noise=None, seeds=None, steps=20, guidance=1.0, stochastic=True,
               window: tuple[int, int] | None = None, negative_prompts=None, height=None, width=None,
               grad: bool = False, grad_steps: int | None = None, checkpoint: bool = False) -> Trajectory:
        """``grad=True`` keeps the graph (reward backpropagation, noise optimisation):
        ``grad_steps=K`` truncates it to the last K steps (DRaFT-K, AlignProp) and
        ``checkpoint=True`` recomputes each step in the backward pass to save memory."""
        prompts = check_prompts(prompts)
        mask = stochastic_window(steps, stochastic, window)
        if seeds is None:
            seeds = torch.randint(0, 2**31 - 1, (len(prompts),)).tolist()
        if len(seeds) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
        gens = per_sample_generators(seeds)
        shape = self.latent_shape(height, width)
        like = torch.empty(0, device=self.device)
        x = per_sample_randn(gens, shape, like) if noise is None else noise.to(self.device)
        if tuple(x.shape) != (len(prompts), *shape):
            raise ValueError(f"noise must have shape {(len(prompts), *shape)}, got {tuple(x.shape)}")
        first_grad = steps - (grad_steps or steps) if grad else steps
        with torch.set_grad_enabled(grad):
            cond = self.condition(prompts, guidance, steps, negative_prompts)
            latents, log_probs, x0s = [x], [], []
            for i in range(steps):
                eps = per_sample_randn(gens, shape, x) if mask[i] else None
                if i < first_grad:
                    x = x.detach()
                with torch.set_grad_enabled(i >= first_grad):
                    out = self._run_step(x, i, cond, eps, bool(mask[i]), checkpoint and i >= first_grad)
                x = out.prev_sample
                latents.append(x)
                log_probs.append(out.log_prob)
                x0s.append(out.pred_x0)
            images = self.decode(x)
        return Trajectory(prompts, torch.stack(latents, 1), cond.timesteps, torch.stack(log_probs, 1),
                          mask, images, torch.stack(x0s, 1), guidance, list(seeds), negative_prompts)

    def _run_step(self, x, i, cond, noise, stochastic, checkpoint):
        if not checkpoint:
            return self.step(x, i, cond, noise=noise, stochastic=stochastic)
        from torch.utils.checkpoint import checkpoint as ckpt

        return ckpt(lambda x_: self.step(x_, i, cond, noise=noise, stochastic=stochastic), x,
                    use_reentrant=False)

    def log_prob(self, traj: Trajectory, step_indices: Sequence[int]) -> torch.Tensor:
        """Recompute ``log p(x_{i+1} | x_i)`` for the given steps (with gradients)."""
        cond = self.condition(traj.prompts, traj.guidance, traj.num_steps, traj.negative_prompts)
        out = [self.step(traj.latents[:, i], i, cond, prev_sample=traj.latents[:, i + 1],
                         stochastic=bool(traj.stochastic[i])).log_prob for i in step_indices]
        return torch.stack(out, 1)
