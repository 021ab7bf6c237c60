"""What every trainer shares: resume from an atomic checkpoint, and the plain
optimise-log-checkpoint loop (``fit``) ShapeCLIP's contrastive trainer uses (the reward model
is a recipe now: ``align/reward_model.py``)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Callable

import torch

from .config import flatten
from .utils import check_resumable, load_checkpoint, reading, remove_orphans, save_checkpoint


def config_dict(cfg) -> dict:
    """A trainer or recipe config as the plain dict a checkpoint stores: nested sections as
    dotted keys (``train.lr``), paths as strings, so that ``torch.load(weights_only=True)``
    reads it back."""
    return {k: str(v) if isinstance(v, Path) else v for k, v in flatten(asdict(cfg)).items()}


def default_config_dict(cfg) -> dict:
    """``config_dict`` of the config class's defaults: what a setting added to the code after a
    checkpoint was written counts as when that checkpoint is resumed."""
    return config_dict(type(cfg)())


def checkpoint_step(path: Path, cfg) -> int:
    """The step a run of config ``cfg`` would resume from with the checkpoint at ``path`` (0:
    none), checked before any work: CheckpointError if it is unreadable or was trained with
    other settings."""
    state = _resumable(path, cfg)
    return int(state["step"]) if state else 0


def resume_training(path: Path, cfg, model, optimizer) -> tuple[int, dict]:
    """Restore model and optimiser from the checkpoint at ``path`` if there is one (refusing
    settings other than ``cfg``'s); returns the step to start from and the whole saved state."""
    state = _resumable(path, cfg)
    if not state:
        return 0, {}
    with reading(path, "training checkpoint for this model"):
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    return state["step"], state


def _resumable(path: Path, cfg) -> dict:
    """The checkpoint at ``path`` ({} if none), once temporary files that a killed write left
    beside it are removed; settings it predates count as their defaults."""
    path = Path(path)
    remove_orphans(path.parent)
    if not path.exists():
        return {}
    state = load_checkpoint(path)
    check_resumable(state["config"], config_dict(cfg), path, defaults=default_config_dict(cfg))
    return state


def save_training(path: Path, config: dict, model, optimizer, step: int, **extra) -> None:
    """Checkpoint a training run atomically (the counterpart of ``resume_training``)."""
    save_checkpoint(path, {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                           "config": config, **extra})


def fit(model: torch.nn.Module, optimizer, cfg, out_dir: Path, weights_name: str,
        step_loss: Callable[[int], torch.Tensor], lr_at: Callable[[int], float] | None = None,
        progress=None) -> Path:
    """Resume from ``out_dir/checkpoint.pt`` if present, then run ``cfg.steps`` steps of
    ``step_loss(step)``; checkpoint every ``cfg.checkpoint_every`` steps and export the
    weights (``model.save``) to ``out_dir/weights_name`` each time."""
    out_dir = Path(out_dir)
    ckpt, weights = out_dir / "checkpoint.pt", out_dir / weights_name
    config = config_dict(cfg)
    start, _ = resume_training(ckpt, cfg, model, optimizer)
    for step in range(start, cfg.steps):
        if lr_at is not None:
            for g in optimizer.param_groups:
                g["lr"] = lr_at(step)
        loss = step_loss(step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if progress is not None:
            progress(step + 1, loss.item())
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps:
            save_training(ckpt, config, model, optimizer, step + 1)
            model.save(weights)
    return weights
