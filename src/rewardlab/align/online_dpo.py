"""Online preference optimisation on the policy's own samples, D3PO / RankDPO-style: the
Diffusion-DPO loss (Wallace et al. 2023, arXiv:2311.12908) on pairs drawn from each group of
fresh samples as a judge ranks them — D3PO (Yang et al. 2024, arXiv:2311.13231) learns from
such online pairs, RankDPO (Karthik et al. 2024, arXiv:2410.18013) from whole rankings.

    setup   policy θ (full or LoRA); reference θ_ref = θ at the start (adapters off, or a frozen
            copy), moved to θ every ``ref_every`` epochs if set (iterative online DPO)
    repeat  sample  G images per prompt from θ (deterministic steps, guided or guidance-free)
            judge   the reward (a verifier, a reward model, or a pairwise judge's win rates)
                    orders each group; groups with no decided pair carry no signal
            update  for minibatches of groups, for K draws of (t, ε) per group shared by its
                    members (t from the sampler's own levels):
                      e = mean‖f(x_t, t, c) − target‖² under θ and θ_ref
                      best_worst: the DPO loss on (best, worst); all: on every decided pair;
                      rank: RankDPO's ΔDCG-weighted pairs (losses.rank_dpo_loss)

Unlike D3PO, which scores the SDE trajectory's own states, the pairs are compared on the
forward process (as Diffusion-DPO and DiffusionNFT), so any sampler serves. Stored human votes
train through ``rewardlab annotate export`` and the offline ``dpo`` recipe.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..config import ConfigError
from ..generators.guidance import guided
from .common import WEIGHTS, ParamCopy, start
from .config import OnlineDPOConfig
from .dist import gather
from .losses import rank_dpo_loss
from .nft import denoising_target, noise_fraction
from .rollouts import flat_groups, reward_metrics, rollouts, sample_seed


def train(cfg: OnlineDPOConfig, out_dir: str | Path, progress=None) -> Path:
    if cfg.ref_every and cfg.model.lora_rank:
        raise ConfigError("ref_every moves a full copy of the weights; with LoRA the reference is the model "
                          "without adapters (set ref_every=0)")
    run = start(cfg, out_dir, "online_dpo", progress)
    ref = None  # LoRA: the generator's reference() pass (adapters off)
    if not cfg.model.lora_rank:
        ref = run.copies["ref"] = ParamCopy(run.params)
    run.resume()
    for epoch in run.epochs():
        batch = rollouts(run, epoch, stochastic=False)  # sample + judge
        run.metrics.update(reward_metrics(batch))
        if not torch.isfinite(batch.rewards).all():
            run.skip_epoch("non-finite rewards")
            continue
        x0 = gather(batch.traj.state(batch.traj.num_steps), run.dist)  # a group may span ranks
        conds = run.gen.condition(batch.all_prompts[:cfg.sample.prompts_per_epoch])
        live = torch.nonzero(~flat_groups(batch.rewards, batch.groups)).flatten().tolist()
        with run.timed("training"):  # update
            for inner in range(cfg.train.inner_epochs):
                for chunk in group_minibatches(live, cfg.train.minibatches):
                    mine = chunk[run.dist.rank::run.dist.world]
                    loss, stats = minibatch_loss(run, cfg, batch, x0, conds, mine, epoch, inner, ref)
                    run.step(loss * run.dist.world * len(mine) / len(chunk), stats)  # the mean over the chunk
            if cfg.ref_every and (epoch + 1) % cfg.ref_every == 0:
                ref.ema_update(run.params, 0.0)
        run.close_stats()
        run.metrics["live_groups"] = len(live) / cfg.sample.prompts_per_epoch
    return run.out / WEIGHTS


def group_minibatches(groups: list[int], m: int) -> list[list[int]]:
    """The groups with a signal in ``min(m, len)`` near-equal optimiser steps (the same on every rank)."""
    m = min(m, len(groups))
    return [groups[k * len(groups) // m:(k + 1) * len(groups) // m] for k in range(m)]


def minibatch_loss(run, cfg: OnlineDPOConfig, batch, x0, conds, groups: list[int], epoch: int, inner: int, ref):
    """The mean DPO loss of ``groups`` (this rank's share of a minibatch): every member at its
    group's K draws, in one pass under the reference and one under the policy."""
    if not groups:  # a rank whose share is empty still takes the step with the others
        return torch.zeros((), requires_grad=True), {}
    draws = [group_draws(run, cfg, batch, x0, g, epoch, inner) for g in groups]
    x_t, t, target = (torch.cat([d[k] for d in draws]) for k in ("x_t", "t", "target"))
    cond = conds[torch.cat([torch.full((len(d["t"]),), g) for d, g in zip(draws, groups)])]
    predict = guided(run.gen.denoise, batch.traj.guidance if cfg.train_guidance else 1.0, detach_uncond=True)

    def errors():
        return (predict(x_t, t, cond) - target).pow(2).flatten(1).mean(1)

    with torch.no_grad(), (ref.applied(run.params) if ref is not None else run.gen.reference()):
        ref_err = errors()
    err = errors()
    excess, losses, stats = (err - ref_err).split([len(d["t"]) for d in draws]), [], []
    for d, ex in zip(draws, excess):
        for row in ex.view(cfg.timesteps, -1):  # one ranking per draw of (t, ε)
            loss, st = rank_dpo_loss(row, d["scores"], cfg.beta, dcg=cfg.pairs == "rank")
            losses.append(loss)
            stats.append(st)
    loss = torch.stack(losses).mean()
    out = {k: sum(s[k] for s in stats if s) / max(1, sum(1 for s in stats if s)) for k in ("implicit_acc", "margin")}
    return loss, {**out, "loss": loss.item(), "mse": err.mean().item(), "ref_mse": ref_err.mean().item()}


def group_draws(run, cfg: OnlineDPOConfig, batch, x0, g: int, epoch: int, inner: int) -> dict:
    """Group ``g``'s chosen members noised at K draws of (t, ε) shared by the members, seeded by
    the group, the epoch and the pass (so neither ranks nor a resume change them): rows
    ``[K·n]``, draw-major."""
    gen, traj = run.gen, batch.traj
    members = torch.nonzero(batch.groups == g).flatten()
    scores = batch.rewards[members]
    if cfg.pairs == "best_worst":
        keep = torch.stack([scores.argmax(), scores.argmin()])
        members, scores = members[keep], scores[keep]
    n, K = len(members), cfg.timesteps
    levels = traj.timesteps[:traj.num_steps]
    levels = levels[noise_fraction(gen, levels) >= cfg.min_level] if cfg.min_level else levels
    rng = torch.Generator().manual_seed(sample_seed(cfg.train.seed, epoch, g, 100 + inner))
    t = levels[torch.randint(len(levels), (K,), generator=rng)].repeat_interleave(n).to(x0.device)
    eps = torch.randn((K, 1, *x0.shape[1:]), generator=rng).expand(K, n, *x0.shape[1:])
    eps = eps.reshape(K * n, *x0.shape[1:]).to(x0)
    x = x0[members].repeat(K, *[1] * (x0.ndim - 1))
    return {"x_t": gen.add_noise(x, eps, t), "t": t, "target": denoising_target(gen, x, eps), "scores": scores}
