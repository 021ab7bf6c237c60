"""What a recipe samples and scores each epoch: the prompts (fixed by seed and epoch), the
rewards and monitors, and this rank's share of the rollouts with rewards from every rank."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch

from ..config import ConfigError
from ..generators.base import Cond, Trajectory
from ..images import group_diversity, hue_fractions, hue_histogram
from .dist import gather


def epoch_prompts(s, seed: int, epoch: int) -> list[tuple[str, dict | None]]:
    """The ``prompts_per_epoch`` prompts (with their ShapeWorld records) of an epoch, fixed by
    ``(seed, epoch)``: the train split drawn by tag weight, or lines of a prompt file."""
    rng = np.random.default_rng([seed, epoch, 7])
    if s.prompts == "shapeworld":
        from ..world.prompts import compositions
        from ..world.records import TAGS

        weights = np.array([getattr(s.tags, t) for t in TAGS], dtype=float)
        pools = [compositions(t, "train", colored_counting=True) for t in TAGS]
        weights[[not p for p in pools]] = 0
        tags = rng.choice(len(TAGS), size=s.prompts_per_epoch, p=weights / weights.sum())
        recs = [pools[t][rng.integers(len(pools[t]))] for t in tags]
        return [(r["prompt"], r) for r in recs]
    entries = prompt_entries(s.prompts)
    return [entries[i] for i in rng.integers(len(entries), size=s.prompts_per_epoch)]


def prompt_entries(path) -> list[tuple[str, dict | None]]:
    """A ``.txt`` file (one prompt per line) or GenEval metadata ``.jsonl`` (records, passed
    to the rewards as metadata)."""
    from ..world.records import RecordError, load_records

    if str(path).endswith(".jsonl"):
        try:
            return [(r["prompt"], r) for r in load_records(path)]
        except (OSError, RecordError, KeyError) as e:
            raise ConfigError(f"cannot read prompt records {path}: {e}") from None
    return [(p, None) for p in prompt_file(path)]


def prompt_file(path) -> list[str]:
    try:
        lines = [ln.strip() for ln in Path(path).read_text(encoding="utf-8").splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read prompt file {path}: {e.strerror if isinstance(e, OSError) else e}") from None
    if not lines:
        raise ConfigError(f"prompt file {path} has no prompts")
    return lines


def sample_seed(seed: int, epoch: int, index: int, salt: int = 0) -> int:
    return int(np.random.default_rng([seed, epoch, index, salt]).integers(2**31 - 1))


class Rewarder:
    """The rewards of ``RewardSettings`` and the monitors: raw scores per reward (NaN where a
    reward marks an image invalid), then one aggregated signal."""

    def __init__(self, s):
        from ..rewards import load
        from ..rewards.registry import parse_options

        if s.weights and len(s.weights) != len(s.names):
            raise ConfigError(f"reward.weights has {len(s.weights)} values for {len(s.names)} rewards")
        if not s.names:
            raise ConfigError("reward.names is empty: name at least one reward (rewardlab rewards lists them)")
        try:
            opts = parse_options(list(s.options))
            unknown = set(opts) - set(s.names) - set(s.monitors)
            if unknown:
                raise ValueError(f"options for rewards that are not used: {', '.join(sorted(unknown))}")
            self.rewards = {n: load(n, **opts.get(n, {})) for n in s.names}
            self.monitors = {n: load(n, **opts.get(n, {})) for n in s.monitors}
        except (KeyError, ValueError, TypeError) as e:
            raise ConfigError(str(e).strip("'\"")) from None
        self.weights = dict(zip(s.names, s.weights or [1.0] * len(s.names)))
        self.aggregate = s.aggregate
        if s.aggregate == "win_rate" and (len(self.rewards) != 1 or not self.judge.pairwise):
            raise ConfigError("reward.aggregate=win_rate needs exactly one pairwise reward (one with compare(): "
                              f"preference, vlm_judge); got {', '.join(s.names)}")

    @property
    def judge(self):
        return next(iter(self.rewards.values()))

    def score(self, images, prompts, metadata) -> dict[str, torch.Tensor]:
        out = {}
        for name, reward in {**self.rewards, **self.monitors}.items():
            r = reward(images, list(prompts), metadata)
            out[name] = torch.where(r.valid, r.scores.float(), torch.tensor(float("nan")))
        return out

    def combine(self, scores: dict[str, torch.Tensor], groups: torch.Tensor) -> torch.Tensor:
        from ..rewards import combine

        own = {k: scores[k] for k in self.rewards}
        if self.aggregate == "decoupled":
            return combine.decoupled_advantages(own, groups, self.weights)
        if self.aggregate == "log_tamed":
            return combine.log_tamed(own, self.weights)
        return combine.weighted_sum(own, self.weights)

    def win_rates(self, images: torch.Tensor, prompts: list[str], groups: torch.Tensor) -> torch.Tensor:
        """Pref-GRPO's reward: each sample's mean P(beats another member of its group) under the
        judge, over all ordered pairs of the group (a tie or an unreadable verdict counts half)."""
        from ..rewards.combine import pairwise_win_rate

        def compare(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return self.judge.compare(images[a], images[b], [prompts[i] for i in a.tolist()]).cpu()

        return pairwise_win_rate(compare, groups)


@dataclasses.dataclass
class Rollouts:
    """This rank's share of an epoch: global indices ``rank::world`` of ``prompts_per_epoch ×
    group_size`` samples, sample i in group ``i % prompts_per_epoch``."""

    prompts: list[str]
    records: list[dict | None]
    index: torch.Tensor  # [n] global sample indices
    cond: Cond
    traj: Trajectory  # latents, log-probs, images (the whole local batch)
    scores: dict[str, torch.Tensor]  # every reward and monitor, gathered [N]
    rewards: torch.Tensor  # aggregated, gathered [N]
    groups: torch.Tensor  # [N]
    all_prompts: list[str]  # [N]
    all_tags: list[str | None]  # [N]: the records' GenEval tags, where prompts have records
    diversity: float
    palette: list[float] | None  # the whole batch's (every rank's) hue fractions

    def local(self, x: torch.Tensor) -> torch.Tensor:
        """This rank's entries of a gathered ``[N]`` tensor."""
        return x[self.index]


