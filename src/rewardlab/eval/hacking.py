"""The reward-hacking monitor: reads a run's per-epoch log (``metrics.jsonl`` of ``rewardlab
train``: the training reward ``reward_mean``, every monitor as ``score/NAME``,
``diversity``, the mean pairwise distance of a group's images, ``palette``, the batch's
hue fractions, and ``eval_palette``, the evaluation's) and raises an alarm when

* **gold falls** — over the last ``window`` epochs the training reward's trend is up, a gold
  reward's trend is down, and the gold's window mean has stayed below the best window mean
  it has had, for ``persist`` rows running, by at least ``drop`` and by at least ``z``
  standard errors of a difference of two window means — the epoch-to-epoch noise σ taken
  robustly from the whole history (1.4826·MAD of successive differences / √2), so a fresh
  draw of prompts each epoch does not ring (Goodhart: the proxy keeps rising, the thing it
  stood for does not);
* **diversity collapses** — the window mean of ``diversity`` is below ``collapse`` × its
  first window's mean (mode collapse onto what the reward likes);
* **the palette drifts** — the total variation between the mean hue fractions of the first
  ``palette_window`` rows and of the last is at least ``drift``: a shift every group shares
  (all samples turning blue), which the within-group diversity cannot see. Windows of 10,
  not 5: each epoch draws other prompts, and prompts that name colours make a single
  epoch's palette noisy (ShapeWorld: two 5-epoch windows of the shipped model differ by up
  to ~0.15). 0.2 by default: the unanchored DiffusionNFT run whose colours collapsed had
  moved 0.38 (``benchmarks/palette_drift.py``). The periodic evaluation's palette
  (``eval_palette``: the same prompts and seeds every time) is held against the first
  evaluation's, pair for pair — no prompt noise, so more sensitive: that run's epoch-30
  weights were 0.15 from the shipped model's there, 0.06 in the rollout windows.

Window means, not single epochs, so that a noisy epoch does not ring. ``HackingMonitor``
takes the log a row at a time, which is how ``rewardlab train --stop-on-hacking`` stops a
run; ``scan`` reads a whole log. Recipes never import this module: they log, eval reads.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np


MONITOR = "monitor.json"  # a training run's monitor settings (rewardlab train --palette-drift), for reports


@dataclass
class Alarm:
    epoch: int
    kind: str  # "gold_falls", "diversity_collapse" or "palette_drift"
    signal: str  # the gold key, "diversity", "palette" or "eval_palette"
    message: str
    gold_best: float | None = None  # the gold's best window mean so far, and its mean now
    gold_now: float | None = None


@dataclass
class HackingMonitor:
    gold: list[str] | None = None  # keys of gold rewards (default: every score/* but the trained rewards')
    reward: str = "reward_mean"
    trained: list[str] = field(default_factory=list)  # score/* keys that are the training reward itself
    window: int = 5
    drop: float = 0.02
    z: float = 3.0
    persist: int = 2
    collapse: float = 0.5
    drift: float = 0.2  # palette_drift: total variation from the first window's / evaluation's hue fractions (0: off)
    palette_window: int = 10  # rows per palette window: prompt draws make single rows' palettes noisy
    unit: str = "epoch"  # what a row is, in messages ("iterate" for a search)
    rows: list[dict] = field(default_factory=list)
    fired: set = field(default_factory=set)
    best: dict = field(default_factory=dict)
    below: dict = field(default_factory=dict)  # gold key → rows running with the window mean below the margin
    eval_palette: list | None = None  # the first evaluation's palette: the reference of later ones

    def update(self, row: dict) -> list[Alarm]:
        """Add one epoch's metrics; returns the alarms that fire at it (each kind and signal once)."""
        alarms = [a for a in [self._eval_palette_alarm(row)] if a is not None]  # evaluations, epoch 0 too
        if self.reward in row:  # not an evaluation-only line
            row = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}
            self.rows.append(row)  # NaN/inf live is None in the saved log: both are "not measured"
            alarms += self._training_alarms(row)
        new = [a for a in alarms if (a.kind, a.signal) not in self.fired]
        self.fired |= {(a.kind, a.signal) for a in new}
        return new

    def _training_alarms(self, row: dict) -> list[Alarm]:
        if len(self.rows) < self.window:
            return []
        recent = self.rows[-self.window:]
        alarms = [a for key in self._gold_keys(row) if (a := self._gold_alarm(key, recent))]
        return alarms + [a for a in (self._diversity_alarm(recent), self._palette_alarm()) if a is not None]

    def _gold_keys(self, row: dict) -> list[str]:
        if self.gold is not None:
            return [g if g.startswith("score/") else f"score/{g}" for g in self.gold]
        return [k for k in row if k.startswith("score/") and k not in self.trained]

    def _gold_alarm(self, key: str, recent: list[dict]) -> Alarm | None:
        gold, reward = _series(recent, key), _series(recent, self.reward)
        if gold is None or reward is None:  # an unmeasured row in the window: the run of low rows breaks
            self.below[key] = 0
            return None
        now = float(gold.mean())
        best = self.best[key] = max(self.best.get(key, now), now)
        history = _series([r for r in self.rows if r.get(key) is not None], key)
        margin = max(self.drop, self.z * _noise(history) * (2 / self.window) ** 0.5)
        self.below[key] = self.below.get(key, 0) + 1 if now <= best - margin else 0
        if _slope(reward) > 0 and _slope(gold) < 0 and self.below[key] >= self.persist:
            epoch = recent[-1]["epoch"]
            return Alarm(epoch, "gold_falls", key, f"{self.unit} {epoch}: {self.reward} rising while {key} fell from "
                         f"{best:.3f} to {now:.3f} (means of {self.window} {self.unit}s)", best, now)
        return None

    def _diversity_alarm(self, recent: list[dict]) -> Alarm | None:
        measured = [r for r in self.rows if r.get("diversity") is not None]
        first, now = _series(measured[:self.window], "diversity"), _series(recent, "diversity")
        if len(measured) < self.window:
            return None
        if first is None or now is None or now.mean() >= self.collapse * first.mean():
            return None
        epoch = recent[-1]["epoch"]
        return Alarm(epoch, "diversity_collapse", "diversity",
                     f"{self.unit} {epoch}: diversity {now.mean():.3f} is below "
                     f"{self.collapse:.0%} of its start ({first.mean():.3f})")

    def _palette_alarm(self) -> Alarm | None:
        windows = _palette_windows(self.rows, len(self.rows) - 1, self.palette_window)
        if not self.drift or windows is None:
            return None
        first, now = windows
        moved = total_variation(first, now)
        if moved < self.drift:
            return None
        epoch = self.rows[-1]["epoch"]
        return Alarm(epoch, "palette_drift", "palette",
                     f"{self.unit} {epoch}: the palette moved {moved:.2f} (total variation) from its first window: "
                     f"{_largest_shifts(first, now)}")

    def _eval_palette_alarm(self, row: dict) -> Alarm | None:
        """Evaluations draw the same prompts and seeds every time, so their palettes compare
        pair for pair: no window, no prompt noise — the first evaluation is the reference."""
        if not row.get("eval_palette") or not self.drift:
            return None
        if self.eval_palette is None:
            self.eval_palette = row["eval_palette"]
            return None
        first, now = np.asarray(self.eval_palette, dtype=float), np.asarray(row["eval_palette"], dtype=float)
        moved = total_variation(first, now)
        if moved < self.drift:
            return None
        return Alarm(row["epoch"], "palette_drift", "eval_palette",
                     f"{self.unit} {row['epoch']}: on the evaluation's fixed prompts and seeds the palette moved "
                     f"{moved:.2f} (total variation) from the first evaluation's: {_largest_shifts(first, now)}")


