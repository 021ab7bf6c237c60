"""Pruning (after TTSnap, "Test-Time Scaling of Diffusion Models via Noise-Aware Pruning",
2025): start many candidates, score the x0-prediction of each at a few checkpoints of the
schedule, keep the best fraction at each, and finish only the survivors — most of the budget
goes to candidates that already look right. TTSnap trains noise-aware reward models for the
early checks; here the given reward scores the decoded x0-predictions directly."""

from __future__ import annotations

import math
from typing import Sequence

from .budget import SearchResult
from .common import Search, method, largest, top_per_group


@method("prune")
def prune(s: Search, checks: Sequence[float] = (0.3,), keep: float = 0.25) -> SearchResult:
    """``checks``: where to score, as fractions of the schedule (0.3: on ShapeWorld the
    x0-prediction after 6 of 20 steps already gets the verifier's final verdict right ~9 times
    in 10); ``keep``: the fraction of candidates that survive each check (at least one). The
    number of starting candidates is the largest that fits the budget."""
    if not 0 < keep <= 1:
        raise ValueError(f"keep must be in (0, 1], got {keep}")
    at = sorted({min(s.steps - 1, max(1, round(f * s.steps))) for f in checks}) if s.steps > 1 else []
    bounds = [0, *at, s.steps]

    def survivors(n: int) -> list[int]:
        counts = [n]
        for _ in at:
            counts.append(max(1, math.ceil(counts[-1] * keep)))
        return counts

    def cost(n: int) -> float:  # in samples per prompt
        return sum(c * (b1 - b0) / s.steps for c, b0, b1 in zip(survivors(n), bounds, bounds[1:]))

    n = largest(cost, s.budget)
    rows, seeds = s.rows(n), s.seeds(n)
    noise = s.noise(seeds)
    x = noise
    for count, (b0, b1) in zip(survivors(n)[1:], zip(bounds, bounds[1:])):
        x, x0 = s.advance(x, s.cond[rows], b0, b1)
        if count == len(x) // len(s.prompts):
            continue  # nothing to prune (a budget too small for more candidates)
        scores = s.score(s.images(x0), rows)
        idx = top_per_group(scores, len(s.prompts), count)
        s.spend.log("pruned", step=b1, kept=count, of=len(x) // len(s.prompts),
                    best=max(scores.tolist()))
        x, rows, noise, seeds = x[idx], rows[idx], noise[idx], [seeds[i] for i in idx.tolist()]
    x, _ = s.advance(x, s.cond[rows], bounds[-2], s.steps)
    images = s.images(x)
    return s.result(images, s.score(images, rows), noise, seeds, rows)
