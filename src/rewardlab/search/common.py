"""What every search method shares: the checked inputs, the counted generator, the sampler
run over any range of steps in batches, reward calls, and picking the best candidate per
prompt. Methods are plain functions that open a ``Search`` and end with ``Search.result``."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from ..generators import DEFAULT_STEPS
from ..generators.base import Cond, check_prompts, per_sample_generators, per_sample_randn
from ..generators.sampling import step as sampler_step
from .budget import BudgetError, SearchResult, Spend, nfe_per_sample


@dataclass
class Search:
    """One search: ``budget`` single-sample equivalents per prompt (see ``budget.py``)."""

    method: str
    gen: Any
    reward: Any
    prompts: list[str]
    budget: float
    seed: int = 0
    steps: int = DEFAULT_STEPS
    guidance: float | None = None
    metadata: list | None = None
    batch_size: int = 16
    keep_candidates: bool = False
    progress: Callable[[int, int], None] | None = None
    monitors: dict[str, Any] | None = None  # rewards only logged (the gold signal of the hacking monitor)
    spend: Spend = field(init=False)

    def __post_init__(self):
        self.prompts = check_prompts(self.prompts)
        if self.metadata is not None and len(self.metadata) != len(self.prompts):
            raise ValueError(f"{len(self.prompts)} prompts but {len(self.metadata)} metadata records")
        if not math.isfinite(float(self.budget)) or self.budget < 1:
            raise BudgetError(f"a budget of {self.budget} is below one sample per prompt; give at least 1")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"steps and batch_size must be at least 1, got {self.steps} and {self.batch_size}")
        self.guidance = self.gen.default_guidance if self.guidance is None else float(self.guidance)
        self.unit = nfe_per_sample(self.steps, self.guidance)
        self.spend = Spend(int(self.budget * self.unit + 1e-6) * len(self.prompts), self.progress)
        self.shape = self.gen.latent_shape()
        self.timesteps = self.gen.schedule(self.steps, self.shape)
        self.cond = self.gen.condition(self.prompts)

    # ---- sampling -------------------------------------------------------------------
    def noise(self, seeds: Sequence[int]) -> torch.Tensor:
        """The initial noise of ``seeds`` (what ``sample(seeds=...)`` starts from)."""
        return per_sample_randn(per_sample_generators(seeds), self.shape, torch.empty(0, device=self.gen.device))

    def advance(self, x: torch.Tensor, cond: Cond, start: int, stop: int,
                gens: list[torch.Generator] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Run rows ``x`` (one per row of ``cond``) from step ``start`` to ``stop`` in batches;
        deterministic (ODE / DDIM η=0) unless per-row generators ``gens`` are given, which then
        draw each stochastic step's noise as ``sample`` does. Returns the state at ``stop`` and
        the last x0-prediction."""
        xs, x0s = [], []
        with torch.no_grad():
            for b in range(0, len(x), self.batch_size):
                xb, cb = x[b:b + self.batch_size].to(self.gen.device), cond[b:b + self.batch_size]
                gb = None if gens is None else gens[b:b + self.batch_size]
                x0 = None
                for i in range(start, stop):
                    eps = None if gb is None else per_sample_randn(gb, self.shape, xb)
                    out = sampler_step(self.gen, xb, i, cb, self.timesteps, self.guidance, noise=eps,
                                       stochastic=gb is not None)
                    xb, x0 = out.prev_sample, out.pred_x0
                xs.append(xb)
                x0s.append(x0 if x0 is not None else xb)
        return torch.cat(xs), torch.cat(x0s)

    def images(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([self.gen.decode(x[b:b + self.batch_size]).float().cpu()
                              for b in range(0, len(x), self.batch_size)])

    def score(self, images: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """The search reward of ``images`` for the prompts ``rows`` index (always the original
        prompts and records); unscorable images get -inf, so they are never chosen."""
        rows = rows.tolist()
        out = self.reward(images, [self.prompts[r] for r in rows],
                          None if self.metadata is None else [self.metadata[r] for r in rows])
        self.spend.reward_calls += len(images)
        scores = out.scores.detach().float().cpu()
        scores = torch.where(out.valid.cpu(), scores, torch.full_like(scores, -math.inf))
        self.observe(images, torch.as_tensor(rows), scores)
        return scores

    def observe(self, images: torch.Tensor, rows: torch.Tensor, scores: torch.Tensor) -> None:
        """With ``monitors``, log what the hacking monitor reads for each scored batch: the
        search reward's mean, every monitor's mean, the diversity within prompts and the
        batch's palette. Monitor calls are observation, outside the budget."""
        if not self.monitors:
            return
        from ..images import group_diversity, hue_fractions, hue_histogram

        images = images.detach().float().cpu()
        finite = scores[torch.isfinite(scores)]
        several = bool((torch.bincount(rows) > 1).any())  # diversity needs two candidates of one prompt
        row = {"reward_mean": float(finite.mean()) if len(finite) else None,
               "diversity": float(group_diversity(images, rows)) if several else None,
               "palette": hue_fractions(hue_histogram(images))}
        prompts = [self.prompts[r] for r in rows.tolist()]
        meta = None if self.metadata is None else [self.metadata[r] for r in rows.tolist()]
        for name, reward in self.monitors.items():
            with torch.no_grad():
                out = reward(images, prompts, meta)
            ok = out.valid.cpu()
            row[f"score/{name}"] = float(out.scores.cpu()[ok].mean()) if ok.any() else None
        self.spend.log("scored", **row)

    # ---- planning and results ---------------------------------------------------------
    def rows(self, n: int) -> torch.Tensor:
        """Prompt index of each of ``n`` candidates per prompt, grouped by prompt."""
        return torch.arange(len(self.prompts)).repeat_interleave(n)

    def seeds(self, n: int, offset: int = 0) -> list[int]:
        """Candidate ``k`` of every prompt uses seed ``seed + offset + k`` (k < n), so budget 1
        with ``seed`` is plain sampling with ``seed``."""
        return [self.seed + offset + k for _ in self.prompts for k in range(n)]

    def result(self, images: torch.Tensor, scores: torch.Tensor, noise: torch.Tensor, seeds: Sequence,
               rows: torch.Tensor, info: list[dict] | None = None) -> SearchResult:
        """Pick the best finished candidate per prompt (the first on ties)."""
        best, cands, kept = [], [], []
        for p in range(len(self.prompts)):
            idx = (rows == p).nonzero().reshape(-1)
            if len(idx) == 0:
                raise RuntimeError(f"{self.method}: no finished candidate for prompt {p}")
            best.append(int(idx[torch.argmax(scores[idx])]))
            cands.append(scores[idx].tolist())
            kept.append(images[idx])
        best_t = torch.tensor(best)
        self.spend.log("done")
        return SearchResult(self.method, self.prompts, images[best_t], scores[best_t], noise[best_t].cpu(),
                            [seeds[b] for b in best], cands, self.spend.nfe, self.spend.reward_calls,
                            self.spend.limit, self.spend.trace[-1]["seconds"], self.spend.trace,
                            [info[b] for b in best] if info else [], kept if self.keep_candidates else None)


def largest(cost: Callable[[int], float], budget: float) -> int:
    """The largest n ≥ 1 with ``cost(n) <= budget`` (``cost`` non-decreasing; 1 always fits)."""
    n = 1
    while cost(n + 1) <= budget + 1e-9:
        n += 1
    return n


def top_per_group(scores: torch.Tensor, groups: int, keep: int) -> torch.Tensor:
    """Flat indices of the ``keep`` best of each of ``groups`` equal, contiguous groups."""
    per = len(scores) // groups
    top = scores.view(groups, per).topk(keep, dim=1).indices
    return (top + torch.arange(groups).unsqueeze(1) * per).reshape(-1)


def method(name: str):
    """Turn ``fn(search, **options)`` into the public
    ``name(gen, reward, prompts, budget, seed=0, *, steps, guidance, metadata, batch_size,
    keep_candidates, progress, monitors, **options)``, with every denoiser pass counted."""

    def deco(fn):
        @functools.wraps(fn)
        def run(gen, reward, prompts, budget: float, seed: int = 0, *, steps: int = DEFAULT_STEPS,
                guidance: float | None = None, metadata: list | None = None, batch_size: int = 16,
                keep_candidates: bool = False, progress: Callable[[int, int], None] | None = None,
                monitors: dict | None = None, **options) -> SearchResult:
            s = Search(name, gen, reward, list(prompts), budget, seed, steps, guidance, metadata, batch_size,
                       keep_candidates, progress, monitors)
            with s.spend.counting(gen):
                return fn(s, **options)

        return run

    return deco
