"""DiffusionNFT (Zheng et al. 2025, "DiffusionNFT: Online Diffusion Reinforcement with
Forward Process", arXiv:2509.16117) and advantage-weighted matching (AWM, Xue et al. 2025):
likelihood-free RL on the forward process, so rollouts may come from any sampler — here the
deterministic ODE/DDIM, guided or guidance-free.

    setup   policy θ; old policy θ_old ← θ (the sampler); reference θ_ref ← θ if kl > 0
    repeat  sample  G images per prompt from θ_old (deterministic steps)
            score   rewards → per-group advantages A → r = clip(A)/2c + 1/2
            update  for minibatches, for K of the sampler's noise levels t per rollout:
                      x_t = forward process(x0, ε, t)
                      nft: loss = [r‖x̂₀⁺−x₀‖²/w⁺ + (1−r)‖x̂₀⁻−x₀‖²/w⁻]/β  (+ kl‖vθ − v_ref‖²)
                      awm: loss = PPO-clip(exp(log p_θ − log p_old), A), log p = −‖v − target‖²
            θ_old ← d·θ_old + (1−d)·θ,  d = min(rate · updates, old_decay)

``train_guidance`` trains the guided velocity (the policy that sampled the rollouts), so the
trained model is evaluated at the same guidance; with ``sample.guidance=1`` it is
DiffusionNFT's guidance-free training.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..generators.guidance import guided
from ..generators.steps import broadcast_level
from .common import WEIGHTS, ParamCopy, start
from .rollouts import flat_groups, minibatches, reward_metrics, rollouts, sample_seed
from .config import NFTConfig
from .losses import group_advantages, matching_log_prob, nft_loss, optimality_prob, ppo_clip, ratio_stats


def train(cfg: NFTConfig, out_dir: str | Path, progress=None) -> Path:
    run = start(cfg, out_dir, "nft", progress)
    old = run.copies["old"] = ParamCopy(run.params)
    ref = None
    if cfg.kl:
        ref = run.copies["ref"] = ParamCopy(run.params)
    run.resume()
    for epoch in run.epochs():
        with old.applied(run.params):  # sample: the old policy, deterministic steps
            batch = rollouts(run, epoch, stochastic=False)
        run.metrics.update(reward_metrics(batch))
        if not torch.isfinite(batch.rewards).all():
            run.skip_epoch("non-finite rewards")
            continue
        adv = group_advantages(batch.rewards, batch.groups)  # score
        keep = torch.ones_like(adv, dtype=torch.bool)
        if cfg.skip_flat_groups:
            keep = ~flat_groups(batch.rewards, batch.groups)[batch.groups]
        x0 = batch.traj.state(batch.traj.num_steps)
        with run.timed("training"):  # update
            for inner in range(cfg.train.inner_epochs):
                for mb in minibatches(run):
                    loss, stats = minibatch_loss(run, cfg, batch, x0, batch.local(adv), batch.local(keep), mb,
                                                 epoch, inner, old, ref)
                    run.step(loss, stats)
            decay = min(cfg.old_decay_rate * run.updates, cfg.old_decay)
            old.ema_update(run.params, decay)
        run.close_stats()
        run.metrics["old_decay"] = decay
    return run.out / WEIGHTS


def minibatch_loss(run, cfg: NFTConfig, batch, x0, adv, keep, mb: slice, epoch: int, inner: int, old, ref):
    """The loss of one minibatch at K noise levels per rollout (drawn per sample from the
    sampler's own timesteps, seeded by the sample's global index)."""
    gen, traj = run.gen, batch.traj
    idx, x0, adv, keep = batch.index[mb], x0[mb], adv[mb], keep[mb].float()
    levels = traj.timesteps[:traj.num_steps]
    high = noise_fraction(gen, levels) >= cfg.min_level
    levels = levels[high] if high.any() else levels[:1]  # at least the noisiest
    K = min(cfg.timesteps, len(levels))
    t_list, eps_list = [], []
    for i in idx.tolist():
        g = torch.Generator().manual_seed(sample_seed(cfg.train.seed, epoch, i, 1 + inner))
        t_list.append(levels[torch.randperm(len(levels), generator=g)[:K]])
        eps_list.append(torch.randn((K, *x0.shape[1:]), generator=g))
    t = torch.stack(t_list).T.reshape(-1).to(x0.device)  # [K·n], level k of every sample, then k+1
    eps = torch.stack(eps_list, 1).reshape(-1, *x0.shape[1:]).to(x0)
    x0k, advk, keepk = x0.repeat(K, *[1] * (x0.ndim - 1)), adv.repeat(K), keep.repeat(K)
    x_t = gen.add_noise(x0k, eps, t)
    cond = batch.cond[mb]
    cond = cond[torch.arange(len(cond)).repeat(K)]
    scale = traj.guidance if cfg.train_guidance else 1.0
    velocity = guided(gen.denoise, scale, detach_uncond=not cfg.train_uncond)
    with torch.no_grad():  # the copies are swapped into the live weights: before the pass with a graph
        with old.applied(run.params):
            v_old = velocity(x_t, t, cond)
        v_ref = None
        if ref is not None:
            with ref.applied(run.params):
                v_ref = velocity(x_t, t, cond)
    v = velocity(x_t, t, cond)
    if cfg.loss == "nft":
        r = optimality_prob(advk, cfg.adv_clip)
        per = nft_loss(v, v_old, x0k, r, cfg.beta, lambda p: predict_x0(gen, x_t, p, t)) * cfg.adv_clip
        stats = {"r_mean": float(r.mean())}
    else:
        target = denoising_target(gen, x0k, eps)
        log_ratio = matching_log_prob(v, target) - matching_log_prob(v_old, target)
        per = ppo_clip(log_ratio, advk.clamp(-cfg.adv_clip, cfg.adv_clip), cfg.clip_range)
        stats = ratio_stats(log_ratio, cfg.clip_range)
    if v_ref is not None:
        kl = (v - v_ref).pow(2).flatten(1).mean(1)
        per = per + cfg.kl * kl
        stats["kl"] = kl.mean().item()
    loss = (per * keepk).sum() / keepk.sum().clamp_min(1)
    stats.update(loss=loss.item(), kept=keep.mean().item())
    return loss, stats


def noise_fraction(gen, levels: torch.Tensor) -> torch.Tensor:
    """How much of x_t is noise at each level, in [0, 1]: σ for flows, √(1−ᾱ_t) for SD."""
    if hasattr(gen, "alpha_bar"):
        return (1 - gen.alpha_bar(levels)).sqrt()
    return levels.float()


def denoising_target(gen, x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """What the network predicts at ``add_noise(x0, noise, t)``: ε for an ε-predicting UNet,
    the velocity ε − x0 for a flow (the target of the DPO and AWM errors)."""
    return noise if hasattr(gen, "alpha_bar") else noise - x0


def predict_x0(gen, x_t: torch.Tensor, pred: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The clean sample a prediction implies: ``x_t − t·v`` for flows, ``(x_t − √(1−ᾱ)ε̂)/√ᾱ``
    for an ε-predicting UNet (linear in the prediction, so NFT's ± policies carry over)."""
    if hasattr(gen, "alpha_bar"):
        a = broadcast_level(gen.alpha_bar(t), x_t).to(x_t)
        return (x_t - (1 - a).sqrt() * pred) / a.sqrt()
    return x_t - broadcast_level(t, x_t) * pred
