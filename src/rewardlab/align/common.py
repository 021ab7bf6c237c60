"""The harness every recipe stands on — helpers, not a trainer class. A recipe reads as its
paper's algorithm box and calls, per epoch::

    run = start(cfg, out_dir, recipe)               # setup: generator, optimiser, rewards, resume
    for epoch in run.epochs():                        # eval, metrics and checkpoints in between
        batch = rollouts(run, epoch, ...)             # sample + score (+ advantages by the recipe)
        ...update with run.step(loss) ...

What it takes care of: the generator and its trainable parameters (full fine-tune or LoRA),
copies of them (old policy, reference), the prompts of each epoch, the rewards and monitors,
``metrics.jsonl`` + TensorBoard, atomic checkpoints and bit-exact resume, evaluation on
held-out prompts with image grids, NaN guards, and data parallelism under ``torchrun``
(every rank samples its share of each epoch's rollouts, rewards are gathered so advantages
are the same everywhere, gradients are averaged).

Everything random is drawn from generators seeded by ``(seed, epoch, sample index)``, so a
sample's rollout and training noise never depend on its batch, its rank or a resume.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from ..config import ConfigError
from ..generators.base import Cond, Trajectory
from ..utils import CheckpointError, atomic_path, check_resumable, load_checkpoint, remove_orphans, save_checkpoint

CHECKPOINT, METRICS, WEIGHTS = "checkpoint.pt", "metrics.jsonl", "weights.safetensors"
RESUMABLE_CHANGES = ("train.epochs", "train.checkpoint_every", "eval.every", "eval.per_tag",
                     "eval.images_per_prompt", "model.device")


# ---------------------------------------------------------------- distributed
@dataclasses.dataclass
class Dist:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_dist(device: str) -> tuple[Dist, str]:
    """Under ``torchrun`` (``WORLD_SIZE`` > 1) join the process group — NCCL on CUDA, gloo on
    CPU — and give each rank its own GPU; otherwise one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist(), device
    import torch.distributed as dist

    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device.startswith("cuda")
    if cuda:
        device = f"cuda:{local}"
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return Dist(rank, world), device


def gather(x: torch.Tensor, d: Dist) -> torch.Tensor:
    """Rank r holds global indices ``r, r+W, r+2W, ...``; returns all of them in global order."""
    if d.world == 1:
        return x
    import torch.distributed as dist

    parts = [torch.empty_like(x) for _ in range(d.world)]
    dist.all_gather(parts, x.contiguous())
    return torch.stack(parts, 1).reshape(-1, *x.shape[1:])


def average_grads(params: list[torch.nn.Parameter], d: Dist) -> None:
    if d.world == 1:
        return
    import torch.distributed as dist

    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad)
        p.grad /= d.world


def all_mean(values: dict[str, float], d: Dist) -> dict[str, float]:
    if d.world == 1 or not values:
        return values
    import torch.distributed as dist

    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64)
    dist.all_reduce(t)
    return {k: float(v) / d.world for k, v in zip(keys, t)}


def param_spread(params, d: Dist) -> float:
    """The largest difference between ranks of any parameter (0.0: all ranks hold the same
    weights, as averaged gradients and identical optimiser steps should give)."""
    import torch.distributed as dist

    flat = torch.cat([p.detach().reshape(-1).double().cpu() for p in params])
    lo, hi = flat.clone(), flat.clone()
    dist.all_reduce(lo, op=dist.ReduceOp.MIN)
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    return float((hi - lo).max())


def barrier(d: Dist) -> None:
    if d.world > 1:
        import torch.distributed as dist

        dist.barrier()


