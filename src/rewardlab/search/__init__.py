"""Test-time search: plain functions
``method(generator, reward, prompts, budget, seed, **options) -> SearchResult`` with the
budget in single-sample equivalents per prompt, spent and counted in network function
evaluations (``budget.py``) so methods compare at equal cost. ``search(name, ...)`` runs one
by name; ``METHODS`` lists them."""

from __future__ import annotations

from .best_of_n import best_of_n
from .budget import BudgetError, SearchResult, nfe_per_sample
from .evolutionary import evolutionary
from .noise_opt import noise_opt
from .prompt_search import prompt_search
from .prune import prune
from .smc import smc

METHODS = {
    "best_of_n": best_of_n,
    "noise_opt": noise_opt,
    "evolutionary": evolutionary,
    "prune": prune,
    "smc": smc,
    "prompt_search": prompt_search,
}


def search(method: str, gen, reward, prompts, budget: float, seed: int = 0, **options) -> SearchResult:
    """Run the search ``method`` (a name in ``METHODS``)."""
    if method not in METHODS:
        raise ValueError(f"unknown search method {method!r}; expected one of: {', '.join(METHODS)}")
    return METHODS[method](gen, reward, prompts, budget, seed, **options)


__all__ = ["METHODS", "BudgetError", "SearchResult", "nfe_per_sample", "search", *METHODS]
