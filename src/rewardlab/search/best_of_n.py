"""Best-of-N: sample N candidates per prompt from N seeds, keep the one the reward likes best
(the baseline every search paper compares against at equal compute). With a ``target`` —
a score known to be the reward's best, such as a verifier's 1 — candidates are drawn one
seed at a time and a prompt stops as soon as one reaches it (rejection sampling): the same
image best-of-N picks (the first best in seed order), for the NFEs spent up to it."""

from __future__ import annotations

import torch

from .budget import SearchResult
from .common import Search, method


@method("best_of_n")
def best_of_n(s: Search, target: float | None = None) -> SearchResult:
    """N = ⌊budget⌋ full samples per prompt, seeds ``seed .. seed+N-1``; ``target``: stop a
    prompt once a candidate scores at least this."""
    n = int(s.budget)
    step = n if target is None else 1
    open_ = torch.arange(len(s.prompts))
    best = torch.full((len(s.prompts),), -torch.inf)
    parts = []
    for k0 in range(0, n, step):
        k = min(step, n - k0)
        rows = open_.repeat_interleave(k)
        seeds = [s.seed + k0 + j for _ in open_.tolist() for j in range(k)]
        noise = s.noise(seeds)
        x, _ = s.advance(noise, s.cond[rows], 0, s.steps)
        images = s.images(x)
        scores = s.score(images, rows)
        parts.append((images, scores, noise, seeds, rows))
        best = best.scatter_reduce(0, rows, scores, "amax")
        if target is not None:
            open_ = open_[best[open_] < target]
        s.spend.log("sampled", candidates=k0 + k, open=len(open_))
        if len(open_) == 0:
            break
    images, scores, noise, rows = (torch.cat([p[i] for p in parts]) for i in (0, 1, 2, 4))
    return s.result(images, scores, noise, sum((p[3] for p in parts), []), rows)
