"""Noise optimisation (ReNO, Eyring et al. 2024, "ReNO: Enhancing One-step Text-to-Image
Models through Reward-based Noise Optimization"; reference: ExplainableML/ReNO): gradient
ascent on the initial noise z through a few-step differentiable sampler and a
differentiable reward,

    loss(z) = −w·reward(G(z)) + λ·(½‖z‖² − (d−1)·log‖z‖)

(the regulariser is the negative log-density of ‖z‖ under N(0, I): it keeps z on the
Gaussian shell), SGD with Nesterov momentum and gradient-norm clipping, the best iterate
kept. CARINOX-style ``restarts`` split the iterations over several seeds. The best noise is
then rendered with the full sampler (1 sample of the budget), so the returned image is as
sharp as every other method's."""

from __future__ import annotations

import math

import torch

from ..generators.sampling import sample
from .budget import SearchResult
from .common import Search, method


def shell_penalty(z: torch.Tensor) -> torch.Tensor:
    """½‖z‖² − (d−1)·log‖z‖ per sample: minimal at ‖z‖ = √(d−1), where N(0, I) puts its mass."""
    flat = z.flatten(1)
    norm = flat.norm(dim=1)
    return 0.5 * norm**2 - (flat.shape[1] - 1) * torch.log(norm)


def nesterov_step(z: torch.Tensor, grad: torch.Tensor, buf: torch.Tensor, lr: float, momentum: float,
                  clip: float) -> None:
    """One SGD step with Nesterov momentum (as ``torch.optim.SGD(nesterov=True)``), each
    sample's gradient clipped to norm ``clip`` on its own (prompts do not share a step)."""
    norm = grad.flatten(1).norm(dim=1).clamp_min(1e-12)
    grad = grad * (clip / norm).clamp(max=1.0).view(-1, *[1] * (grad.ndim - 1))
    buf.mul_(momentum).add_(grad)
    z.sub_(lr * (grad + momentum * buf))


@method("noise_opt")
def noise_opt(s: Search, opt_steps: int = 4, lr: float = 5.0, momentum: float = 0.9, grad_clip: float = 0.1,
              reg: float = 0.01, weight: float = 1.0, restarts: int = 1, checkpoint: bool = False) -> SearchResult:
    """``opt_steps``: steps of the differentiable sampler (ReNO uses one-step models);
    ``reg``: λ; ``restarts``: seeds ``seed .. seed+restarts-1``, iterations split among them."""
    if not getattr(s.reward, "differentiable", False):
        raise ValueError(f"noise_opt needs a differentiable reward; {getattr(s.reward, 'name', s.reward)!r} is not "
                         f"(use best_of_n, prune, evolutionary or smc with it)")
    per_eval = opt_steps * (s.unit // s.steps) * 3  # one differentiable pass: forward + backward
    evals = int((s.budget - 1) * s.unit // per_eval)  # what is left after the final render
    restarts = max(1, min(restarts, evals)) if evals else 1
    P = len(s.prompts)
    best_z, best_r = s.noise([s.seed] * P).clone(), torch.full((P,), -math.inf)
    best_seed: list[int | None] = [s.seed] * P
    candidates = [[] for _ in range(P)]
    for r in range(restarts):
        n_eval = evals // restarts + (r < evals % restarts)
        z = s.noise([s.seed + r] * P)
        for b in range(0, P, s.batch_size):
            sl = slice(b, b + s.batch_size)
            _optimise(s, z[sl], sl, n_eval, lr, momentum, grad_clip, reg, weight, opt_steps, checkpoint,
                      best_z, best_r, best_seed, candidates, s.seed + r)
        s.spend.log("restart", index=r, seed=s.seed + r, evaluations=n_eval, best=best_r.max().item())
    x, _ = s.advance(best_z, s.cond, 0, s.steps)
    images = s.images(x)
    scores = s.score(images, torch.arange(P))
    return s.result(images, scores, best_z, best_seed, torch.arange(P), [{"iterates": c} for c in candidates])


def _optimise(s, z, sl, n_eval, lr, momentum, clip, reg, weight, opt_steps, checkpoint, best_z, best_r,
              best_seed, candidates, seed):
    """Optimise the noise of prompts ``sl`` in place of the running bests."""
    z = z.clone().requires_grad_(True)
    buf = torch.zeros_like(z)
    rows = torch.arange(len(s.prompts))[sl]
    for it in range(n_eval):
        traj = sample(s.gen, s.cond[sl], noise=z, steps=opt_steps, guidance=s.guidance, stochastic=False,
                      grad=True, checkpoint=checkpoint, seeds=[0] * len(z))
        out = s.reward(traj.images, [s.prompts[r] for r in rows.tolist()],
                       None if s.metadata is None else [s.metadata[r] for r in rows.tolist()])
        s.spend.reward_calls += len(z)
        r = torch.where(out.valid, out.scores, torch.full_like(out.scores, -math.inf)).detach().cpu()
        s.observe(traj.images, rows, r)
        for j, p in enumerate(rows.tolist()):
            candidates[p].append(float(r[j]))
            if r[j] > best_r[p]:
                best_r[p], best_z[p], best_seed[p] = r[j], z[j].detach().cpu(), seed if it == 0 else None
        if it == n_eval - 1:
            break  # the last evaluation needs no step
        loss = (-weight * out.scores + reg * shell_penalty(z)).sum()
        with s.spend.backward():
            (grad,) = torch.autograd.grad(loss, z)
        with torch.no_grad():
            nesterov_step(z, grad, buf, lr, momentum, clip)
