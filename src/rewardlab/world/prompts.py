"""Every ShapeWorld composition, the held-out split, a seeded sampler and the fixed prompt sets.

Held out of ``train`` (so ``eval`` measures generalisation to unseen compositions):

* position: a circle and a triangle in a vertical relation (``above`` / ``below``),
  either way round — 4 of the 24 position compositions;
* color_attr: any record containing a *green triangle* or a *yellow circle* —
  22 of the 72 color_attr compositions.

Both concepts still appear in ``train`` elsewhere (e.g. "a photo of a green triangle",
"a photo of a circle left of a triangle"), only the compositions are new.
"""

from __future__ import annotations

import itertools
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from .records import CLASSES, COLORS, NUMBERS, RELATIONS, TAGS, make_record

PROMPT_DIR = Path(__file__).parent / "data"
HELD_OUT_PAIRS = {("green", "triangle"), ("yellow", "circle")}
EVAL_PER_TAG = 100


def is_held_out(record: dict[str, Any]) -> bool:
    tag, inc = record["tag"], record["include"]
    if tag == "position":
        return {inc[0]["class"], inc[1]["class"]} == {"circle", "triangle"} and \
            inc[1]["position"][0] in ("above", "below")
    if tag == "color_attr":
        return any((r["color"], r["class"]) in HELD_OUT_PAIRS for r in inc)
    return False


@lru_cache(maxsize=None)
def _compositions(tag: str, colored_counting: bool) -> tuple[dict, ...]:
    pairs = [(a, b) for a, b in itertools.permutations(CLASSES, 2)]
    if tag == "single_object":
        out = [make_record(tag, [c]) for c in CLASSES]
    elif tag == "two_object":
        out = [make_record(tag, p) for p in pairs]
    elif tag == "counting":
        out = [make_record(tag, [c], count=n) for c in CLASSES for n in NUMBERS]
        if colored_counting:
            out += [make_record(tag, [c], [col], count=n)
                    for c in CLASSES for n in NUMBERS for col in COLORS]
    elif tag == "colors":
        out = [make_record(tag, [c], [col]) for c in CLASSES for col in COLORS]
    elif tag == "position":
        out = [make_record(tag, p, relation=r) for p in pairs for r in RELATIONS]
    elif tag == "color_attr":
        out = [make_record(tag, p, cols) for p in pairs
               for cols in itertools.permutations(COLORS, 2)]
    else:
        raise ValueError(f"unknown tag {tag!r}")
    return tuple(out)


def compositions(tag: str, split: str = "all", colored_counting: bool = False) -> list[dict]:
    """Distinct records of a tag; ``split`` is ``all``, ``train`` or ``held_out``."""
    recs = list(_compositions(tag, colored_counting))
    if split == "train":
        return [r for r in recs if not is_held_out(r)]
    if split == "held_out":
        return [r for r in recs if is_held_out(r)]
    if split != "all":
        raise ValueError(f"unknown split {split!r}; expected all, train or held_out")
    return recs


class PromptSampler:
    """Seeded sampler: a tag uniformly at random, then a composition of that tag."""

    def __init__(self, split: str = "train", tags=TAGS, seed: int = 0, colored_counting: bool = True):
        self.pools = [compositions(t, split, colored_counting) for t in tags]
        self.pools = [p for p in self.pools if p]
        self.rng = np.random.default_rng(seed)

    def __call__(self, n: int, rng: np.random.Generator | None = None) -> list[dict]:
        rng = rng or self.rng
        out = []
        for _ in range(n):
            pool = self.pools[rng.integers(len(self.pools))]
            out.append(pool[rng.integers(len(pool))])
        return out


def build_prompt_sets(seed: int = 0, eval_per_tag: int = EVAL_PER_TAG) -> dict[str, list[dict]]:
    """The committed sets: ``train`` (every trainable composition once, GenEval
    templates plus coloured counting) and ``eval`` (``eval_per_tag`` records per tag,
    cycling through all compositions in a seeded order; small tags repeat strings —
    GenEval's folder index gives each repeat its own seeds)."""
    rng = np.random.default_rng(seed)
    train = [r for t in TAGS for r in compositions(t, "train", colored_counting=True)]
    evalset = []
    for tag in TAGS:
        pool = compositions(tag, "all")
        order = []
        while len(order) < eval_per_tag:
            order += list(rng.permutation(len(pool)))
        evalset += [pool[i] for i in order[:eval_per_tag]]
    return {"train": train, "eval": evalset}


def prompt_set_path(name: str) -> Path:
    path = PROMPT_DIR / f"{name}.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"no prompt set {name!r} at {path}; known: "
                                f"{', '.join(p.stem for p in PROMPT_DIR.glob('*.jsonl'))}")
    return path


_FLIP = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}


def near_miss(record: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    """A record one edit away (other class, count, colour or relation, or swapped
    colours): a hard negative caption for contrastive training and for judge tests."""
    tag, inc = record["tag"], record["include"]
    other = lambda cls: [c for c in CLASSES if c != cls][rng.integers(len(CLASSES) - 1)]
    other_color = lambda col: [c for c in COLORS if c != col][rng.integers(len(COLORS) - 1)]
    if tag == "single_object":
        return make_record(tag, [other(inc[0]["class"])])
    if tag == "two_object":
        keep, drop = (inc[0], inc[1]) if rng.random() < 0.5 else (inc[1], inc[0])
        third = [c for c in CLASSES if c not in (keep["class"], drop["class"])][0]
        return make_record(tag, [keep["class"], third])
    if tag == "counting":
        n = inc[0]["count"]
        col = [inc[0]["color"]] if "color" in inc[0] else []
        return make_record(tag, [inc[0]["class"]], col, count=[c for c in NUMBERS if c != n][rng.integers(2)])
    if tag == "colors":
        return make_record(tag, [inc[0]["class"]], [other_color(inc[0]["color"])])
    if tag == "position":
        return make_record(tag, [inc[0]["class"], inc[1]["class"]], relation=_FLIP[inc[1]["position"][0]])
    return make_record(tag, [inc[0]["class"], inc[1]["class"]], [inc[1]["color"], inc[0]["color"]])
