"""The one sampling loop, as plain functions over the Generator contract (k-diffusion's
style: the loop knows nothing of the network; guidance wraps ``denoise``).

* ``step``: one transition ``x_i → x_{i+1}``; with ``prev_sample`` it re-scores a stored
  transition with the same arithmetic that sampled it (DDPO, Flow-GRPO); ``steps_at_once``
  re-scores several steps of a batch in one network call (what GRPO trains on).
* ``sample``: a recorded ``Trajectory`` from prompts or a cached ``Cond``; ``start_step`` with
  ``noise = trajectory.state(i)`` resumes a trajectory from step ``i`` (the same seeds give
  the same remaining noise, so the rest is reproduced exactly); ``callback(i, x, x0_pred)``
  after every step.
* ``log_prob``: recompute ``log p(x_{i+1} | x_i)`` for stored steps, reusing a cached ``Cond``.
* ``generate_images``: what users run — deterministic sampling (flow ODE / DDIM η=0) in
  batches, images only.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from . import DEFAULT_STEPS
from .base import (Cond, Trajectory, check_prompts, per_sample_generators, per_sample_randn,
                   stochastic_window)
from .guidance import guided
from .steps import StepOutput


def step(gen, x: torch.Tensor, i: int, cond: Cond, timesteps: torch.Tensor, guidance: float = 1.0,
         prev_sample: torch.Tensor | None = None, noise: torch.Tensor | None = None,
         stochastic: bool = True, detach_uncond: bool = False) -> StepOutput:
    """Step ``i`` of the schedule ``timesteps``: one guided network evaluation, then the
    adapter's transition (SDE/ODE/DDIM) with its Gaussian log-prob (``detach_uncond``: see
    ``guided``)."""
    pred = guided(gen.denoise, guidance, detach_uncond)(x, timesteps[i], cond)
    return gen.transition(x, pred, i, timesteps, prev_sample=prev_sample, noise=noise, stochastic=stochastic)


def steps_at_once(gen, x: torch.Tensor, steps: Sequence[int], cond: Cond, timesteps: torch.Tensor,
                  guidance: float = 1.0, prev_sample: torch.Tensor | None = None,
                  detach_uncond: bool = False) -> list[StepOutput]:
    """``step`` at several steps of one batch (re-scoring, as training does) with ONE guided
    network call: ``x`` and ``prev_sample`` are ``[K, B, ...]``, the states at ``steps[k]``,
    stacked step-major with one timestep per row; then each step's transition. The outputs
    are those of K ``step`` calls up to float rounding (the network sees a K-times larger
    batch) and the graph kept for backward is as large, but one call amortises a small
    network's per-call cost (the DDPO benchmark's 16 samples x 8 steps: forward + backward
    22% faster on 2 CPU threads, 11% on 1 — benchmarks/peer_trl_ddpo.py)."""
    k, b = x.shape[:2]
    t = timesteps[list(steps)].repeat_interleave(b)
    pred = guided(gen.denoise, guidance, detach_uncond)(x.flatten(0, 1), t, Cond.cat([cond] * k)).unflatten(0, (k, b))
    return [gen.transition(x[j], pred[j], i, timesteps, prev_sample=None if prev_sample is None else prev_sample[j])
            for j, i in enumerate(steps)]


def sample(gen, prompts: Sequence[str] | Cond, *, noise: torch.Tensor | None = None,
           seeds: Sequence[int] | None = None, steps: int = DEFAULT_STEPS, guidance: float | None = None,
           stochastic: bool = True, window: tuple[int, int] | None = None,
           negative_prompts: Sequence[str] | None = None, height: int | None = None, width: int | None = None,
           start_step: int = 0, callback: Callable | None = None, grad: bool = False,
           grad_steps: int | None = None, checkpoint: bool = False, detach_uncond: bool = False) -> Trajectory:
    """Sample a trajectory. ``prompts`` may be a ``Cond`` from ``gen.condition`` (no re-encoding).
    ``guidance`` defaults to ``gen.default_guidance``. ``noise`` is the state at ``start_step``
    (the initial noise when 0). ``grad=True`` keeps the graph (reward backpropagation, noise
    optimisation): ``grad_steps=K`` truncates it to the last K steps (DRaFT-K, AlignProp) and
    ``checkpoint=True`` recomputes each step in the backward pass to save memory;
    ``detach_uncond`` keeps gradients out of guidance's unconditional pass (see ``guided``)."""
    cond = prompts if isinstance(prompts, Cond) else None
    if cond is None:
        prompts = check_prompts(prompts)  # a lone string is one prompt, not a list of characters
    if cond is not None and negative_prompts is not None:
        raise ValueError("negative prompts belong in gen.condition(prompts, negative_prompts), not next to a Cond")
    n = len(cond) if cond is not None else len(prompts)
    guidance = gen.default_guidance if guidance is None else float(guidance)
    mask = stochastic_window(steps, stochastic, window)
    if not 0 <= start_step < steps:
        raise ValueError(f"start_step must be in [0, {steps}), got {start_step}")
    if start_step and noise is None:
        raise ValueError("resuming from a step needs its state: noise=trajectory.state(start_step)")
    if seeds is None:
        seeds = torch.randint(0, 2**31 - 1, (n,)).tolist()
    if len(seeds) != n:
        raise ValueError(f"{n} prompts but {len(seeds)} seeds")
    shape = gen.latent_shape(height, width)
    gens = per_sample_generators(seeds)
    x = _initial_state(gens, shape, mask[:start_step], gen.device)
    if noise is not None:
        x = noise.to(gen.device).contiguous()  # a stored state is a strided view; kernels may differ on it
    if tuple(x.shape) != (n, *shape):
        raise ValueError(f"noise must have shape {(n, *shape)}, got {tuple(x.shape)}")
    timesteps = gen.schedule(steps, shape)
    first_grad = steps - (grad_steps or steps) if grad else steps
    with torch.set_grad_enabled(grad):
        if cond is None:
            cond = gen.condition(list(prompts), negative_prompts)
        latents, log_probs, x0s = [x], [], []
        for i in range(start_step, steps):
            eps = per_sample_randn(gens, shape, x) if mask[i] else None
            if i < first_grad:
                x = x.detach()
            with torch.set_grad_enabled(i >= first_grad):
                out = _run_step(gen, x, i, cond, timesteps, guidance, eps, bool(mask[i]),
                                checkpoint and i >= first_grad, detach_uncond)
            x = out.prev_sample
            latents.append(x)
            log_probs.append(out.log_prob)
            x0s.append(out.pred_x0)
            if callback is not None:
                callback(i, x, out.pred_x0)
        images = gen.decode(x)
    return Trajectory(cond.prompts, torch.stack(latents, 1), timesteps, torch.stack(log_probs, 1), mask, images,
                      torch.stack(x0s, 1), guidance, list(seeds), cond.negative_prompts, start_step)


