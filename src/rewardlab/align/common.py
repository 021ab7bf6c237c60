"""The harness every recipe stands on — helpers, not a trainer class (the rollouts are in
``rollouts.py``, data parallelism in ``dist.py``). A recipe reads as its paper's algorithm
box and calls, per epoch::

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
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from ..config import ConfigError
from ..training import config_dict, default_config_dict
from ..utils import atomic_path, check_resumable, load_checkpoint, remove_orphans, save_checkpoint
from .dist import all_mean, average_grads, barrier, init_dist, param_spread
from .rollouts import Rewarder, nanmean, epoch_prompts, prompt_entries, prompt_file

CHECKPOINT, METRICS, WEIGHTS = "checkpoint.pt", "metrics.jsonl", "weights.safetensors"
RESUMABLE_CHANGES = ("train.epochs", "train.checkpoint_every", "eval.every", "eval.per_tag",
                     "eval.images_per_prompt", "model.device", "model.compile")


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
    for module in _modules(gen):  # text encoders, VAE: frozen, so no gradient piles up in them
        module.requires_grad_(False)
    net = gen.denoiser
    if m.lora_rank:
        add_lora(net, rank=m.lora_rank, alpha=m.lora_alpha)
        params = lora_parameters(net)
    else:
        net.requires_grad_(True)
        params = [p for p in net.parameters()]
    net.train(False)  # no dropout: log-probs and resumes must be reproducible
    if m.compile:
        from ..generators.compiled import compile_no_grad

        compile_no_grad(net)
    return gen, params


def _modules(gen) -> list[torch.nn.Module]:
    if getattr(gen, "pipe", None) is not None:
        return [c for c in gen.pipe.components.values() if isinstance(c, torch.nn.Module)]
    return [m for m in (getattr(gen, "model", None), gen.denoiser) if isinstance(m, torch.nn.Module)]


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


def read_checkpoint(out: Path, config: dict, may_change: tuple[str, ...] = RESUMABLE_CHANGES,
                    defaults: dict | None = None) -> dict:
    """The checkpoint in the run folder ``out`` ({} if none), once the temporary files a killed
    write left there are removed; CheckpointError if it is unreadable or was trained with other
    settings than ``config`` (only the keys ``may_change`` may differ; keys the checkpoint lacks
    count as their ``defaults``)."""
    path = Path(out) / CHECKPOINT
    remove_orphans(out)
    if not path.exists():
        return {}
    state = load_checkpoint(path)
    check_resumable(state["config"], config, path, may_change=may_change, defaults=defaults)
    return state


def open_metrics(out: Path, start: int, key: str = "epoch"):
    """Open a run's ``metrics.jsonl``, keeping the rows up to ``start`` (rows keyed by ``key``:
    a resumed run redoes the rest), and its TensorBoard log ``tb/``; returns the writer (None
    without tensorboard) for ``log_metrics``."""
    path = Path(out) / METRICS
    keep = []
    if start and path.exists():
        keep = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)[key] <= start]
    with atomic_path(path) as tmp:
        tmp.write_text("".join(ln + "\n" for ln in keep))
    try:
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(str(Path(out) / "tb"), purge_step=start + 1)
    except ImportError:  # tensorboard is a dependency; a stripped install still trains
        return None


def log_metrics(out: Path, writer, n: int, metrics: dict[str, float], key: str = "epoch") -> None:
    """Append ``{key: n, **metrics}`` to ``metrics.jsonl`` (NaN/inf as null) and the finite
    numbers to TensorBoard at ``n``."""
    row = {key: n, **{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()}}
    with open(Path(out) / METRICS, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
    if writer is not None:
        for k, v in metrics.items():
            if isinstance(v, (int, float)) and math.isfinite(v):
                writer.add_scalar(k, v, n)
        writer.flush()


class Run:
    """A recipe's state: config, generator, parameters, optimiser, rewards, output folder."""

    def __init__(self, cfg, out_dir: Path, recipe: str, progress: Callable | None = None):
        self.cfg, self.recipe, self.out = cfg, recipe, Path(out_dir)
        check_config(cfg)
        self.dist, device = init_dist(cfg.model.device)
        n = cfg.sample.prompts_per_epoch * cfg.sample.group_size
        if n % (self.dist.world * cfg.train.minibatches):
            raise ConfigError(f"prompts_per_epoch × group_size = {n}"
                              f" must divide into {cfg.train.minibatches} minibatches on {self.dist.world} ranks")
        self.config_dict = config_dict(cfg)
        self.out.mkdir(parents=True, exist_ok=True)
        self.start_epoch = self._check_checkpoint()
        self.rewarder = Rewarder(cfg.reward)
        self.gen, self.params = load_policy(cfg.model, device)
        if self.dist.main:  # the settings of this run, as a preset that reproduces it
            from ..config import to_yaml

            with atomic_path(self.out / "config.yaml") as tmp:
                tmp.write_text(to_yaml(cfg))
        self.optimizer = torch.optim.AdamW(self.params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
        self.copies: dict[str, ParamCopy] = {}
        self.progress = progress
        self.timer: dict[str, float] = {"sampling": 0.0, "reward": 0.0, "training": 0.0}
        self.metrics: dict[str, float] = {}
        self.skipped = 0
        self.updates = 0
        self.writer = None

    def _check_checkpoint(self) -> int:
        defaults = default_config_dict(self.cfg)
        return int(read_checkpoint(self.out, self.config_dict, RESUMABLE_CHANGES, defaults).get("step", 0))

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
        if self.dist.main:
            self.writer = open_metrics(self.out, epoch)

    def log(self, epoch: int, metrics: dict[str, float]) -> None:
        if self.dist.main:
            log_metrics(self.out, self.writer, epoch, metrics)

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
        self.metrics.update(all_mean({k: v for k, v in self.metrics.items() if k in _RANK_LOCAL}, self.dist,
                                     keys=_RANK_LOCAL))

    # -- evaluation
    def evaluate(self, epoch: int) -> dict[str, float | list[float] | None]:
        """Held-out evaluation (rank 0): ShapeWorld's eval split judged by the verifier,
        per tag and overall (GenEval-style), or the rewards and monitors on held-out
        prompts; an image grid per evaluation in ``grids/``."""
        out: dict[str, float | list[float] | None] = {}
        if self.dist.main:
            out = _evaluate(self, epoch)
        barrier(self.dist)
        return out


_RANK_LOCAL = {"loss", "clip_frac", "ratio_mean", "ratio_min", "ratio_max", "kl", "policy_loss", "implicit_acc",
               "margin", "mse", "ref_mse"}


def _evaluate(run: Run, epoch: int) -> dict[str, float | list[float] | None]:
    from ..generators.sampling import generate_images
    from ..images import grid, hue_fractions, hue_histogram, save_png, to_tensor, to_uint8

    e = run.cfg.eval
    if run.gen.name == "shapeworld" and e.prompts is None:
        from ..rewards import load
        from ..world.prompts import is_held_out
        from ..world.records import TAGS

        recs, seeds = shapeworld_eval_set(e.per_tag, e.images_per_prompt)
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
        out = {f"eval/{k}": nanmean(v) for k, v in run.rewarder.score(images, prompts, None).items()}
    out["eval_palette"] = hue_fractions(hue_histogram(images))  # the same prompts and seeds every time
    save_png(grid(to_uint8(images[:64].cpu()), 8), run.out / "grids" / f"epoch_{epoch:05d}.png", scale=2)
    return out


def shapeworld_eval_set(per_tag: int, images_per_prompt: int) -> tuple[list[dict], list[int]]:
    """The periodic evaluation's ShapeWorld records (the first ``per_tag`` of each tag in the
    eval split, each ``images_per_prompt`` times) and their seeds — the same at every evaluation."""
    from ..world.prompts import prompt_set_path
    from ..world.records import first_per_tag, load_records

    records = first_per_tag(load_records(prompt_set_path("eval")), per_tag)
    recs = [r for r in records for _ in range(images_per_prompt)]
    return recs, [1_000_000 + i for i in range(len(recs))]


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
    if cfg.sample.prompts == "shapeworld" and not any(dataclasses.astuple(cfg.sample.tags)):
        raise ConfigError("every sample.tags weight is 0: no ShapeWorld prompt could be drawn")
    if cfg.sample.prompts != "shapeworld":
        prompt_entries(cfg.sample.prompts)
    if cfg.eval.prompts is not None:
        prompt_file(cfg.eval.prompts)
