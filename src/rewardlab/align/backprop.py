"""Reward backpropagation through the sampler, for UNet (DDIM) and flow (ODE) models alike:

* ``draft`` — DRaFT-K (Clark et al. 2023, "Directly Fine-Tuning Diffusion Models on
  Differentiable Rewards", arXiv:2309.17400): the deterministic sampler from noise, the graph
  kept over the last K steps only; ``k = steps`` with ``checkpoint`` is **AlignProp**
  (Prabhudesai et al. 2023, arXiv:2310.03739: the full chain, each step recomputed in the
  backward pass to fit in memory).
* ``draft_lv`` — DRaFT-LV: sample without a graph, re-noise the final sample ``lv_samples``
  times at the last step's level, and backpropagate through that one step's x0-prediction.
* ``refl`` — ReFL (Xu et al. 2023, "ImageReward", arXiv:2304.05977): stop the sampler at a
  step drawn from the late ``refl_range`` of the schedule, take one step with a graph, and
  score its x0-prediction.

    setup   policy θ (full or LoRA); differentiable rewards r_i with weights w_i
    repeat  for each minibatch of prompts (fixed by seed and epoch):
              sample   x0(θ) as the mode says, graph over the chosen steps only
              score    R = Σ w_i r_i(decode(x0), prompt)        (monitors: logged only)
              update   θ ← θ − lr ∇θ(−mean R)
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from ..config import ConfigError
from ..generators.sampling import sample, step
from ..images import group_diversity, hue_fractions, hue_histogram
from .common import WEIGHTS, start
from .config import BackpropConfig
from .dist import gather
from .rollouts import epoch_samples, minibatches, nanmean, sample_seed


def train(cfg: BackpropConfig, out_dir: str | Path, progress=None) -> Path:
    check_settings(cfg)
    run = start(cfg, out_dir, "backprop", progress)
    check_differentiable(run.rewarder)
    run.resume()
    for epoch in run.epochs():
        pairs, index, groups_all = epoch_samples(run, epoch)
        groups = groups_all[index]
        seeds = [sample_seed(cfg.train.seed, epoch, int(i)) for i in index]
        seen: dict[str, list[torch.Tensor]] = {}
        for j, mb in enumerate(minibatches(run)):
            prompts = [pairs[int(g)][0] for g in groups[mb]]
            records = [pairs[int(g)][1] for g in groups[mb]]
            with run.timed("sampling"):  # sample, with the graph over the chosen steps
                images = differentiable_sample(run, cfg, prompts, seeds[mb], epoch, j, index[mb].tolist())
            with run.timed("reward"):  # score
                reward, scores = score(run, images, prompts, records)
            loss = -reward.mean()
            with run.timed("training"):  # update
                run.step(loss, {"loss": loss.item()})
            for k, v in {**scores, "_reward": reward.detach(), "_images": images.detach().cpu()}.items():
                seen.setdefault(k, []).append(v)
        run.metrics.update(epoch_metrics(seen, groups, run.dist))
        run.close_stats()
    return run.out / WEIGHTS


def check_settings(cfg: BackpropConfig) -> None:
    """Settings this recipe cannot honour, refused before anything loads."""
    lo_hi = list(cfg.refl_range)
    if len(lo_hi) != 2 or not 0 <= lo_hi[0] <= lo_hi[1] <= 1:
        raise ConfigError(f"refl_range must be two fractions lo <= hi in [0, 1], got {lo_hi}")
    if cfg.reward.aggregate != "weighted_sum":
        raise ConfigError(f"backprop differentiates a weighted sum of rewards; reward.aggregate="
                          f"{cfg.reward.aggregate} needs group statistics (use it with grpo or nft)")


def check_differentiable(rewarder) -> None:
    """Refuse a reward that gradients cannot pass through (before training)."""
    flat = [n for n, r in rewarder.rewards.items() if not getattr(r, "differentiable", False)]
    if flat:
        raise ConfigError(f"backprop needs differentiable rewards; {', '.join(flat)} is not (shapeclip, clipscore, "
                          f"pickscore, hpsv2, imagereward, preference are) — list it under reward.monitors to log "
                          f"it instead")


def differentiable_sample(run, cfg: BackpropConfig, prompts: list[str], seeds: list[int], epoch: int, j: int,
                          index: list[int]) -> torch.Tensor:
    """Images ``[B, 3, H, W]`` whose graph reaches θ through the steps ``cfg.mode`` keeps.
    Randomness is drawn per global minibatch ``j`` (ReFL's step) and per global sample index
    (DRaFT-LV's noise), so it depends on neither the rank nor the batch."""
    gen, s = run.gen, cfg.sample
    cond = gen.condition(prompts)
    detach = not cfg.train_uncond
    if cfg.mode == "draft":
        k = min(cfg.k, s.steps)
        return sample(gen, cond, seeds=seeds, steps=s.steps, guidance=s.guidance, stochastic=False, grad=True,
                      grad_steps=k, checkpoint=cfg.checkpoint, detach_uncond=detach).images
    with torch.no_grad():
        traj = sample(gen, cond, seeds=seeds, steps=s.steps, guidance=s.guidance, stochastic=False)
    if cfg.mode == "refl":  # one step from a late state, scored through its x0-prediction
        lo, hi = (min(s.steps - 1, math.floor(f * s.steps)) for f in cfg.refl_range)
        g = torch.Generator().manual_seed(sample_seed(cfg.train.seed, epoch, j, 3))
        i = int(torch.randint(lo, hi + 1, (1,), generator=g))
        out = step(gen, traj.state(i), i, cond, traj.timesteps, traj.guidance, stochastic=False, detach_uncond=detach)
        return gen.decode(out.pred_x0)
    x0, i = traj.state(s.steps), s.steps - 1  # draft_lv: the last step, re-noised lv_samples times
    gens = [torch.Generator().manual_seed(sample_seed(cfg.train.seed, epoch, n, 2)) for n in index]
    images = []
    for _ in range(cfg.lv_samples):
        eps = torch.stack([torch.randn(x0.shape[1:], generator=g) for g in gens]).to(x0)
        x_t = gen.add_noise(x0, eps, traj.timesteps[i].expand(len(x0)))
        out = step(gen, x_t, i, cond, traj.timesteps, traj.guidance, stochastic=False, detach_uncond=detach)
        images.append(gen.decode(out.pred_x0))
    return torch.cat(images)


def score(run, images: torch.Tensor, prompts: list[str], records: list) -> tuple[torch.Tensor, dict]:
    """The weighted sum of the rewards (with gradients) and every reward and monitor's mean."""
    rewarder = run.rewarder
    reps = len(images) // len(prompts)  # draft_lv scores each prompt's re-noised copies
    prompts, records = prompts * reps, records * reps
    meta = records if all(r is not None for r in records) else None
    total, scores = 0.0, {}
    for name, reward in rewarder.rewards.items():
        out = reward(images, prompts, meta)
        total = total + rewarder.weights[name] * torch.where(out.valid, out.scores, torch.zeros_like(out.scores))
        scores[f"score/{name}"] = torch.where(out.valid, out.scores.detach(), torch.tensor(float("nan")))
    with torch.no_grad():
        for name, reward in rewarder.monitors.items():
            out = reward(images.detach(), prompts, meta)
            scores[f"score/{name}"] = torch.where(out.valid, out.scores.float(), torch.tensor(float("nan")))
    return total, scores


def epoch_metrics(seen: dict[str, list[torch.Tensor]], groups: torch.Tensor,
                  d) -> dict[str, float | list[float] | None]:
    """Every rank's samples (gathered), as ``rollouts`` logs them."""
    out = {k: nanmean(gather(torch.cat(v), d)) for k, v in seen.items() if k.startswith("score/")}
    out["reward_mean"] = nanmean(gather(torch.cat(seen["_reward"]), d))
    images, device = torch.cat(seen["_images"]), seen["_reward"][0].device  # images wait on the CPU; NCCL
    out["palette"] = hue_fractions(gather(hue_histogram(images)[None].to(device), d).sum(0))  # gathers on the GPU
    if len(images) == len(groups):  # draft_lv's re-noised copies have no groups
        out["diversity"] = gather(group_diversity(images, groups).reshape(1).to(device), d).mean().item()
    return out