# ---------------------------------------------------------------- parameters
class ParamCopy:
    """A copy of the trainable parameters: the old policy (an EMA, DiffusionNFT), the frozen
    reference (KL), ... ``applied`` swaps it into the live parameters for a pass."""

    def __init__(self, params: list[torch.nn.Parameter]):
        self.values = [p.detach().clone() for p in params]

    @torch.no_grad()
    def ema_update(self, params, decay: float) -> None:
        for v, p in zip(self.values, params):
            v.mul_(decay).add_(p.detach(), alpha=1 - decay)

    @contextlib.contextmanager
    def applied(self, params) -> Iterator[None]:
        with torch.no_grad():
            saved = [p.detach().clone() for p in params]
            for v, p in zip(self.values, params):
                p.copy_(v)
        try:
            yield
        finally:
            with torch.no_grad():
                for s, p in zip(saved, params):
                    p.copy_(s)


def load_policy(m, device: str):
    """The generator named by ``ModelSettings`` and its trainable parameters: the ShapeWorld
    denoiser in full, or LoRA adapters on the denoiser's attention (any adapter)."""
    from ..generators import load_generator
    from ..generators.lora import add_lora, lora_parameters

    kind = m.generator.partition(":")[0]
    opts: dict[str, Any] = {}
    if kind == "shapeworld":
        opts = {"device": device, "step_type": m.step_type, "noise_level": m.noise_level, "eta": m.eta}
        if m.weights is not None:
            opts["weights"] = m.weights
    else:
        if m.lora_rank == 0:
            raise ConfigError(f"{kind} pipelines train LoRA adapters: set model.lora_rank (e.g. 32)")
        if m.weights is not None:
            raise ConfigError("model.weights is for the shapeworld generator; sd/sd3/flux name their folder")
        opts = {k: v for k, v in (("height", m.height), ("width", m.width)) if v is not None}
        opts.update({"eta": m.eta} if kind == "sd" else {"step_type": m.step_type, "noise_level": m.noise_level,
                                                          "eta": m.eta})
        if m.max_sequence_length is not None and kind != "sd":
            opts["max_sequence_length"] = m.max_sequence_length
    gen = load_generator(m.generator, **opts)
    if kind != "shapeworld":
        gen.pipe.to(device)
    net = gen.denoiser
    net.requires_grad_(False)
    if m.lora_rank:
        add_lora(net, rank=m.lora_rank, alpha=m.lora_alpha)
        params = lora_parameters(net)
    else:
        net.requires_grad_(True)
        params = [p for p in net.parameters()]
    net.train(False)  # no dropout: log-probs and resumes must be reproducible
    return gen, params


def export_weights(gen, path: Path, lora: bool) -> None:
    """What a run ships: full ShapeWorld weights (LoRA merged into a copy) that
    ``--weights`` loads, or the LoRA adapter of a diffusers pipeline."""
    from ..generators.lora import save_lora

    if gen.name == "shapeworld":
        model = gen.model
        if lora:
            import copy

            from ..generators.lora import merge_lora

            model = copy.deepcopy(model)
            model.unet = merge_lora(model.unet)
        with atomic_path(path) as tmp:
            model.save(tmp)
    else:
        save_lora(gen.denoiser, path)


# ---------------------------------------------------------------- prompts
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


# ---------------------------------------------------------------- rewards
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


# ---------------------------------------------------------------- rollouts
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
    diversity: float

    def local(self, x: torch.Tensor) -> torch.Tensor:
        """This rank's entries of a gathered ``[N]`` tensor."""
        return x[self.index]


