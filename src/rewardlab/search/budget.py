"""What a search may spend and what it spent: network function evaluations (NFEs) counted
by a wrapper around the generator's ``denoise``, reward calls counted per image, and the
``SearchResult`` every method returns.

Budgets are given in *single-sample equivalents* per prompt: one equivalent is one plain
sample — ``steps`` network passes, two per step under classifier-free guidance (the guided
pass runs the conditional and unconditional rows in one call, so counting the rows a call
sees counts a guided step as two). A pass that records a graph for a backward pass (noise
optimisation) counts three rows per row: the forward and its backward (≈ two forwards).
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch


class BudgetError(ValueError):
    """A search asked to spend less than one sample, or more than its budget."""


def nfe_per_sample(steps: int, guidance: float) -> int:
    """Network passes of one plain sample: ``steps``, doubled under guidance (``guidance != 1``)."""
    return steps * (1 if float(guidance) == 1.0 else 2)


class Spend:
    """Counts NFEs (rows through ``denoise``) and reward calls (images scored), keeps a trace of
    what each phase of a search cost, and reports progress as ``progress(nfe, limit)``."""

    def __init__(self, limit: int, progress: Callable[[int, int], None] | None = None):
        self.limit, self.progress = limit, progress
        self.nfe = 0
        self.reward_calls = 0
        self.trace: list[dict[str, Any]] = []
        self.start = time.perf_counter()
        self.paused = False

    @contextlib.contextmanager
    def backward(self):
        """A backward pass: already paid for by the ×3 of its forward, so passes it reruns
        (gradient checkpointing) are not counted again."""
        self.paused = True
        try:
            yield
        finally:
            self.paused = False

    def add_nfe(self, rows: int) -> None:
        if self.paused:
            return
        self.nfe += rows
        if self.nfe > self.limit:
            raise BudgetError(f"the search spent {self.nfe} NFEs, over its budget of {self.limit}")
        if self.progress is not None:
            self.progress(self.nfe, self.limit)

    def log(self, event: str, **info) -> None:
        self.trace.append({"event": event, "nfe": self.nfe, "reward_calls": self.reward_calls,
                           "seconds": round(time.perf_counter() - self.start, 3), **info})

    @contextlib.contextmanager
    def counting(self, gen):
        """Route ``gen.denoise`` through the counter while the search runs (the sampling
        functions look ``denoise`` up on the generator, so every pass is seen)."""
        inner, own = gen.denoise, vars(gen).get("denoise")  # a user's own wrapper (torch.compile) stays

        def denoise(x, t, cond):
            out = inner(x, t, cond)
            self.add_nfe(len(x) * (3 if out.requires_grad else 1))
            return out

        gen.denoise = denoise
        try:
            yield self
        finally:
            if own is None:
                del gen.denoise  # the instance attribute goes; the adapter's method shows again
            else:
                gen.denoise = own


@dataclass
class SearchResult:
    """The best image per prompt and how it was found. ``candidates[p]`` holds the search
    reward of the finished candidates of prompt ``p`` the method chose among (best-of-N: all;
    prune: the survivors; evolutionary: the last population; smc: the final particles;
    noise_opt: the final render — its iterates are in ``info``); ``candidate_images[p]``
    their images when the caller asked to keep them."""

    method: str
    prompts: list[str]
    images: torch.Tensor  # [P, 3, H, W] in [0, 1]: the chosen image per prompt
    scores: torch.Tensor  # [P]: its search reward (-inf where no candidate could be scored)
    noise: torch.Tensor  # [P, ...]: the initial noise it was sampled from
    seeds: list[int | None]  # the seed of that noise (None where the noise was optimised or mutated)
    candidates: list[list[float]]
    nfe: int
    reward_calls: int
    budget_nfe: int
    seconds: float
    trace: list[dict[str, Any]] = field(default_factory=list)
    info: list[dict[str, Any]] = field(default_factory=list)  # per prompt, method-specific (prompt variant, iterates)
    candidate_images: list[torch.Tensor] | None = None

    def summary(self) -> dict[str, Any]:
        """Everything but tensors, JSON-ready (the CLI's ``trace.json``)."""
        finite = lambda v: v if math.isfinite(v) else None
        return {"method": self.method, "nfe": self.nfe, "budget_nfe": self.budget_nfe,
                "reward_calls": self.reward_calls, "seconds": round(self.seconds, 3),
                "prompts": [{"prompt": p, "score": finite(float(s)), "seed": seed,
                             "candidates": [finite(c) for c in cands], **info}
                            for p, s, seed, cands, info in zip(self.prompts, self.scores.tolist(), self.seeds,
                                                               self.candidates, self.info or [{}] * len(self.prompts))],
                "trace": self.trace}
