"""Best-of-N: sample N candidates per prompt from N seeds, keep the one the reward likes best
(the baseline every search paper compares against at equal compute)."""

from __future__ import annotations

from .budget import SearchResult
from .common import Search, method


@method("best_of_n")
def best_of_n(s: Search) -> SearchResult:
    """N = ⌊budget⌋ full samples per prompt, seeds ``seed .. seed+N-1``."""
    n = int(s.budget)
    rows, seeds = s.rows(n), s.seeds(n)
    noise = s.noise(seeds)
    x, _ = s.advance(noise, s.cond[rows], 0, s.steps)
    images = s.images(x)
    scores = s.score(images, rows)
    s.spend.log("sampled", candidates=n)
    return s.result(images, scores, noise, seeds, rows)