def epoch_samples(run, epoch: int) -> tuple[list[tuple[str, dict | None]], torch.Tensor, torch.Tensor]:
    """An epoch's ``(prompt, record)`` pairs, this rank's global sample indices ``rank::world``
    of ``prompts_per_epoch × group_size``, and every sample's group ``i % prompts_per_epoch``."""
    s, d = run.cfg.sample, run.dist
    n_total = s.prompts_per_epoch * s.group_size
    return (epoch_prompts(s, run.cfg.train.seed, epoch), torch.arange(d.rank, n_total, d.world),
            torch.arange(n_total) % s.prompts_per_epoch)


def rollouts(run, epoch: int, *, stochastic: bool, window: tuple[int, int] | None = None) -> Rollouts:
    """Sample this rank's rollouts of ``epoch`` (in batches of ``sample.batch_size``), score
    them, and gather rewards from every rank."""
    from ..generators.lora import lora_merged
    from ..generators.sampling import sample

    s, d = run.cfg.sample, run.dist
    pairs, index, groups_all = epoch_samples(run, epoch)
    prompts = [pairs[int(g)][0] for g in groups_all[index]]
    records = [pairs[int(g)][1] for g in groups_all[index]]
    seeds = [sample_seed(run.cfg.train.seed, epoch, int(i)) for i in index]
    t0 = time.perf_counter()
    cond = run.gen.condition(prompts)
    trajs = []
    with torch.no_grad(), lora_merged(run.gen.denoiser):  # LoRA folded in: ~7% faster on tiny SD
        for b in range(0, len(prompts), s.batch_size):
            trajs.append(sample(run.gen, cond[b:b + s.batch_size], seeds=seeds[b:b + s.batch_size], steps=s.steps,
                                guidance=s.guidance, stochastic=stochastic, window=window))
    traj = cat_trajectories(trajs)
    t1 = time.perf_counter()
    meta = records if all(r is not None for r in records) else None
    local = run.rewarder.score(traj.images, prompts, meta)
    scores = {k: gather(v, d) for k, v in local.items()}
    all_prompts = [pairs[int(g)][0] for g in groups_all]
    if run.rewarder.aggregate == "win_rate":  # a group's images may live on several ranks
        with torch.no_grad():
            rewards = run.rewarder.win_rates(gather(traj.images, d), all_prompts, groups_all)
    else:
        rewards = run.rewarder.combine(scores, groups_all)
    run.timer["sampling"] += t1 - t0
    run.timer["reward"] += time.perf_counter() - t1
    all_tags = [(pairs[int(g)][1] or {}).get("tag") for g in groups_all]
    div = gather(group_diversity(traj.images, groups_all[index]).reshape(1), d).mean().item()
    palette = hue_fractions(gather(hue_histogram(traj.images)[None], d).sum(0))
    return Rollouts(prompts, records, index, cond, traj, scores, rewards, groups_all, all_prompts, all_tags, div,
                    palette)


def cat_trajectories(trajs: list[Trajectory]) -> Trajectory:
    if len(trajs) == 1:
        return trajs[0]
    t = trajs[0]
    cat = lambda name: None if getattr(t, name) is None else torch.cat([getattr(x, name) for x in trajs])
    return dataclasses.replace(t, prompts=sum((x.prompts for x in trajs), []), latents=cat("latents"),
                               log_probs=cat("log_probs"), images=cat("images"), x0_preds=cat("x0_preds"),
                               seeds=sum((x.seeds for x in trajs), []))


def minibatches(run) -> list[slice]:
    """Local slices of each optimiser step: global minibatch j is indices ``[jM, (j+1)M)``, of
    which this rank holds every ``world``-th — so W ranks take the same steps as one process."""
    n_local = run.cfg.sample.prompts_per_epoch * run.cfg.sample.group_size // run.dist.world
    m = n_local // run.cfg.train.minibatches
    return [slice(j * m, (j + 1) * m) for j in range(run.cfg.train.minibatches)]


def reward_metrics(batch: Rollouts) -> dict[str, float | list[float] | None]:
    finite = batch.rewards[torch.isfinite(batch.rewards)]
    out = {"reward_mean": nanmean(batch.rewards),
           "reward_std": float(finite.std(unbiased=False)) if len(finite) else float("nan"),
           "diversity": batch.diversity, "palette": batch.palette}
    for k, v in batch.scores.items():
        out[f"score/{k}"] = nanmean(v)
    out["flat_groups"] = float(flat_groups(batch.rewards, batch.groups).float().mean())
    for tag in sorted({t for t in batch.all_tags if t}):  # which kinds of prompt the reward rises on
        out[f"reward/{tag}"] = nanmean(batch.rewards[torch.tensor([t == tag for t in batch.all_tags])])
    return out


def flat_groups(rewards: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """``[G]`` bool by group id: every sample of the group has the same reward (no signal)."""
    return torch.stack([rewards[groups == g].std(unbiased=False) == 0 for g in range(int(groups.max()) + 1)])


def nanmean(x: torch.Tensor) -> float:
    x = x[torch.isfinite(x)]
    return float(x.mean()) if len(x) else float("nan")