def _initial_state(gens, shape, skipped: torch.Tensor, device) -> torch.Tensor:
    """Each sample's first draw, then skip the draws of the stochastic steps before a resume."""
    x = per_sample_randn(gens, shape, torch.empty(0, device=device))
    for _ in range(int(skipped.sum())):
        for g in gens:
            torch.randn(shape, generator=g)
    return x


def _run_step(gen, x, i, cond, timesteps, guidance, noise, stochastic, checkpoint, detach_uncond=False):
    fn = lambda x_: step(gen, x_, i, cond, timesteps, guidance, noise=noise, stochastic=stochastic,  # noqa: E731
                         detach_uncond=detach_uncond)
    if not checkpoint:
        return fn(x)
    from torch.utils.checkpoint import checkpoint as ckpt

    return ckpt(fn, x, use_reentrant=False)


def log_prob(gen, traj: Trajectory, steps: Sequence[int], cond: Cond | None = None) -> torch.Tensor:
    """Recompute ``log p(x_{i+1} | x_i)`` ``[B, len(steps)]`` for absolute steps ``i`` (with
    gradients, for training); ``cond`` reuses an encoded condition (e.g. one per training run)."""
    if cond is None:
        cond = gen.condition(traj.prompts, traj.negative_prompts)
    out = [step(gen, traj.state(i), i, cond, traj.timesteps, traj.guidance, prev_sample=traj.state(i + 1),
                stochastic=bool(traj.stochastic[i])).log_prob for i in steps]
    return torch.stack(out, 1)


def generate_images(gen, prompts: Sequence[str], seeds: Sequence[int], *, steps: int = DEFAULT_STEPS,
                    guidance: float | None = None, batch_size: int = 16,
                    negative_prompts: Sequence[str] | None = None, height: int | None = None,
                    width: int | None = None, progress: Callable[[int], None] | None = None) -> torch.Tensor:
    """Images ``[B, 3, H, W]`` in [0, 1] (on the CPU) for ``prompts`` (``guidance`` defaults to
    ``gen.default_guidance``, as in ``sample``); ``seeds[i]`` fixes image
    i whatever its batch. Deterministic steps (flow ODE / DDIM η=0), ``batch_size`` at a time
    (16: on 2 idle cores the ShapeWorld model runs 1.3x faster than at 64, same images —
    benchmarks/sampler_throughput.py),
    ``progress(k)`` after each batch of k."""
    prompts = list(prompts)
    if len(prompts) != len(seeds):
        raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
    if not prompts:
        raise ValueError("no prompts to sample")
    out = []
    with torch.inference_mode():
        for b in range(0, len(prompts), batch_size):
            negs = None if negative_prompts is None else list(negative_prompts[b:b + batch_size])
            traj = sample(gen, prompts[b:b + batch_size], seeds=list(seeds[b:b + batch_size]), steps=steps,
                          guidance=guidance, stochastic=False, negative_prompts=negs, height=height, width=width)
            out.append(traj.images.cpu())
            if progress is not None:
                progress(len(out[-1]))
    return torch.cat(out)
