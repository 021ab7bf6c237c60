"""Feynman-Kac steering (Singhal et al. 2025, "A General Framework for Inference-time
Scaling and Steering of Diffusion Models"; reference: zacharyhorvitz/Fk-Diffusion-Steering):
k particles per prompt on the stochastic sampler, weighted at resampling steps by a
potential on the reward of their x0-predictions and resampled multinomially.

Potentials (``r`` the reward now, ``r'`` the particle's previous one, λ the temperature):
``max``: exp(λ·max(r, r')), ``add``: exp(λ·(r + r')) (accumulated), ``diff``: exp(λ·(r − r')),
``rt``: exp(λ·r). With ``final="resample"`` the last step is weighed as the reference does —
exp(λ·r) divided by the product of the potentials the particle carries, so the final
target is ∝ p(x)·exp(λ·r(x)) for every potential (``diff`` telescopes to that already) —
and resampled when its ESS falls below k/2. A search returns the best particle, and a
last resampling can only drop candidates, so the default ``final="best"`` scores every
final particle instead. As in the reference, rows that are not resampled (``adaptive``)
keep their product of potentials unchanged."""

from __future__ import annotations

import torch

from ..generators.base import per_sample_generators, per_sample_randn
from .budget import SearchResult
from .common import Search, method

POTENTIALS = ("max", "add", "diff", "rt")


def log_potential(kind: str, r: torch.Tensor, r_prev: torch.Tensor, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(log weight, the reward the particle carries on) for one resampling step."""
    if kind == "max":
        return lam * torch.maximum(r, r_prev), torch.maximum(r, r_prev)
    if kind == "add":
        return lam * (r + r_prev), r + r_prev
    if kind == "diff":
        return lam * (r - r_prev), r
    if kind == "rt":
        return lam * r, r
    raise ValueError(f"unknown potential {kind!r}; expected one of {', '.join(POTENTIALS)}")


def ess(logw: torch.Tensor) -> torch.Tensor:
    """Effective sample size 1/Σw̃² of each row of log weights ``[P, k]``."""
    return 1.0 / torch.softmax(logw, dim=1).pow(2).sum(1)


@method("smc")
def smc(s: Search, lam: float = 10.0, potential: str = "max", every: int = 5, start: int = 0,
        adaptive: bool = False, resample: bool = True, final: str = "best", min_reward: float = 0.0) -> SearchResult:
    """k = ⌊budget⌋ particles per prompt (seeds ``seed .. seed+k-1``). Resampling at steps
    ``start, start+every, ...`` (always when ``adaptive`` is off, else only when the ESS falls
    below k/2); ``resample=False`` only weighs; ``final``: ``best`` or ``resample`` (see above).
    The best final particle by reward is returned."""
    if potential not in POTENTIALS:
        raise ValueError(f"unknown potential {potential!r}; expected one of {', '.join(POTENTIALS)}")
    if every < 1:
        raise ValueError(f"every must be at least 1, got {every}")
    if final not in ("best", "resample"):
        raise ValueError(f"final must be 'best' or 'resample', got {final!r}")
    k, P = int(s.budget), len(s.prompts)
    rows, seeds = s.rows(k), s.seeds(k)
    gens = per_sample_generators(seeds)  # one per slot: the initial noise, then one draw per step
    x = per_sample_randn(gens, s.shape, torch.empty(0, device=s.gen.device))
    noise = x.clone()
    r_prev = torch.full((P, k), float(min_reward))
    log_prod = torch.zeros(P, k)
    rng = torch.Generator().manual_seed(s.seed + 104729)
    marks = set(range(start, s.steps - 1, every)) | ({s.steps - 1} if final == "resample" else set())
    for i in range(s.steps):
        x, x0 = s.advance(x, s.cond[rows], i, i + 1, gens)
        if i not in marks or (k == 1):
            continue
        r = s.score(s.images(x0), rows).view(P, k)
        last = i == s.steps - 1
        logw, carried = log_potential(potential, r, r_prev, lam)
        if last and potential != "diff":
            logw = lam * r - log_prod
        logw = torch.nan_to_num(logw, nan=-torch.inf)
        logw = torch.where(torch.isinf(logw).all(1, keepdim=True), torch.zeros_like(logw), logw)
        size = ess(logw)
        go = resample and (not (adaptive or last) or bool((size < k / 2).any()))
        if go:
            rows_go = size < k / 2 if (adaptive or last) else torch.ones(P, dtype=torch.bool)
            idx = torch.arange(P * k).view(P, k)
            draw = torch.multinomial(torch.softmax(logw, 1), k, replacement=True, generator=rng)
            idx = torch.where(rows_go.unsqueeze(1), draw + torch.arange(P).unsqueeze(1) * k, idx).reshape(-1)
            x, noise = x[idx], noise[idx]
            seeds = [seeds[j] if j == n else None for n, j in enumerate(idx.tolist())]
            flat = lambda t: t.reshape(-1)[idx].view(P, k)
            carried, log_prod, logw = flat(carried), flat(log_prod), flat(logw)
            log_prod = log_prod + torch.where(rows_go.unsqueeze(1), logw, torch.zeros_like(logw))
        r_prev = carried
        s.spend.log("weighed", step=i, resampled=go, ess=size.mean().item(), best=r.max().item())
    images = s.images(x)
    return s.result(images, s.score(images, rows), noise, seeds, rows)
