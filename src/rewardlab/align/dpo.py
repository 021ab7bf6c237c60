"""Diffusion-DPO (Wallace et al. 2023, "Diffusion Model Alignment Using Direct Preference
Optimization", arXiv:2311.12908): the policy learns to denoise the preferred image of a pair
better, and the other worse, than a frozen reference does — offline, from a preference data
set (rewardlab's parquet, Pick-a-Pic v2, HPDv2, ImageRewardDB, MJ-Bench pairs).

    setup   policy θ (full or LoRA); reference θ_ref = θ at the start (the LoRA adapters off,
            or a frozen copy of the full weights); pairs (prompt, x_w, x_l) from the data —
            rankings give every ordered pair, ties are left out and counted
    repeat  data    the epoch's pairs: each pass over the data in a fresh order fixed by the seed
                    x0 = encode(image), resized and centre-cropped to the generator's size
            update  for minibatches, for `timesteps` draws of (t, ε) per pair, shared by w and l:
                      x_t = add_noise(x0, ε, t);  e = mean‖f(x_t, t, c) − target‖²
                      (target ε for an ε-predicting UNet, the velocity ε − x0 for a flow)
                      loss = −log σ(−β/2 · [(e_w − e_ref,w) − (e_l − e_ref,l)])

t is drawn as each model was trained: a uniform DDPM timestep for SD (as the released code),
a logit-normal σ for flows (SD3's default and the ShapeWorld model's own). The conditional
prediction is trained (no guidance), as in the paper.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .common import WEIGHTS, ParamCopy, start
from .config import DPOConfig
from .dist import all_mean
from .losses import diffusion_dpo_loss
from .nft import denoising_target
from .pref_data import encode_pairs, epoch_order, load_pairs
from .rollouts import minibatches, sample_seed


def train(cfg: DPOConfig, out_dir: str | Path, progress=None) -> Path:
    pairs, counts = load_pairs(cfg)  # setup: a data set that cannot be used fails before any work
    run = start(cfg, out_dir, "dpo", progress)
    ref = None  # LoRA: the reference is the generator's reference() pass (adapters off)
    if not cfg.model.lora_rank:  # full fine-tune: a frozen copy of the starting weights
        ref = run.copies["ref"] = ParamCopy(run.params)
    run.resume()
    n = cfg.sample.prompts_per_epoch * cfg.sample.group_size
    for epoch in run.epochs():
        order = epoch_order(len(pairs), n, cfg.train.seed, epoch)
        index = torch.arange(run.dist.rank, n, run.dist.world)  # this rank's share, as rollouts
        batch = [pairs[order[i]] for i in index.tolist()]
        with run.timed("data"):  # data
            x_w, x_l, ok = encode_pairs(run.gen, batch, cfg.sample.batch_size)
        with run.timed("training"):  # update
            for inner in range(cfg.train.inner_epochs):
                for mb in minibatches(run):  # (no readable pair in it: a NaN loss, the step skipped)
                    loss, stats = pair_loss(run, cfg, [p[0] for p in batch[mb]], x_w[mb], x_l[mb], ok[mb],
                                            index[mb], epoch, inner, ref)
                    run.step(loss, stats)
        run.close_stats()
        unreadable = all_mean({"n": float((~ok).sum())}, run.dist)["n"] * run.dist.world
        run.metrics.update({**counts, "data/unreadable": unreadable})
    return run.out / WEIGHTS


def pair_loss(run, cfg: DPOConfig, prompts, x_w, x_l, ok, idx, epoch: int, inner: int, ref):
    """The Diffusion-DPO loss of one minibatch of pairs; (t, ε) drawn per pair from its global
    index, so neither the rank, the batch nor a resume changes them."""
    gen, K, n = run.gen, cfg.timesteps, len(x_w)
    t_list, eps_list = [], []
    for i in idx.tolist():
        g = torch.Generator().manual_seed(sample_seed(cfg.train.seed, epoch, i, 1 + inner))
        t_list.append(train_levels(gen, K, g))
        eps_list.append(torch.randn((K, *x_w.shape[1:]), generator=g))
    rep = lambda x, k: x.repeat(k, *[1] * (x.ndim - 1))  # noqa: E731  (k copies along the batch)
    t = rep(torch.stack(t_list).T.reshape(-1), 2).to(x_w.device)  # [2·K·n]: draw k of each winner, then losers
    eps = rep(torch.stack(eps_list, 1).reshape(-1, *x_w.shape[1:]), 2).to(x_w)
    x0 = torch.cat([rep(x_w, K), rep(x_l, K)])
    x_t = gen.add_noise(x0, eps, t)
    target = denoising_target(gen, x0, eps)
    cond = gen.condition(prompts)[torch.arange(n).repeat(2 * K)]
    keep = rep(ok.to(x_w.device), K)

    def errors():  # winners' and losers' errors, of the readable pairs
        return [e[keep] for e in (gen.denoise(x_t, t, cond) - target).pow(2).flatten(1).mean(1).chunk(2)]

    with torch.no_grad(), (ref.applied(run.params) if ref is not None else gen.reference()):
        ref_w, ref_l = errors()
    err_w, err_l = errors()
    per, stats = diffusion_dpo_loss(err_w, err_l, ref_w, ref_l, cfg.beta)
    loss = per.mean()
    stats.update(loss=loss.item(), mse=torch.cat([err_w, err_l]).mean().item(),
                 ref_mse=torch.cat([ref_w, ref_l]).mean().item())
    return loss, stats


def train_levels(gen, k: int, g: torch.Generator) -> torch.Tensor:
    """``k`` training noise levels: uniform DDPM timesteps for SD, logit-normal σ for flows."""
    if hasattr(gen, "alpha_bar"):
        return torch.randint(0, gen.scheduler.config.num_train_timesteps, (k,), generator=g)
    return torch.sigmoid(torch.randn(k, generator=g))
