"""Score image files with several rewards: batched, per-file errors, CSV/JSONL output."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path
from typing import Callable, Sequence

from ..images import ImageError, load_image, to_tensor
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
                        rows[i]["error"] = "; ".join(filter(None, [rows[i].get("error"), f"{reward.name}: {e}"]))
                    continue
                for j, i in enumerate(idx):
                    rows[i][reward.name] = float(out.scores[j]) if bool(out.valid[j]) else None
        if progress is not None:
            progress(min(batch_size, len(paths) - start))
    return rows


def write_scores(rows: list[dict], path: str | Path) -> None:
    path = Path(path)
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif path.suffix == ".csv":
        fields = list(dict.fromkeys(k for r in rows for k in r))
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            w.writerows(rows)
    else:
        raise ValueError(f"--out must end in .csv or .jsonl, got {path.name}")