def rollouts(run, epoch: int, *, stochastic: bool, window: tuple[int, int] | None = None) -> Rollouts:
    """Sample this rank's rollouts of ``epoch`` (in batches of ``sample.batch_size``), score
    them, and gather rewards from every rank."""
    from ..generators.sampling import sample

    s, d = run.cfg.sample, run.dist
    pairs = epoch_prompts(s, run.cfg.train.seed, epoch)
    n_total = s.prompts_per_epoch * s.group_size
    index = torch.arange(d.rank, n_total, d.world)
    groups_all = torch.arange(n_total) % s.prompts_per_epoch
    prompts = [pairs[int(g)][0] for g in groups_all[index]]
    records = [pairs[int(g)][1] for g in groups_all[index]]
    seeds = [sample_seed(run.cfg.train.seed, epoch, int(i)) for i in index]
    t0 = time.perf_counter()
    cond = run.gen.condition(prompts)
    trajs = []
    with torch.no_grad():
        for b in range(0, len(prompts), s.batch_size):
            trajs.append(sample(run.gen, cond[b:b + s.batch_size], seeds=seeds[b:b + s.batch_size], steps=s.steps,
                                guidance=s.guidance, stochastic=stochastic, window=window))
    traj = cat_trajectories(trajs)
    t1 = time.perf_counter()
    meta = records if all(r is not None for r in records) else None
    local = run.rewarder.score(traj.images, prompts, meta)
    scores = {k: gather(v, d) for k, v in local.items()}
    rewards = run.rewarder.combine(scores, groups_all)
    run.timer["sampling"] += t1 - t0
    run.timer["reward"] += time.perf_counter() - t1
    all_prompts = [pairs[int(g)][0] for g in groups_all]
    div = gather(group_diversity(traj.images, groups_all[index]).reshape(1), d).mean().item()
    return Rollouts(prompts, records, index, cond, traj, scores, rewards, groups_all, all_prompts, div)


def cat_trajectories(trajs: list[Trajectory]) -> Trajectory:
    if len(trajs) == 1:
        return trajs[0]
    t = trajs[0]
    cat = lambda name: None if getattr(t, name) is None else torch.cat([getattr(x, name) for x in trajs])
    return dataclasses.replace(t, prompts=sum((x.prompts for x in trajs), []), latents=cat("latents"),
                               log_probs=cat("log_probs"), images=cat("images"), x0_preds=cat("x0_preds"),
                               seeds=sum((x.seeds for x in trajs), []))


