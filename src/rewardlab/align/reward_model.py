"""Reward-model training: a Bradley–Terry scorer fitted to preference pairs (``rewardlab train rm``).

The scorer is the ``preference`` reward's (``rewards/preference.py``): ShapeCLIP's architecture,
``s(image, prompt) = exp(τ)·cos``, so P(a beats b) = σ(s_a − s_b) (Bradley & Terry 1952; the
reward model of InstructGPT, Ouyang et al. 2022). Nothing is sampled from a generator: the
data are fixed pairs and the unit is the optimiser step.

    setup   scorer s_θ (random, or from model.weights); pairs (prompt, a, b, y), y ∈ {1, 0, ½}
    repeat  for each step (its pairs drawn with replacement by a generator seeded by (seed, step)):
              score    s_a = s_θ(a, prompt), s_b = s_θ(b, prompt)
              update   θ ← AdamW step on bt_loss(s_a, s_b, y)
            every eval.every steps: loss and accuracy on the held-out pairs of data.eval

On the harness's helpers (``common.py``): the settings and any checkpoint are checked before
any work, ``metrics.jsonl`` (a row per step) and TensorBoard (``tb/``), atomic checkpoints
every ``train.checkpoint_every`` steps with the weights exported beside them
(``weights.safetensors``, what ``load("preference", weights=...)`` reads), and a rerun resumes
bit-exactly: a step's pairs depend on (seed, step) alone and the optimiser state is saved.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from ..config import ConfigError, to_yaml
from ..rewards.preference import bt_score
from ..training import config_dict, default_config_dict
from ..utils import atomic_path, save_checkpoint
from .common import CHECKPOINT, WEIGHTS, log_metrics, open_metrics, read_checkpoint
from .config import RMConfig
from .losses import bt_loss

RESUMABLE_CHANGES = ("train.steps", "train.checkpoint_every", "eval.every", "eval.batch_size", "data.eval",
                     "model.device")


def train(cfg: RMConfig, out_dir: str | Path, progress=None) -> Path:
    """Train (or resume) the reward model into ``out_dir``; ``progress(step, metrics)`` after
    each step. Returns the weights path."""
    from ..world.clip import ShapeCLIP

    out = Path(out_dir)
    if cfg.data.train is None:
        raise ConfigError("data.train is required: a preference parquet (rewardlab rm make-shapeworld, or "
                          "rewardlab annotate export)")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("rm trains in a single process; run it without torchrun")
    config = config_dict(cfg)
    state = read_checkpoint(out, config, RESUMABLE_CHANGES, default_config_dict(cfg))  # before any work
    data = read_pairs(cfg.data.train, "data.train")
    held = read_pairs(cfg.data.eval, "data.eval") if cfg.data.eval is not None else None

    torch.manual_seed(cfg.train.seed)
    model = ShapeCLIP.load(cfg.model.weights) if cfg.model.weights is not None else ShapeCLIP()
    model = model.to(cfg.model.device).train()
    params = list(model.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    start, skipped = 0, 0
    if state:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start, skipped = int(state["step"]), int(state["skipped"])

    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "config.yaml") as tmp:  # the settings of this run, as a preset that reproduces it
        tmp.write_text(to_yaml(cfg))
    writer = open_metrics(out, start, key="step")
    if start == 0 and held is not None and cfg.eval.every:
        log_metrics(out, writer, 0, evaluate(model, held, cfg.eval.batch_size), key="step")
    for step in range(start, cfg.train.steps):
        t0 = time.perf_counter()
        idx = torch.from_numpy(np.random.default_rng([cfg.train.seed, step]).integers(
            len(data["label"]), size=cfg.train.batch_size))
        s_a, s_b, label = pair_scores(model, data, idx, cfg.model.device)
        loss = bt_loss(s_a, s_b, label)
        metrics = {"loss": loss.item(), "accuracy": accuracy(s_a, s_b, label)}
        norm = torch.tensor(float("nan"))
        if math.isfinite(metrics["loss"]):
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(params, cfg.train.max_grad_norm or math.inf)
        if torch.isfinite(norm):
            opt.step()
        else:
            skipped += 1
            warnings.warn(f"non-finite loss or gradient at step {step + 1}: update skipped ({skipped} so far)",
                          RuntimeWarning, stacklevel=2)
        opt.zero_grad(set_to_none=True)
        done = step + 1
        metrics.update({"grad_norm": float(norm), "skipped_updates": skipped, "time/step": time.perf_counter() - t0})
        if held is not None and ((cfg.eval.every and done % cfg.eval.every == 0) or done == cfg.train.steps):
            metrics.update(evaluate(model, held, cfg.eval.batch_size))
        log_metrics(out, writer, done, metrics, key="step")
        if done % cfg.train.checkpoint_every == 0 or done == cfg.train.steps:
            save(out, model, opt, done, skipped, config)
        if progress is not None:
            progress(done, metrics)
    if writer is not None:
        writer.close()
    return out / WEIGHTS


def read_pairs(path: Path, name: str) -> dict:
    """A preference parquet as ``{"prompt": [...], "a", "b": uint8 [N,3,H,W], "label": [N]}`` (one
    image size per file; the scorer resizes to its own); a ConfigError naming the setting, the
    file and the row for anything unusable."""
    from ..data.preferences import decode_png, load_preferences
    from ..images import ImageError

    try:
        rows = load_preferences(path)
    except ValueError as e:
        raise ConfigError(f"{name}: {e}") from None
    images = {}
    for col in ("image_a", "image_b"):
        arrays = []
        for i, data in enumerate(rows[col]):
            try:
                arrays.append(decode_png(data))
            except ImageError as e:
                raise ConfigError(f"{name}: {path}: row {i}: {col}: {e}") from None
        images[col[-1]] = arrays
    sizes = sorted({a.shape[:2] for a in images["a"] + images["b"]})
    if len(sizes) > 1:
        raise ConfigError(f"{name}: {path}: the images differ in size ({', '.join(f'{w}x{h}' for h, w in sizes)}); "
                          f"resize them to one")
    images = {k: torch.from_numpy(np.stack(v)).permute(0, 3, 1, 2).contiguous() for k, v in images.items()}
    return {"prompt": rows["prompt"], **images, "label": torch.tensor(rows["label"], dtype=torch.float32)}


def pair_scores(model, pairs: dict, idx: torch.Tensor, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The scores of the pairs ``idx`` (images to [0, 1] as ``images.to_tensor`` does) and their labels."""
    prompts = [pairs["prompt"][i] for i in idx.tolist()]
    s_a = bt_score(model, (pairs["a"][idx].float() / 255).to(device), prompts)
    s_b = bt_score(model, (pairs["b"][idx].float() / 255).to(device), prompts)
    return s_a, s_b, pairs["label"][idx].to(device)


