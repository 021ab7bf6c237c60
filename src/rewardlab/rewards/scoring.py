"""Score image files with several rewards: batched, per-file errors, CSV/JSONL output."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path
from typing import Callable, Sequence

from ..images import ImageError, load_image, to_tensor
from ..utils import atomic_path
from .base import Reward, RewardError


def score_files(paths: Sequence[Path], prompts: Sequence[str], rewards: Sequence[Reward], batch_size: int = 32,
                progress: Callable[[int], None] | None = None) -> list[dict]:
    """One row per file: ``file``, ``prompt``, a score per reward (None if invalid) and
    ``error`` for files that could not be read — the other files are still scored."""
    rows = [{"file": str(p), "prompt": q} for p, q in zip(paths, prompts)]
    for start in range(0, len(paths), batch_size):
        by_size = defaultdict(list)  # images of one size go through a reward together
        for i in range(start, min(start + batch_size, len(paths))):
            try:
                img = load_image(paths[i])
                by_size[img.shape].append((i, img))
            except ImageError as e:
                rows[i]["error"] = str(e)
        for items in by_size.values():
            idx = [i for i, _ in items]
            images = to_tensor([im for _, im in items])
            for reward in rewards:
                try:
                    out = reward(images, [prompts[i] for i in idx])
                except RewardError as e:  # e.g. an image too small for this reward: the others still count
                    for i in idx:
                        rows[i][reward.name] = None
                        _add_error(rows[i], f"{reward.name}: {e}")
                    continue
                for j, i in enumerate(idx):
                    rows[i][reward.name] = float(out.scores[j]) if bool(out.valid[j]) else None
                    if out.reasons and out.reasons[j] and not bool(out.valid[j]):  # why it could not be scored
                        _add_error(rows[i], f"{reward.name}: {out.reasons[j]}")
        if progress is not None:
            progress(min(batch_size, len(paths) - start))
    return rows


def _add_error(row: dict, message: str) -> None:
    row["error"] = "; ".join(filter(None, [row.get("error"), message]))


def write_scores(rows: list[dict], path: str | Path) -> None:
    """Write rows as ``.jsonl`` or ``.csv``, atomically (missing folders are created)."""
    path = Path(path)
    if path.suffix not in (".jsonl", ".csv"):
        raise ValueError(f"--out must end in .csv or .jsonl, got {path.name}")
    with atomic_path(path, sync=False) as tmp:
        if path.suffix == ".jsonl":
            tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
        else:
            fields = list(dict.fromkeys(k for r in rows for k in r))
            with open(tmp, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=fields)
                w.writeheader()
                w.writerows(rows)