def palette_drift(rows: list[dict], window: int = HackingMonitor.palette_window) -> list[float | None]:
    """Per row, the total variation of the last ``window`` rows' mean palette from the first
    window's (None until a window is complete or where a row lacks a palette) — the curve the
    ``palette_drift`` alarm thresholds."""
    return [None if (w := _palette_windows(rows, i, window)) is None else total_variation(*w)
            for i in range(len(rows))]


def eval_palette_drift(rows: list[dict]) -> list[tuple[int, float]]:
    """``(epoch, total variation from the first evaluation's palette)`` for every evaluation
    that logged one (the first gives 0) — what the evaluation's ``palette_drift`` alarm
    thresholds."""
    evals = [r for r in rows if r.get("eval_palette")]
    first = np.asarray(evals[0]["eval_palette"], dtype=float) if evals else None
    return [(r["epoch"], total_variation(first, np.asarray(r["eval_palette"], dtype=float))) for r in evals]


def _palette_windows(rows: list[dict], end: int, window: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Mean palettes of the first ``window`` rows with one and of the ``window`` rows ending at
    row ``end``; None until both windows are whole (a row without a palette breaks the latter)."""
    measured, recent = [r for r in rows if r.get("palette")], rows[max(0, end - window + 1): end + 1]
    if len(measured) < window or len(recent) < window or not all(r.get("palette") for r in recent):
        return None
    return _mean_palette(measured[:window]), _mean_palette(recent)


def _mean_palette(rows: list[dict]) -> np.ndarray:
    return np.mean([np.asarray(r["palette"], dtype=float) for r in rows], axis=0)


def total_variation(p: np.ndarray, q: np.ndarray) -> float:
    """Total variation distance between two distributions: half the L1 distance."""
    return float(0.5 * np.abs(np.asarray(p) - np.asarray(q)).sum())


def _largest_shifts(first: np.ndarray, now: np.ndarray, n: int = 3) -> str:
    from ..images import HUES

    names = HUES if len(first) == len(HUES) else [f"hue bin {i}" for i in range(len(first))]
    order = np.argsort(-np.abs(now - first))[:n]
    return ", ".join(f"{names[i]} {first[i]:.2f} → {now[i]:.2f}" for i in order if abs(now[i] - first[i]) >= 0.01)


def read_log(path: str | Path) -> list[dict]:
    """The rows of a training run's ``metrics.jsonl``, or of a search's ``trace.json`` (each
    scoring round with monitors a row, numbered as epochs); a run folder or the file."""
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.jsonl" if (path / "metrics.jsonl").exists() else path / "trace.json"
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".json":
            return trace_rows(json.loads(text))
        return [json.loads(ln) for ln in text.splitlines() if ln.strip()]
    except (OSError, ValueError, AttributeError) as e:
        raise ValueError(f"cannot read the run log {path}: {e}") from None


def trace_rows(trace: dict) -> list[dict]:
    """A search trace's scoring rounds with monitors (``scored`` events), numbered as epochs."""
    scored = [e for e in trace.get("trace", []) if e.get("event") == "scored"]
    return [{"epoch": i, **{k: v for k, v in e.items() if k not in ("event", "epoch")}}
            for i, e in enumerate(scored, 1)]


def scan(rows: list[dict], **settings) -> list[Alarm]:
    """Every alarm over a whole log."""
    monitor = HackingMonitor(**settings)
    return [a for row in rows for a in monitor.update(row)]


def alarms_json(alarms: list[Alarm]) -> list[dict]:
    return [asdict(a) for a in alarms]


def _series(rows: list[dict], key: str) -> np.ndarray | None:
    vals = [r.get(key) for r in rows]
    if any(v is None for v in vals):
        return None
    return np.asarray(vals, dtype=float)


def _noise(y: np.ndarray) -> float:
    """The epoch-to-epoch standard deviation, robustly: 1.4826·MAD of successive differences
    / √2 (differences remove a trend; the median ignores the jumps of a real change)."""
    if len(y) < 3:
        return 0.0
    d = np.diff(y)
    return float(1.4826 * np.median(np.abs(d - np.median(d))) / 2 ** 0.5)


def _slope(y: np.ndarray) -> float:
    """Least-squares slope per epoch."""
    x = np.arange(len(y), dtype=float)
    return float(np.polyfit(x, y, 1)[0])
