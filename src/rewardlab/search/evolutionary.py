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
from .common import Search, method, top_per_group


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


def plan(budget: float, schedule: list[int], steps: int, first: float) -> tuple[int, list[int]]:
    """Initial population and children per later generation: ``first`` of the budget to the
    initial population, the rest shared equally by the later generations (a child started at
    step s costs (T − s)/T of a sample; what a generation cannot spend passes to the next)."""
    n0 = max(1, min(int(budget), round(first * budget)))
    left, children = budget - n0, []
    for g, st in enumerate(schedule[1:]):
        share = left / (len(schedule) - 1 - g)
        c = int(share / ((steps - st) / steps) + 1e-9)
        children.append(c)
        left -= c * (steps - st) / steps
    return n0, children


@method("evolutionary")
def evolutionary(s: Search, schedule: Sequence[float] = (0, 0, 0.25), first: float = 0.5, elite: float = 0.25,
                 beta: float = 0.5, tournament_size: int = 2) -> SearchResult:
    """``schedule``: where each generation evolves, as fractions of the sampler's steps (the
    first must be 0: the initial population, sampled from seeds); ``first``: the share of the budget the initial
    population gets; ``elite``: the fraction of a population carried into the next unchanged
    (at least one). Population sizes follow from the budget (``plan``)."""
    if not schedule or schedule[0] != 0 or sorted(schedule) != list(schedule) or not 0 <= schedule[-1] < 1:
        raise ValueError(f"schedule must start at 0 and rise within [0, 1), got {list(schedule)}")
    schedule = [min(s.steps - 1, round(f * s.steps)) for f in schedule]
    if not (0 < beta < 1 and 0 < elite <= 1 and 0 < first <= 1 and tournament_size >= 1):
        raise ValueError(f"need 0 < beta < 1, 0 < elite <= 1, 0 < first <= 1 and tournament_size >= 1; got "
                         f"beta={beta}, elite={elite}, first={first}, tournament_size={tournament_size}")
    n, children = plan(s.budget, schedule, s.steps, first)
    P = len(s.prompts)
    rng = torch.Generator().manual_seed(s.seed + 7919)
    marks = sorted(set(schedule[1:]) - {0})

    def run(x: torch.Tensor, rows: torch.Tensor, start: int) -> tuple[dict, torch.Tensor, torch.Tensor]:
        """Denoise from ``start``, keeping the states at the later evolution steps."""
        later = [m for m in marks if m > start]
        states = {start: x}
        for b0, b1 in zip([start, *later], [*later, s.steps]):
            x, _ = s.advance(x, s.cond[rows], b0, b1)
            states[b1] = x
        images = s.images(x)
        return states, images, s.score(images, rows)

    seeds = s.seeds(n)
    noise = s.noise(seeds)
    states, images, scores = run(noise, s.rows(n), 0)
    s.spend.log("generation", index=0, step=0, population=n, best=max(scores.tolist()))
    for g, (st, c) in enumerate(zip(schedule[1:], children), 1):
        if c == 0:
            continue
        e = max(1, round(elite * n))
        keep = top_per_group(scores, P, e)
        parents = torch.cat([p * n + tournament(scores[p * n:(p + 1) * n], c, tournament_size, rng)
                             for p in range(P)])
        eps = torch.randn((len(parents), *s.shape), generator=rng).to(noise)
        if st == 0:
            start = child_noise = mutate_noise(noise[parents], beta, eps)
        else:
            level = noise_std(s.gen, s.timesteps[st], s.shape)
            start, child_noise = mutate_state(states[st][parents], level, beta, eps), noise[parents]
        c_states, c_images, c_scores = run(start, torch.arange(P).repeat_interleave(c), st)
        order = torch.cat([torch.cat([keep[p * e:(p + 1) * e], len(scores) + torch.arange(p * c, (p + 1) * c)])
                           for p in range(P)])  # each prompt's elites, then its children: groups stay contiguous
        join = lambda a, b: torch.cat([a, b])[order]
        states = {m: join(states[m], c_states[m]) for m in c_states if m in states}
        images, scores, noise = join(images, c_images), join(scores, c_scores), join(noise, child_noise)
        seeds = [[*seeds, *[None] * len(parents)][i] for i in order.tolist()]
        n = e + c
        s.spend.log("generation", index=g, step=st, elites=e, children=c, best=max(scores.tolist()))
    return s.result(images, scores, noise, seeds, s.rows(n))
