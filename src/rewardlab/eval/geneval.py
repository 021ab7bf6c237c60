"""GenEval-compatible evaluation: GenEval's folder layout, results lines and summary.

Layout written (as GenEval's ``generation/diffusers_generate.py``)::

    OUT/<index:05d>/metadata.jsonl      the record
    OUT/<index:05d>/samples/<k:04d>.png  image k of that prompt
    OUT/results.jsonl                    one line per image, as GenEval's evaluate_images.py

Results lines carry ``filename``, ``tag``, ``correct``, ``reason``, ``prompt`` and
``metadata`` (the record as a JSON *string*), so GenEval's ``summary_scores.py`` reads
them unchanged; rewardlab adds ``score`` (the judge's score) and ``held_out``.

The judge is any :class:`~rewardlab.rewards.Reward`, called with the records as metadata.
An image is *correct* by the judge's own binary verdict where it gives one (a ``correct``
sub-score: the ``shapeworld`` verifier, whose ``score`` is then its partial credit and
``reason`` says which requirement failed), else when it is valid and its score is at
least ``threshold``.
"""

from __future__ import annotations

import json
import re
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..images import save_png, to_tensor, to_uint8
from ..rewards.base import Reward, check_images
from ..world.prompts import is_held_out

# images [B, 3, H, W] in [0, 1] for (prompts, seeds), e.g. generator_sampler(gen)
SampleFn = Callable[[Sequence[str], Sequence[int]], torch.Tensor]


def generator_sampler(generator, steps: int | None = None, guidance: float | None = None,
                      **options) -> SampleFn:
    """A Generator's deterministic sampler (flow ODE / DDIM η=0, ``generate_images``) as
    ``(prompts, seeds) -> images``: one seed per image, so an image never depends on its batch
    mates. ``steps`` defaults to the library's ``DEFAULT_STEPS``, ``guidance`` to the
    generator's own default; ``options`` (``height``, ``width``, ``batch_size``, ...) go to
    ``generate_images``."""
    from ..generators import DEFAULT_STEPS
    from ..generators.sampling import generate_images

    steps = DEFAULT_STEPS if steps is None else steps

    def sample(prompts: Sequence[str], seeds: Sequence[int]) -> torch.Tensor:
        return generate_images(generator, list(prompts), list(seeds), steps=steps, guidance=guidance, **options)

    return sample


def default_judge() -> Reward:
    """The ShapeWorld verifier, scoring partial credit (its binary verdict decides ``correct``)."""
    from ..rewards import load

    return load("shapeworld", mode="partial")


def image_seed(seed: int, index: int, k: int, per_prompt: int) -> int:
    """The seed of image ``k`` of prompt ``index``: every image of a run has its own."""
    return seed * 10_000_019 + index * per_prompt + k


