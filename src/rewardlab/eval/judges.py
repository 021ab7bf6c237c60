"""How good is a reward as a judge? Pairwise accuracy against human (or known) verdicts,
per category, scored the way PickScore's evaluation does, plus Spearman's ρ where a
ranking is given.

Every item becomes pairs: a labelled pair as is, a ranking as all its pairs (the better
rank preferred, equal ranks a tie). The judge scores each image; a pair is *predicted* a
tie when the scores differ by at most τ. ``tie_accuracy`` credits 1 for a match (a tie
predicted for a tie included), 0.5 when either side is a tie, 0 otherwise
(Kirstain et al. 2023, https://arxiv.org/abs/2305.01569, §5). ``accuracy_no_ties`` leaves
out tie labels and uses τ = 0. τ is chosen on a validation set when one is given
(``choose_tau``), else 0.
"""

from __future__ import annotations

import itertools
from collections import defaultdict

import numpy as np
import torch

from ..data.pref_formats import PreferenceSet as JudgeSet


def tie_accuracy(pred: float, label: float) -> float:
    """PickScore's credit for one pair; ``pred``/``label`` are 1 (first wins), 0 or 0.5 (tie)."""
    if pred == label:
        return 1.0
    return 0.5 if 0.5 in (pred, label) else 0.0


def predict(s0: float, s1: float, tau: float = 0.0) -> float:
    return 0.5 if abs(s0 - s1) <= tau else float(s0 > s1)


def spearman(a, b) -> float:
    """Spearman's ρ with average ranks for ties (nan for a constant side)."""
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def choose_tau(diffs: np.ndarray, labels: np.ndarray) -> float:
    """The τ among 0 and the observed |score differences| that maximises the tie-aware
    accuracy (one sorted sweep: raising τ past |d| turns that pair's prediction into a tie)."""
    d, y = np.abs(np.asarray(diffs, float)), np.asarray(labels, float)
    base = np.array([tie_accuracy(predict(v, 0.0), t) for v, t in zip(diffs, y)])  # at τ = 0
    as_tie = np.array([tie_accuracy(0.5, t) for t in y])
    order = np.argsort(d, kind="stable")
    taus, gains = np.r_[0.0, d[order]], np.r_[0.0, np.cumsum((as_tie - base)[order])]
    last = np.r_[taus[1:] != taus[:-1], True]  # a τ counts only once every pair at or below it is a tie
    return float(taus[int(np.argmax(np.where(last, gains, -np.inf)))])


def score_items(reward, data: JudgeSet, batch_size: int = 32, progress=None, chunk: int = 512
                ) -> list[list[float] | None]:
    """The judge's score of every image of every item, reading images ``chunk`` at a time;
    None for an item with an unreadable image or a score the judge could not compute
    (counted in ``data.skipped``)."""
    scores: list[list[float] | None] = []
    start = 0
    while start < len(data.items):
        stop, n = start, 0
        while stop < len(data.items) and (n == 0 or n + len(data.items[stop].images) <= chunk):
            n += len(data.items[stop].images)
            stop += 1
        scores += _score_chunk(reward, data, range(start, stop), batch_size, progress)
        start = stop
    return scores


def _score_chunk(reward, data: JudgeSet, indices, batch_size: int, progress) -> list[list[float] | None]:
    from ..images import ImageError, load_image, to_tensor

    pending, missing = [], set()  # (item, image index, array)
    for i in indices:
        try:
            pending += [(i, k, load_image(ref)) for k, ref in enumerate(data.items[i].images)]
        except ImageError:
            data.skipped["missing or unreadable image"] += 1
            missing.add(i)
    by_item: dict[int, dict[int, float]] = defaultdict(dict)
    bad: set[int] = set()
    for group in _by_shape(pending).values():
        for b in range(0, len(group), batch_size):
            part = group[b:b + batch_size]
            with torch.no_grad():
                out = reward(to_tensor([a for _, _, a in part]), [data.items[i].prompt for i, _, _ in part])
            for (i, k, _), s, ok in zip(part, out.scores.tolist(), out.valid.tolist()):
                by_item[i][k] = s
                if not ok:
                    bad.add(i)
            if progress:
                progress(len(part))
    data.skipped["a score the judge could not compute"] += len(bad)
    if not data.skipped["a score the judge could not compute"]:
        del data.skipped["a score the judge could not compute"]
    return [None if i in missing or i in bad else [by_item[i][k] for k in range(len(data.items[i].images))]
            for i in indices]


def judge_report(data: JudgeSet, scores, tau: float = 0.0) -> dict:
    """Accuracy with and without ties per category and overall, Spearman's ρ for rankings."""
    groups: dict[str, list] = defaultdict(list)
    rhos = []
    for item, s in zip(data.items, scores):
        if s is None:
            continue
        for pair in _pairs(item, s):
            groups[item.category].append(pair)
            if item.subcategory:
                groups[f"{item.category}/{item.subcategory}"].append(pair)
        if item.ranks is not None and len(set(s)) > 1 and len(set(item.ranks)) > 1:
            rhos.append(spearman([-r for r in item.ranks], s))
    groups["overall"] = [p for item, s in zip(data.items, scores) if s is not None for p in _pairs(item, s)]
    return {"format": data.format, "items": len(data.items), "scored": sum(s is not None for s in scores),
            "skipped": dict(data.skipped), "tau": tau,
            "categories": {k: _accuracy(v, tau) for k, v in sorted(groups.items())},
            "spearman": float(np.mean(rhos)) if rhos else None}


def evaluate_judge(reward, data: JudgeSet, val: JudgeSet | None = None, batch_size: int = 32,
                   progress=None) -> dict:
    """``judge_report`` with τ chosen on ``val`` (when given)."""
    tau = 0.0
    if val is not None:
        pairs = [p for item, s in zip(val.items, score_items(reward, val, batch_size)) if s for p in _pairs(item, s)]
        tau = choose_tau(np.array([d for d, _ in pairs]), np.array([y for _, y in pairs])) if pairs else 0.0
    return judge_report(data, score_items(reward, data, batch_size, progress), tau)


def _pairs(item, s) -> list[tuple[float, float]]:
    """(score difference first − second, label) for every pair of the item."""
    if item.ranks is None:
        return [(s[0] - s[1], item.label)]
    return [(s[a] - s[b], 0.5 if item.ranks[a] == item.ranks[b] else float(item.ranks[a] < item.ranks[b]))
            for a, b in itertools.combinations(range(len(s)), 2)]


def _accuracy(pairs, tau: float) -> dict:
    decided = [(d, y) for d, y in pairs if y != 0.5]
    return {"pairs": len(pairs), "tie_labels": len(pairs) - len(decided),
            "accuracy": float(np.mean([tie_accuracy(predict(d, 0, tau), y) for d, y in pairs])),
            "accuracy_no_ties": float(np.mean([tie_accuracy(predict(d, 0), y) for d, y in decided])) if decided
            else None}


def _by_shape(pending) -> dict:
    groups = defaultdict(list)
    for entry in pending:
        groups[entry[2].shape].append(entry)
    return groups