def accuracy(s_a: torch.Tensor, s_b: torch.Tensor, label: torch.Tensor) -> float:
    """The share of decided pairs (label 1 or 0) whose preferred image scores higher; NaN if none."""
    decided = label != 0.5
    if not decided.any():
        return float("nan")
    return ((s_a > s_b) == (label > 0.5))[decided].float().mean().item()


@torch.no_grad()
def evaluate(model, pairs: dict, batch_size: int) -> dict[str, float]:
    """Bradley–Terry loss over every held-out pair, accuracy over the decided ones."""
    scores = [pair_scores(model, pairs, idx, model.clip.logit_scale.device)
              for idx in torch.arange(len(pairs["label"])).split(batch_size)]
    s_a, s_b, label = (torch.cat(x) for x in zip(*scores))
    return {"eval/loss": bt_loss(s_a, s_b, label).item(), "eval/accuracy": accuracy(s_a, s_b, label)}


def save(out: Path, model, opt, step: int, skipped: int, config: dict) -> None:
    """An atomic checkpoint, then the weights (refused, keeping the last good ones, if not finite)."""
    if not all(torch.isfinite(p).all() for p in model.parameters()):
        raise FloatingPointError(f"non-finite weights at step {step}; no checkpoint written "
                                 f"(the last good one stays at {out / CHECKPOINT})")
    state = {"model": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "optimizer": opt.state_dict(),
             "step": step, "skipped": skipped, "config": config, "recipe": "rm"}
    save_checkpoint(out / CHECKPOINT, state)
    model.save(out / WEIGHTS)
