"""Small shared helpers."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place only if the block succeeds,
    so a crash mid-write never leaves a truncated file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def local_files_only(source) -> bool:
    """Whether ``from_pretrained(source)`` must not reach a hub: ``source`` is a local
    folder, or ``HF_HUB_OFFLINE=1`` is set."""
    return Path(source).exists() or os.environ.get("HF_HUB_OFFLINE") == "1"


def save_checkpoint(path: str | Path, state: dict) -> None:
    """``torch.save`` a training state atomically (tensors, numbers, strings, dicts only,
    so ``load_checkpoint`` can read it with ``weights_only=True``)."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | Path) -> dict:
    import torch

    return torch.load(path, weights_only=True)


def check_resumable(saved: dict, current: dict, path, may_change=("steps", "checkpoint_every")) -> None:
    """Refuse to resume a checkpoint trained with other settings (only ``may_change`` may differ)."""
    changed = {k for k in set(saved) | set(current) if saved.get(k) != current.get(k)} - set(may_change)
    if changed:
        raise ValueError(f"{path} was trained with different settings {sorted(changed)}; "
                         f"use a new output folder or the same settings")

