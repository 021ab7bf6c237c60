"""Small shared helpers: atomic durable writes, checkpoints and weights files read with
errors that name the file."""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Iterator

_TMP = re.compile(r"\..+\.[A-Za-z0-9_]{8}\.tmp")  # what atomic_path's mkstemp names look like


class CheckpointError(ValueError):
    """A checkpoint or weights file that cannot be used; the message names the file and why."""


@contextlib.contextmanager
def atomic_path(path: str | Path, sync: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place only if the block succeeds,
    so a crash mid-write never leaves a truncated file behind. With ``sync`` the file is
    flushed to disk before the rename and the rename after it, so a power loss cannot
    either (checkpoints and weights; many small images skip it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; honour the umask as open() does
        if sync:
            _fsync(tmp)
        os.replace(tmp, path)
        if sync:
            _fsync(path.parent)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync(path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_orphans(folder: str | Path) -> list[Path]:
    """Delete the temporary files that killed ``atomic_path`` writes left in ``folder``."""
    folder = Path(folder)
    orphans = [p for p in folder.glob(".*.tmp") if _TMP.fullmatch(p.name) and p.is_file()] if folder.is_dir() else []
    for p in orphans:
        p.unlink(missing_ok=True)
    return orphans


def local_files_only(source) -> bool:
    """Whether ``from_pretrained(source)`` must not reach a hub: ``source`` is a local
    folder, or ``HF_HUB_OFFLINE=1`` is set."""
    return Path(source).exists() or os.environ.get("HF_HUB_OFFLINE") == "1"


@contextlib.contextmanager
def reading(path, what: str) -> Iterator[None]:
    """Turn any failure to read or apply the file at ``path`` into a one-line CheckpointError."""
    try:
        yield
    except (CheckpointError, FileNotFoundError):
        raise
    except Exception as e:  # corrupt, truncated, pickled or foreign files fail in many ways
        reason = " ".join(str(e).split())[:200] or type(e).__name__
        raise CheckpointError(f"{path} is not a usable {what} ({reason})") from None


def save_checkpoint(path: str | Path, state: dict) -> None:
    """``torch.save`` a training state atomically (tensors, numbers, strings, dicts only,
    so ``load_checkpoint`` can read it with ``weights_only=True``)."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | Path) -> dict:
    """A training state written by ``save_checkpoint``; CheckpointError for anything else."""
    import torch

    hint = "delete it to start afresh, or use another output folder"
    try:
        state = torch.load(path, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception:  # truncated zip, pickled objects, not a torch file at all, ...
        raise CheckpointError(f"{path} is not a readable training checkpoint "
                              f"(corrupt, truncated or not written by rewardlab); {hint}") from None
    if not isinstance(state, dict) or not {"model", "optimizer", "step", "config"} <= set(state):
        raise CheckpointError(f"{path} is not a rewardlab training checkpoint; {hint}")
    return state


def load_weights_file(path: str | Path, what: str) -> tuple[dict, dict]:
    """The config (safetensors metadata) and tensors of a rewardlab weights file;
    CheckpointError naming the file for a corrupt, truncated, pickled or foreign one."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with reading(path, f"{what} weights file"):
        if Path(path).is_dir():
            raise CheckpointError(f"{path} is a folder, not a {what} weights file")
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        if "config" not in meta:
            raise CheckpointError(f"{path} is not a rewardlab {what} weights file (no config metadata)")
        return json.loads(meta["config"]), load_file(str(path))


def load_released_state(path: str | Path, where: str) -> dict:
    """A released model's state dict: safetensors, or a torch file read with
    ``weights_only=True`` (a ``state_dict`` entry unwrapped); FileNotFoundError saying
    ``where`` to get it when the file is missing."""
    import torch

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}: {where}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("state_dict", state)


def load_into(module, state: dict, source) -> None:
    """Load a mapped released state dict into ``module``: every weight must be there and fit
    (``position_ids`` buffers aside), else ValueError naming ``source``."""
    try:
        missing, unexpected = module.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatches
        raise ValueError(f"{source} does not fit the config: {' '.join(str(e).split())[:300]}") from None
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise ValueError(f"{source} does not fit the config: missing {missing[:3]}, unexpected {unexpected[:3]}")


def load_tokenizer(source: str, what: str):
    """``AutoTokenizer`` from a folder or hub id; FileNotFoundError saying how to get it."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(source, local_files_only=local_files_only(source))
    except OSError:
        raise FileNotFoundError(f"cannot load the {what} tokenizer {source!r}: download it "
                                f"(`hf download {source} --local-dir DIR`) and pass tokenizer=DIR") from None


def check_resumable(saved: dict, current: dict, path, may_change=("steps", "checkpoint_every"),
                    defaults: dict | None = None) -> None:
    """Refuse to resume a checkpoint trained with other settings (only ``may_change`` may differ).
    A setting the checkpoint does not know (added to the code after it was written) counts as
    its value in ``defaults``, so an upgrade does not strand runs that never set it."""
    defaults = defaults or {}
    was = lambda k: saved[k] if k in saved else defaults.get(k)
    changed = {k for k in set(saved) | set(current) if was(k) != current.get(k)} - set(may_change)
    if changed:
        diff = ", ".join(f"{k} {was(k)!r} → {current.get(k)!r}" for k in sorted(changed))
        raise CheckpointError(f"{path} was trained with different settings ({diff}); "
                              f"use a new output folder or the same settings")