def group_diversity(images: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Mean pairwise RMS distance between the images of a group (the hacking monitor's
    collapse signal), averaged over groups with at least two images here."""
    vals = []
    for g in groups.unique():
        x = images[groups == g].flatten(1).float()
        if len(x) > 1:
            dist = torch.cdist(x, x) / math.sqrt(x.shape[1])
            vals.append(dist.sum() / (len(x) * (len(x) - 1)))
    return torch.stack(vals).mean() if vals else torch.tensor(0.0)


def minibatches(run) -> list[slice]:
    """Local slices of each optimiser step: global minibatch j is indices ``[jM, (j+1)M)``, of
    which this rank holds every ``world``-th — so W ranks take the same steps as one process."""
    n_local = run.cfg.sample.prompts_per_epoch * run.cfg.sample.group_size // run.dist.world
    m = n_local // run.cfg.train.minibatches
    return [slice(j * m, (j + 1) * m) for j in range(run.cfg.train.minibatches)]


def reward_metrics(batch: Rollouts) -> dict[str, float]:
    finite = batch.rewards[torch.isfinite(batch.rewards)]
    out = {"reward_mean": _nanmean(batch.rewards),
           "reward_std": float(finite.std(unbiased=False)) if len(finite) else float("nan"),
           "diversity": batch.diversity}
    for k, v in batch.scores.items():
        out[f"score/{k}"] = _nanmean(v)
    flat = [float(batch.rewards[batch.groups == g].std(unbiased=False)) == 0.0 for g in batch.groups.unique()]
    out["flat_groups"] = float(np.mean(flat))
    return out


def _nanmean(x: torch.Tensor) -> float:
    x = x[torch.isfinite(x)]
    return float(x.mean()) if len(x) else float("nan")


# ---------------------------------------------------------------- the run
class Run:
    """A recipe's state: config, generator, parameters, optimiser, rewards, output folder."""

    def __init__(self, cfg, out_dir: Path, recipe: str, progress: Callable | None = None):
        self.cfg, self.recipe, self.out = cfg, recipe, Path(out_dir)
        check_config(cfg)
        self.dist, device = init_dist(cfg.model.device)
        if cfg.sample.prompts_per_epoch * cfg.sample.group_size % (self.dist.world * cfg.train.minibatches):
            raise ConfigError(f"prompts_per_epoch × group_size = {cfg.sample.prompts_per_epoch * cfg.sample.group_size}"
                              f" must divide into {cfg.train.minibatches} minibatches on {self.dist.world} ranks")
        self.config_dict = flat_config(cfg)
        self.out.mkdir(parents=True, exist_ok=True)
        self.start_epoch = self._check_checkpoint()
        if self.dist.main:  # the settings of this run, as a preset that reproduces it
            from ..config import to_yaml

            with atomic_path(self.out / "config.yaml") as tmp:
                tmp.write_text(to_yaml(cfg))
        self.rewarder = Rewarder(cfg.reward)
        self.gen, self.params = load_policy(cfg.model, device)
        self.optimizer = torch.optim.AdamW(self.params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
        self.copies: dict[str, ParamCopy] = {}
        self.extra: dict[str, Any] = {}
        self.progress = progress
        self.timer: dict[str, float] = {"sampling": 0.0, "reward": 0.0, "training": 0.0}
        self.metrics: dict[str, float] = {}
        self.skipped = 0
        self.updates = 0
        self.writer = None

    def _check_checkpoint(self) -> int:
        path = self.out / CHECKPOINT
        remove_orphans(self.out)
        if not path.exists():
            return 0
        state = load_checkpoint(path)
        check_resumable(state["config"], self.config_dict, path, may_change=RESUMABLE_CHANGES)
        return int(state["step"])

    # -- resume / checkpoint
    def resume(self, **stateful) -> None:
        """Restore parameters, optimiser, parameter copies and ``stateful`` objects (with
        ``state_dict``/``load_state_dict``) from the checkpoint, if any."""
        self.stateful = stateful
        if not self.start_epoch:
            self._truncate_metrics(0)
            return
        state = load_checkpoint(self.out / CHECKPOINT)
        with torch.no_grad():
            for p, v in zip(self.params, state["model"]["params"]):
                p.copy_(v)
        self.optimizer.load_state_dict(state["optimizer"])
        for name, copy in self.copies.items():
            copy.values = [v.to(p.device) for v, p in zip(state["copies"][name], self.params)]
        for name, obj in stateful.items():
            obj.load_state_dict(state["stateful"][name])
        self.updates, self.skipped = state["updates"], state["skipped"]
        torch.set_rng_state(state["rng"])
        self._truncate_metrics(self.start_epoch)

    def _save(self, epoch: int) -> None:
        for p in self.params:
            if not torch.isfinite(p).all():
                raise FloatingPointError(f"non-finite weights at epoch {epoch}; no checkpoint written "
                                         f"(the last good one stays at {self.out / CHECKPOINT})")
        state = {"model": {"params": [p.detach().cpu() for p in self.params]}, "optimizer": self.optimizer.state_dict(),
                 "copies": {k: [v.cpu() for v in c.values] for k, c in self.copies.items()},
                 "stateful": {k: o.state_dict() for k, o in self.stateful.items()}, "step": epoch,
                 "updates": self.updates, "skipped": self.skipped, "rng": torch.get_rng_state(),
                 "config": self.config_dict, "recipe": self.recipe}
        save_checkpoint(self.out / CHECKPOINT, state)
        export_weights(self.gen, self.out / WEIGHTS, bool(self.cfg.model.lora_rank))

    # -- metrics
    def _truncate_metrics(self, epoch: int) -> None:
        """Keep the lines of epochs a resumed run will not redo (rank 0 writes the file)."""
        path = self.out / METRICS
        if not self.dist.main:
            return
        keep = []
        if epoch and path.exists():
            keep = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["epoch"] <= epoch]
        with atomic_path(path) as tmp:
            tmp.write_text("".join(ln + "\n" for ln in keep))
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.out / "tb"), purge_step=epoch + 1)
        except ImportError:  # tensorboard is a dependency; a stripped install still trains
            self.writer = None

    def log(self, epoch: int, metrics: dict[str, float]) -> None:
        if not self.dist.main:
            return
        row = {"epoch": epoch, **{k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                                  for k, v in metrics.items()}}
        with open(self.out / METRICS, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        if self.writer is not None:
            for k, v in metrics.items():
                if isinstance(v, (int, float)) and math.isfinite(v):
                    self.writer.add_scalar(k, v, epoch)
            self.writer.flush()

    # -- the loop
    def epochs(self) -> Iterator[int]:
        """Yield each remaining epoch; after each, log its metrics, evaluate and checkpoint when
        due. The recipe records into ``self.metrics`` while it runs."""
        cfg = self.cfg.train
        total = cfg.epochs
        if self.start_epoch == 0 and self.cfg.eval.every:
            self.log(0, self.evaluate(0))
        for epoch in range(self.start_epoch, total):
            self.metrics, self.timer = {}, dict.fromkeys(self.timer, 0.0)
            t0 = time.perf_counter()
            yield epoch
            done = epoch + 1
            n = self.cfg.sample.prompts_per_epoch * self.cfg.sample.group_size
            elapsed = time.perf_counter() - t0
            self.metrics.update({f"time/{k}": v for k, v in self.timer.items()})
            self.metrics.update({"time/epoch": elapsed, "samples_per_s": n / elapsed, "rollouts": done * n,
                                 "updates": self.updates, "skipped_updates": self.skipped})
            if (self.cfg.eval.every and done % self.cfg.eval.every == 0) or done == total:
                self.metrics.update(self.evaluate(done))
            due = done % cfg.checkpoint_every == 0 or done == total
            if due and self.dist.world > 1:
                self.metrics["rank_param_spread"] = param_spread(self.params, self.dist)
            self.log(done, self.metrics)
            if due:
                if self.dist.main:
                    self._save(done)
                barrier(self.dist)
            if self.progress is not None:
                self.progress(done, self.metrics)
        if self.writer is not None:
            self.writer.close()

    @contextlib.contextmanager
    def timed(self, what: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timer[what] = self.timer.get(what, 0.0) + time.perf_counter() - t0

    def step(self, loss: torch.Tensor, stats: dict[str, float]) -> None:
        """One optimiser step: backpropagate ``loss``, average gradients across ranks, clip
        their norm — or, if the loss or the gradient is not finite on any rank, skip the
        update with a warning."""
        finite = torch.tensor([float(torch.isfinite(loss).item())])
        if self.dist.world > 1:
            import torch.distributed as dist

            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        if finite.item():
            loss.backward()
            average_grads(self.params, self.dist)
            norm = torch.nn.utils.clip_grad_norm_(self.params, self.cfg.train.max_grad_norm)
            if torch.isfinite(norm):
                self.optimizer.step()
                self.updates += 1
                stats = {**stats, "grad_norm": float(norm)}
            else:
                self._skip("gradient")
        else:
            self._skip("loss")
        self.optimizer.zero_grad(set_to_none=True)
        for k, v in stats.items():
            self.metrics.setdefault("_" + k, []).append(v)

    def _skip(self, what: str) -> None:
        self.skipped += 1
        warnings.warn(f"non-finite {what}: update skipped ({self.skipped} so far)", RuntimeWarning, stacklevel=3)

    def skip_epoch(self, why: str) -> None:
        self.skipped += 1
        warnings.warn(f"{why}: this epoch's update is skipped", RuntimeWarning, stacklevel=2)

    def close_stats(self) -> None:
        """Average the per-step statistics recorded by ``step`` into this epoch's metrics."""
        for k in [k for k in self.metrics if k.startswith("_")]:
            vals = self.metrics.pop(k)
            self.metrics[k[1:]] = float(np.mean(vals))
        self.metrics.update(all_mean({k: v for k, v in self.metrics.items() if k in _RANK_LOCAL}, self.dist))

    # -- evaluation
    def evaluate(self, epoch: int) -> dict[str, float]:
        """Held-out evaluation (rank 0): ShapeWorld's eval split judged by the verifier,
        per tag and overall (GenEval-style), or the rewards and monitors on held-out
        prompts; an image grid per evaluation in ``grids/``."""
        out: dict[str, float] = {}
        if self.dist.main:
            out = _evaluate(self, epoch)
        barrier(self.dist)
        return out


_RANK_LOCAL = {"loss", "clip_frac", "ratio_mean", "ratio_min", "ratio_max", "kl", "policy_loss"}


def _evaluate(run: Run, epoch: int) -> dict[str, float]:
    from ..generators.sampling import generate_images
    from ..images import grid, save_png, to_tensor, to_uint8

    e = run.cfg.eval
    if run.gen.name == "shapeworld" and e.prompts is None:
        from ..rewards import load
        from ..world.prompts import is_held_out, prompt_set_path
        from ..world.records import TAGS, load_records

        records = [r for t in TAGS for r in [x for x in load_records(prompt_set_path("eval")) if x["tag"] == t][:e.per_tag]]
        recs = [r for r in records for _ in range(e.images_per_prompt)]
        seeds = [1_000_000 + i for i in range(len(recs))]
        images = to_tensor(to_uint8(generate_images(run.gen, [r["prompt"] for r in recs], seeds, steps=e.steps,
                                                    guidance=e.guidance)))
        correct = load("shapeworld")(images, [r["prompt"] for r in recs], recs).scores
        out = {f"eval/{t}": float(correct[[r["tag"] == t for r in recs]].mean()) for t in TAGS}
        out["eval/overall"] = float(np.mean([out[f"eval/{t}"] for t in TAGS]))
        held = torch.tensor([is_held_out(r) for r in recs])
        if held.any():
            out["eval/held_out"] = float(correct[held].mean())
    else:
        prompts = prompt_file(e.prompts) if e.prompts else [p for p, _ in epoch_prompts(run.cfg.sample, 12345, 0)]
        prompts = [p for p in prompts[:e.per_tag * 6] for _ in range(e.images_per_prompt)]
        images = generate_images(run.gen, prompts, list(range(len(prompts))), steps=e.steps, guidance=e.guidance)
        out = {f"eval/{k}": _nanmean(v) for k, v in run.rewarder.score(images, prompts, None).items()}
    save_png(grid(to_uint8(images[:64].cpu()), 8), run.out / "grids" / f"epoch_{epoch:05d}.png", scale=2)
    return out


def start(cfg, out_dir, recipe: str, progress: Callable | None = None) -> Run:
    """Setup: check the config and any checkpoint, load generator and rewards."""
    return Run(cfg, out_dir, recipe, progress)


def check_config(cfg) -> None:
    """What can be refused before any work: the generator spec, the prompt source."""
    from ..generators import GENERATORS

    kind = cfg.model.generator.partition(":")[0]
    if kind not in GENERATORS:
        raise ConfigError(f"unknown generator {cfg.model.generator!r}; expected one of {', '.join(GENERATORS)}")
    if cfg.sample.prompts == "shapeworld" and kind != "shapeworld":
        raise ConfigError(f"sample.prompts='shapeworld' is the ShapeWorld train split; give {kind} a prompt file")
    if cfg.sample.prompts != "shapeworld":
        prompt_entries(cfg.sample.prompts)
    if cfg.eval.prompts is not None:
        prompt_file(cfg.eval.prompts)


def flat_config(cfg) -> dict[str, Any]:
    def flat(d, prefix=""):
        out = {}
        for k, v in d.items():
            if isinstance(v, dict):
                out.update(flat(v, f"{prefix}{k}."))
            else:
                out[f"{prefix}{k}"] = str(v) if isinstance(v, Path) else v
        return out

    return flat(asdict(cfg))
