"""The Generator contract: a policy that exposes its denoising trajectory.

Every adapter (ShapeWorld, SD, SD3, FLUX) provides, and ``tests/unit/test_generators_common.py``
checks for each of them:

* ``condition(prompts, negative_prompts=None) -> Cond``: the prompts encoded once, with their
  unconditional states (the negative prompts, or the empty prompt) for guidance. A ``Cond``
  is indexed, sliced and ``repeat``-ed without re-encoding (groups, particles, survivors).
  Its states are constants (encoded without gradients: the text encoders stay frozen), so a
  cached ``Cond`` gives bitwise what encoding inside ``sample`` gives.
* ``denoise(x, t, cond) -> prediction``: ONE network pass, no guidance — velocity ``ε - x0``
  for flows, ``ε`` for SD. ``t`` is a noise level in the adapter's units (σ in [0, 1] for
  flows, the DDPM timestep for SD), a scalar or one per sample. Guidance wraps this function
  once for every adapter (``generators.guidance.guided``).
* ``add_noise(x0, noise, t)``: the forward process at ``t`` (what Diffusion-DPO and
  DiffusionNFT train on); ``encode(images) / decode(latents)``: images ``[B,3,H,W]`` in
  [0, 1] to the denoiser's space and back (the VAE for latent models, ``2x - 1`` for ShapeWorld).
* ``schedule(steps, shape) -> [T+1]`` noise levels; ``transition(x, pred, i, timesteps, ...)
  -> StepOutput``: the step arithmetic given a prediction; ``latent_shape(height, width)``.
* ``reference()``: a context in which the denoiser runs with its LoRA adapters off (KL, NFT).

The sampling loop, the step and the log-prob are plain functions over that contract in
``generators.sampling`` (``sample``, ``step``, ``log_prob``, ``generate_images``); adapters
also expose them as methods (``gen.sample(...)``) through ``TrajectorySampler``.

Per-sample randomness comes from per-sample ``torch.Generator``s seeded from ``seeds``: the
first draw is the initial noise (replaced by ``noise`` when given), then one draw per
stochastic step, so an image never depends on which other samples share its batch and a
trajectory can be resumed from any step.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence, runtime_checkable

import torch

from .steps import StepOutput


@dataclass
class Trajectory:
    prompts: list[str]
    latents: torch.Tensor  # [B, T-s+1, ...]: x at steps s..T (s = start_step; x_s first)
    timesteps: torch.Tensor  # [T+1]: the whole schedule (σ for flows, t for DDIM), indexed by absolute step
    log_probs: torch.Tensor  # [B, T-s]: log p(x_{i+1} | x_i) for i = s..T-1; 0 where deterministic
    stochastic: torch.Tensor  # [T] bool: which steps are sampled with noise
    images: torch.Tensor  # [B, 3, H, W] in [0, 1]
    x0_preds: torch.Tensor | None = None  # [B, T-s, ...]: predicted clean sample at each step
    guidance: float = 1.0
    seeds: list[int] | None = None
    negative_prompts: list[str] | None = None
    start_step: int = 0  # s: the step this trajectory was started (or resumed) from

    @property
    def num_steps(self) -> int:
        """T, the length of the whole schedule (not only the steps stored here)."""
        return len(self.timesteps) - 1

    def state(self, i: int) -> torch.Tensor:
        """``x_i`` for an absolute step ``i`` in ``[start_step, T]``: where to resume from."""
        if not self.start_step <= i <= self.num_steps:
            raise ValueError(f"step {i} is not stored (this trajectory holds steps {self.start_step}..{self.num_steps})")
        return self.latents[:, i - self.start_step]


def _index(idx, n: int):
    """An int, slice, list or tensor of indices, or a boolean mask → something tensors and
    lists index alike."""
    if isinstance(idx, int):
        idx = range(n)[idx]  # negative indices, bounds check
        return slice(idx, idx + 1)
    if isinstance(idx, slice):
        return idx
    idx = torch.as_tensor(idx)
    if idx.dtype == torch.bool:  # a mask of survivors
        if idx.shape != (n,):
            raise IndexError(f"a boolean mask must have {n} entries, got {tuple(idx.shape)}")
        return idx.nonzero().reshape(-1)
    return idx.long().reshape(-1)


@dataclass
class Cond:
    """Encoded prompts: per-sample tensors (batch first) for the prompts (``pos``) and for
    their unconditional counterparts (``neg``: negative prompts or the empty prompt), plus
    tensors the whole batch shares (FLUX's text position ids)."""

    prompts: list[str]
    pos: dict[str, torch.Tensor]
    neg: dict[str, torch.Tensor] | None = None
    negative_prompts: list[str] | None = None
    shared: dict[str, torch.Tensor] = field(default_factory=dict)
    _stacked: "Cond | None" = field(default=None, init=False, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.prompts)

    def __getitem__(self, idx) -> "Cond":
        """A sub-batch (int, slice, list or tensor of indices, boolean mask); tensors are indexed,
        never re-encoded."""
        i = _index(idx, len(self))
        pick = (lambda xs: xs[i]) if isinstance(i, slice) else (lambda xs: [xs[int(k)] for k in i])
        sub = lambda d: None if d is None else {k: v[i] for k, v in d.items()}
        negs = None if self.negative_prompts is None else pick(self.negative_prompts)
        return Cond(pick(self.prompts), sub(self.pos), sub(self.neg), negs, self.shared)

    def repeat(self, n: int) -> "Cond":
        """Each prompt ``n`` times in a row (a group of ``n`` samples per prompt)."""
        return self[torch.arange(len(self)).repeat_interleave(n)]

    @staticmethod
    def cat(conds: Sequence["Cond"]) -> "Cond":
        """Concatenate conditions of the same generator along the batch."""
        first = conds[0]
        join = lambda ds: None if any(d is None for d in ds) else {k: torch.cat([d[k] for d in ds]) for k in ds[0]}
        negs = None if any(c.negative_prompts is None for c in conds) else sum((c.negative_prompts for c in conds), [])
        return Cond(sum((c.prompts for c in conds), []), join([c.pos for c in conds]),
                    join([c.neg for c in conds]), negs, first.shared)

    def stacked(self) -> "Cond":
        """Conditional states first, then unconditional ones: the batch a guided pass runs on
        (computed once per condition)."""
        if self.neg is None:
            raise ValueError("this condition holds no unconditional states, so guidance != 1 cannot use it")
        if self._stacked is None:
            uncond = self.negative_prompts or [""] * len(self)
            self._stacked = Cond(self.prompts + uncond, {k: torch.cat([v, self.neg[k]]) for k, v in self.pos.items()},
                                 None, None, self.shared)
        return self._stacked


@runtime_checkable
class Generator(Protocol):
    name: str

    def condition(self, prompts: Sequence[str], negative_prompts: Sequence[str] | None = None) -> Cond: ...

    def denoise(self, x: torch.Tensor, t: torch.Tensor, cond: Cond) -> torch.Tensor: ...

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor: ...

    def encode(self, images: torch.Tensor) -> torch.Tensor: ...

    def decode(self, latents: torch.Tensor) -> torch.Tensor: ...

    def schedule(self, steps: int, shape: tuple[int, ...]) -> torch.Tensor: ...

    def transition(self, x: torch.Tensor, pred: torch.Tensor, i: int, timesteps: torch.Tensor,
                   prev_sample: torch.Tensor | None = None, noise: torch.Tensor | None = None,
                   stochastic: bool = True) -> StepOutput: ...

    def latent_shape(self, height: int | None = None, width: int | None = None) -> tuple[int, ...]: ...

    def reference(self) -> contextlib.AbstractContextManager: ...

    def sample(self, prompts: Any, **kw) -> Trajectory: ...

    def log_prob(self, trajectory: Trajectory, steps: Sequence[int], cond: Cond | None = None) -> torch.Tensor: ...


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


def uncond_prompts(prompts: list[str], negative_prompts: Sequence[str] | None) -> list[str]:
    """The unconditional side of guidance: the negative prompts, or the empty prompt."""
    if negative_prompts is None:
        return [""] * len(prompts)
    negative_prompts = [negative_prompts] if isinstance(negative_prompts, str) else list(negative_prompts)
    if len(negative_prompts) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(negative_prompts)} negative prompts")
    return negative_prompts


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
    """The plain functions of ``generators.sampling`` as methods, and ``reference()``; an
    adapter mixes this in and provides the contract's network-facing half."""

    default_guidance: float  # set by each adapter from DEFAULT_GUIDANCE (FLUX: 1, it is distilled)

    def sample(self, prompts, **kw) -> Trajectory:
        from .sampling import sample

        return sample(self, prompts, **kw)

    def log_prob(self, trajectory: Trajectory, steps: Sequence[int], cond: Cond | None = None) -> torch.Tensor:
        from .sampling import log_prob

        return log_prob(self, trajectory, steps, cond)

    def reference(self):
        from .lora import lora_disabled

        return lora_disabled(self.denoiser)
