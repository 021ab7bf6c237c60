"""Evolutionary search (EvoSearch, He et al. 2025, "Scaling Image and Video Generation via
Test-Time Evolutionary Search"): a population over the initial noise and, at scheduled
steps, over intermediate states. Each generation keeps its elites, picks parents by
tournament, and mutates them in a way that keeps the noise distribution:
``√(1−β²)·x + β·ε`` for initial noise, ``x + β·sₜ·ε`` for a state at noise std ``sₜ``;
children are denoised from there to the end and scored."""

from __future__ import annotations

import math
from typing import Sequence

import torch

from .budget import SearchResult
from .common import Search, method, largest, top_per_group


def mutate_noise(x: torch.Tensor, beta: float, eps: torch.Tensor) -> torch.Tensor:
    """Initial-noise mutation: a unit-variance Gaussian stays one (variance (1−β²) + β²)."""
    return math.sqrt(1 - beta**2) * x + beta * eps


def mutate_state(x: torch.Tensor, noise_std: float, beta: float, eps: torch.Tensor) -> torch.Tensor:
    """Intermediate-state mutation: fresh noise at the state's own noise scale."""
    return x + beta * noise_std * eps


def noise_std(gen, t, shape) -> float:
    """The noise scale of the forward process at level ``t`` (σ for flows, √(1−ᾱ) for DDPM)."""
    return float(gen.add_noise(torch.zeros(1, *shape), torch.ones(1, *shape), t).mean())


def tournament(scores: torch.Tensor, n: int, size: int, rng: torch.Generator) -> torch.Tensor:
    """``n`` parent indices into ``scores``, each the best of ``size`` drawn at random."""
    draws = torch.randint(len(scores), (n, size), generator=rng)
    return draws.gather(1, scores[draws].argmax(1, keepdim=True)).reshape(-1)


@method("evolutionary")
def evolutionary(s: Search, schedule: Sequence[int] = (0, 10, 15), elite: float = 0.25, beta: float = 0.5,
                 tournament_size: int = 2) -> SearchResult:
    """``schedule``: the step each generation evolves at (the first must be 0: the initial
    population); ``elite``: the fraction of each population carried over unchanged. The
    population size is the largest that fits the budget."""
    schedule = [int(v) for v in schedule]
    if not schedule or schedule[0] != 0 or sorted(schedule) != schedule or schedule[-1] >= s.steps:
        raise ValueError(f"schedule must start at 0 and rise within [0, {s.steps}), got {schedule}")
    if not 0 < beta < 1:
        raise ValueError(f"beta must be in (0, 1), got {beta}")
    n_elite = lambda n: n if n == 1 else max(1, round(elite * n))
    cost = lambda n: n + sum((n - n_elite(n)) * (s.steps - st) / s.steps for st in schedule[1:])
    n = largest(cost, s.budget)
    e, P = n_elite(n), len(s.prompts)
    rng = torch.Generator().manual_seed(s.seed + 7919)
    marks = sorted(set(schedule[1:]))

    def run(x: torch.Tensor, rows: torch.Tensor, start: int) -> tuple[dict, torch.Tensor, torch.Tensor]:
        """Denoise from ``start``, keeping the states at the later evolution steps."""
        states = {start: x}
        for b0, b1 in zip([start] + [m for m in marks if m > start], [m for m in marks if m > start] + [s.steps]):
            x, _ = s.advance(x, s.cond[rows], b0, b1)
            states[b1] = x
        images = s.images(x)
        return states, images, s.score(images, rows)

    rows, seeds = s.rows(n), s.seeds(n)
    noise = s.noise(seeds)
    states, images, scores = run(noise, rows, 0)
    s.spend.log("generation", index=0, step=0, population=n, best=max(scores.tolist()))
    for g, st in enumerate(schedule[1:], 1):
        if n == e:
            break
        keep = top_per_group(scores, P, e)
        parents = torch.cat([p * n + tournament(scores[p * n:(p + 1) * n], n - e, tournament_size, rng)
                             for p in range(P)])
        eps = torch.randn((len(parents), *s.shape), generator=rng).to(noise)
        if st == 0:
            start = mutate_noise(noise[parents], beta, eps)
            child_noise = start
        else:
            level = noise_std(s.gen, s.timesteps[st], s.shape)
            start, child_noise = mutate_state(states[st][parents], level, beta, eps), noise[parents]
        c_states, c_images, c_scores = run(start, rows[parents], st)
        order = torch.cat([torch.cat([keep[p * e:(p + 1) * e], len(scores) + torch.arange(p * (n - e), (p + 1) * (n - e))])
                           for p in range(P)])  # each prompt's elites, then its children: groups stay contiguous
        join = lambda a, b: torch.cat([a, b])[order]
        states = {m: join(states[m], c_states[m]) for m in c_states if m in states}
        images, scores, noise = join(images, c_images), join(scores, c_scores), join(noise, child_noise)
        seeds = [([*seeds, *[None] * len(parents)])[i] for i in order.tolist()]
        s.spend.log("generation", index=g, step=st, children=n - e, best=max(scores.tolist()))
    return s.result(images, scores, noise, seeds, s.rows(n))