def run_geneval(sample: SampleFn, judge: Reward | None, records: list[dict[str, Any]], images_per_prompt: int,
                out_dir: str | Path, seed: int = 0, batch_size: int = 64, threshold: float = 0.5,
                progress: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
    """Generate with ``sample``, save in GenEval's layout, judge with ``judge`` (default: the
    ShapeWorld verifier); returns (and writes) the results lines."""
    judge = judge or default_judge()
    out_dir = Path(out_dir)
    jobs = [(i, k) for i in range(len(records)) for k in range(images_per_prompt)]
    results = []
    for i, rec in enumerate(records):
        (out_dir / f"{i:05d}" / "samples").mkdir(parents=True, exist_ok=True)
        (out_dir / f"{i:05d}" / "metadata.jsonl").write_text(json.dumps(rec) + "\n")
    for start in range(0, len(jobs), batch_size):
        batch = jobs[start:start + batch_size]
        prompts = [records[i]["prompt"] for i, _ in batch]
        seeds = [image_seed(seed, i, k, images_per_prompt) for i, k in batch]
        arrays = to_uint8(check_images(sample(prompts, seeds)).detach())
        paths = [out_dir / f"{i:05d}" / "samples" / f"{k:04d}.png" for i, k in batch]
        for path, img in zip(paths, arrays):
            save_png(img, path)
        results += result_lines(paths, [records[i] for i, _ in batch], to_tensor(arrays), judge, threshold)
        if progress is not None:
            progress(len(batch))
    with open(out_dir / "results.jsonl", "w", encoding="utf-8") as f:
        for line in results:
            f.write(json.dumps(line) + "\n")
    return results


def result_lines(paths: list[Path], records: list[dict[str, Any]], images: torch.Tensor, judge: Reward,
                 threshold: float = 0.5) -> list[dict[str, Any]]:
    """GenEval results lines for ``images`` of ``records``, judged by ``judge``: the saved PNGs'
    8-bit pixels as ``[B,3,H,W]`` in [0, 1] (``images.to_tensor``), as GenEval's scorer reads them."""
    out = judge(images, [r["prompt"] for r in records], metadata=records)
    verdict = out.sub_scores.get("correct")
    lines = []
    for j, (path, record) in enumerate(zip(paths, records)):
        valid, score = bool(out.valid[j]), float(out.scores[j])
        correct = valid and (bool(verdict[j]) if verdict is not None else score >= threshold)
        lines.append({"filename": str(path), "tag": record["tag"], "correct": correct,
                      "reason": out.reasons[j] if out.reasons else "", "prompt": record["prompt"],
                      "metadata": json.dumps(record), "score": score if valid else None,
                      "held_out": is_held_out(record)})
    return lines


def judge_folder(out_dir: str | Path, judge: Reward | None = None, threshold: float = 0.5,
                 batch_size: int = 64) -> list[dict[str, Any]]:
    """Judge again the images a run saved in GenEval's layout (e.g. after the judge changed),
    without generating; rewrites ``results.jsonl`` and returns its lines."""
    judge, out_dir = judge or default_judge(), Path(out_dir)
    jobs = [(png, json.loads((folder / "metadata.jsonl").read_text(encoding="utf-8")))
            for folder in sorted(out_dir.glob("[0-9]" * 5)) for png in sorted((folder / "samples").glob("*.png"))]
    if not jobs:
        raise ValueError(f"{out_dir} holds no GenEval samples (<index>/samples/*.png)")
    results = []
    for start in range(0, len(jobs), batch_size):
        paths, records = zip(*jobs[start:start + batch_size])
        images = to_tensor(paths)
        results += result_lines(list(paths), list(records), images, judge, threshold)
    with open(out_dir / "results.jsonl", "w", encoding="utf-8") as f:
        for line in results:
            f.write(json.dumps(line) + "\n")
    return results


def earlier_output(out_dir: str | Path) -> list[Path]:
    """What an earlier run left in ``out_dir`` (GenEval's layout: ``results.jsonl`` and
    ``<index:05d>/`` folders of ``metadata.jsonl`` and ``samples/*.png``), for the caller to
    refuse or clear; ValueError if the folder holds anything else, so that clearing it can
    never delete files this command did not write."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return []
    entries = sorted(out_dir.iterdir())
    foreign = [p for p in entries if not _is_geneval_entry(p)]
    if foreign:
        raise ValueError(f"{out_dir} holds files that are not GenEval output (e.g. {foreign[0].name}); "
                         f"choose a new or empty output folder")
    return entries


DEMO_MARK = ".rewardlab-demo"  # in a GenEval folder the demo wrote (and may replace unasked)


def _is_geneval_entry(p: Path) -> bool:
    if p.name in ("results.jsonl", DEMO_MARK):
        return p.is_file() and not p.is_symlink()
    if not (re.fullmatch(r"\d{5}", p.name) and p.is_dir() and not p.is_symlink()):
        return False
    for q in p.iterdir():
        if q.name == "samples" and q.is_dir() and not q.is_symlink():
            if not all(re.fullmatch(r"\d{4}\.png", s.name) and s.is_file() for s in q.iterdir()):
                return False
        elif not (q.name == "metadata.jsonl" and q.is_file()):
            return False
    return True


def clear_output(entries: list[Path]) -> None:
    """Delete what ``earlier_output`` found."""
    for p in entries:
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink()


def load_results(path: str | Path) -> list[dict[str, Any]]:
    lines = []
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text (byte {e.start}: {e.reason})") from None
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{lineno}: not JSON ({e})") from None
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{lineno}: a results line must be a JSON object")
        missing = {"tag", "correct", "metadata"} - set(row)
        if missing:
            raise ValueError(f"{path}:{lineno}: missing field(s) {sorted(missing)}")
        if not isinstance(row["correct"], bool):  # "false" is a non-empty string: truthy
            raise ValueError(f"{path}:{lineno}: 'correct' must be true or false, got {row['correct']!r}")
        if not isinstance(row["tag"], str) or not isinstance(row["metadata"], (str, dict)):
            raise ValueError(f"{path}:{lineno}: 'tag' must be a string and 'metadata' a string or object")
        lines.append(row)
    if not lines:
        raise ValueError(f"{path} holds no results")
    return lines


def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    """GenEval's ``summary_scores.py`` arithmetic: prompts are grouped by their metadata
    string, tags in order of first appearance, overall = mean of per-tag means."""
    by_prompt: dict[str, list[bool]] = defaultdict(list)
    by_tag: dict[str, list[bool]] = {}
    for r in results:
        key = r["metadata"] if isinstance(r["metadata"], str) else json.dumps(r["metadata"])
        by_prompt[key].append(bool(r["correct"]))
        by_tag.setdefault(r["tag"], []).append(bool(r["correct"]))
    tags = {t: (float(np.mean(v)), int(sum(v)), len(v)) for t, v in by_tag.items()}
    return {
        "images": len(results),
        "prompts": len(by_prompt),
        "correct_images": float(np.mean([bool(r["correct"]) for r in results])),
        "correct_prompts": float(np.mean([any(v) for v in by_prompt.values()])),
        "tags": tags,
        "overall": float(np.mean([m for m, _, _ in tags.values()])),
    }


def format_summary(s: dict[str, Any]) -> str:
    lines = [f"Total images: {s['images']}", f"Total prompts: {s['prompts']}",
             f"% correct images: {s['correct_images']:.2%}",
             f"% correct prompts: {s['correct_prompts']:.2%}"]
    for tag, (mean, n_ok, n) in s["tags"].items():
        lines.append(f"{tag:<16} = {mean:.2%} ({n_ok} / {n})")
    lines.append(f"Overall score (avg. over tasks): {s['overall']:.5f}")
    return "\n".join(lines)


def held_out_split(results: list[dict[str, Any]]) -> dict[str, tuple[float, int]]:
    """Accuracy on compositions seen in training vs held out (tags that hold some out)."""
    out = {}
    for name, flag in (("seen", False), ("held_out", True)):
        rows = [r["correct"] for r in results
                if r.get("held_out") is flag and r["tag"] in ("position", "color_attr")]
        if rows:
            out[name] = (float(np.mean(rows)), len(rows))
    return out
