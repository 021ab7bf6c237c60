"""GRPO for diffusion and flow models — DDPO (Black et al. 2023), Flow-GRPO (Liu et al. 2025),
DanceGRPO (Xue et al. 2025) and MixGRPO / Flow-GRPO-Fast (SDE window) in one recipe:

    setup   policy θ (full or LoRA); reference θ_ref ← θ if kl > 0
    repeat  sample  G trajectories per prompt: SDE (flow_sde / dance_sde / cps, DDIM η for SD)
                    inside the window, ODE elsewhere; keep log π_old(x_{i+1} | x_i)
            score   rewards → advantages (per group, batch std, or DDPO's per-prompt running
                    statistics), clipped to ±adv_clip
            update  for inner epochs and minibatches, over (a fraction of) the window's steps:
                      ρ = π_θ / π_old (GRPO-Guard-normalised if ratio_norm)
                      loss = PPO-clip(ρ, A) + kl·‖μθ − μref‖²/(2σ²)

DDPO is ``window=0`` (every step stochastic) with ``advantage=running`` on an SD pipeline;
Flow-GRPO is ``window=0``, ``kl>0``; Flow-GRPO-Fast / MixGRPO are ``window=k`` with the start
drawn per epoch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..config import ConfigError
from ..generators.sampling import step, steps_at_once
from .common import WEIGHTS, ParamCopy, start
from .rollouts import minibatches, reward_metrics, rollouts
from .config import GRPOConfig
from .losses import PerPromptStats, gaussian_kl, group_advantages, guard_log_ratio, ppo_clip, ratio_stats


def train(cfg: GRPOConfig, out_dir: str | Path, progress=None, recipe: str = "grpo") -> Path:
    check(cfg)
    run = start(cfg, out_dir, recipe, progress)
    ref = None
    if cfg.kl:
        ref = run.copies["ref"] = ParamCopy(run.params)
    tracker = PerPromptStats() if cfg.advantage == "running" else None
    run.resume(**({"tracker": tracker} if tracker else {}))
    scale = lambda traj: traj.guidance if cfg.train_guidance else 1.0
    for epoch in run.epochs():
        batch = rollouts(run, epoch, stochastic=True, window=sde_window(cfg, epoch))  # sample
        run.metrics.update(reward_metrics(batch))
        if not torch.isfinite(batch.rewards).all():
            run.skip_epoch("non-finite rewards")
            continue
        if tracker is not None:  # score
            adv = tracker(batch.all_prompts, batch.rewards)
        else:
            adv = group_advantages(batch.rewards, batch.groups, cfg.advantage)
        adv = batch.local(adv).clamp(-cfg.adv_clip, cfg.adv_clip)
        steps = [i for i in range(batch.traj.num_steps) if batch.traj.stochastic[i]]
        rng = np.random.default_rng([cfg.train.seed, epoch, 3])
        with run.timed("training"):  # update
            old = old_policy(run, cfg, batch, steps, scale(batch.traj))
            for _ in range(cfg.train.inner_epochs):
                for mb in minibatches(run):
                    k = max(1, round(cfg.step_fraction * len(steps)))
                    chosen = sorted(rng.choice(steps, size=k, replace=False).tolist())
                    loss, stats = minibatch_loss(run, cfg, batch, adv, mb, chosen, old, ref, scale(batch.traj))
                    run.step(loss, stats)
        run.close_stats()
    return run.out / WEIGHTS


def check(cfg: GRPOConfig) -> None:
    """Refuse, before any work, settings under which the sampler has no log-probs."""
    kind = cfg.model.generator.partition(":")[0]
    if kind == "sd" and cfg.model.eta == 0:
        raise ConfigError("grpo needs a stochastic DDIM step for log-probs: model.eta must be > 0 (DDPO: 1)")
    if kind != "sd" and cfg.model.step_type == "ode":
        raise ConfigError("grpo needs a stochastic step for log-probs: model.step_type flow_sde, dance_sde or cps "
                          "(the ODE has none; nft trains on ODE rollouts)")
    if cfg.window > cfg.sample.steps:
        raise ConfigError(f"window={cfg.window} is longer than sample.steps={cfg.sample.steps}")


def sde_window(cfg: GRPOConfig, epoch: int) -> tuple[int, int] | None:
    """The epoch's stochastic steps ``[start, start + window)``: fixed, or drawn per epoch
    from ``[0, window_max_start]`` (Flow-GRPO-Fast / MixGRPO); None = every step."""
    if not cfg.window:
        return None
    last = cfg.sample.steps - cfg.window
    if cfg.window_start is not None:
        return min(cfg.window_start, last), min(cfg.window_start, last) + cfg.window
    hi = min(last, cfg.sample.steps // 2 if cfg.window_max_start is None else cfg.window_max_start)
    s = int(np.random.default_rng([cfg.train.seed, epoch, 5]).integers(0, hi + 1))
    return s, s + cfg.window


@torch.no_grad()
def old_policy(run, cfg, batch, steps: list[int], scale: float) -> dict:
    """log π_old and the step means before any update. The sampler's own log-probs serve when
    the training pass is the sampled policy; otherwise (guidance off in training, GRPO-Guard's
    means) the steps are re-scored once with the weights that sampled them."""
    traj = batch.traj
    if cfg.train_guidance and not cfg.ratio_norm:
        return {"log_prob": traj.log_probs, "mean": None}
    lp, means = torch.zeros_like(traj.log_probs), {}
    for i in steps:
        out = step(run.gen, traj.state(i), i, batch.cond, traj.timesteps, scale, prev_sample=traj.state(i + 1))
        lp[:, i], means[i] = out.log_prob, out.mean
    return {"log_prob": lp, "mean": means}


def minibatch_loss(run, cfg: GRPOConfig, batch, adv, mb: slice, steps: list[int], old: dict, ref, scale: float):
    """The mean over ``steps`` of the PPO terms (plus KL), all steps in one network call."""
    traj, a = batch.traj, adv[mb]
    x = torch.stack([traj.state(i)[mb] for i in steps])  # [K, B, ...]
    x_next = torch.stack([traj.state(i + 1)[mb] for i in steps])
    at_once = lambda **kw: steps_at_once(run.gen, x, steps, batch.cond[mb], traj.timesteps, scale,
                                         prev_sample=x_next, **kw)
    if ref is not None:  # the copy is swapped into the live weights: before the pass with a graph
        with torch.no_grad(), ref.applied(run.params):
            ref_means = [out.mean for out in at_once()]
    terms, log_ratios, kls = [], [], []
    for k, (i, out) in enumerate(zip(steps, at_once(detach_uncond=not cfg.train_uncond))):
        old_lp = old["log_prob"][mb, i]
        if cfg.ratio_norm:
            log_ratio = guard_log_ratio(out.log_prob, old_lp, out.mean, old["mean"][i][mb], out.std)
        else:
            log_ratio = out.log_prob - old_lp
        per = ppo_clip(log_ratio, a, cfg.clip_range)
        if ref is not None:
            kl = gaussian_kl(out.mean, ref_means[k], out.std)
            per = per + cfg.kl * kl
            kls.append(kl.mean().item())
        terms.append(per.mean())
        log_ratios.append(log_ratio.detach())
    loss = torch.stack(terms).mean()
    stats = {"loss": loss.item(), **ratio_stats(torch.cat(log_ratios), cfg.clip_range)}
    if kls:
        stats["kl"] = float(np.mean(kls))
    return loss, stats
