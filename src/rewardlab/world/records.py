"""GenEval metadata records for ShapeWorld: vocabulary, prompt templates, validation.

A record is exactly what GenEval's ``evaluation_metadata.jsonl`` holds, e.g.::

    {"tag": "position", "include": [{"class": "square", "count": 1},
     {"class": "circle", "count": 1, "position": ["left of", 0]}],
     "prompt": "a photo of a circle left of a square"}

Prompt strings use GenEval's own templates, so a GenEval file restricted to
ShapeWorld's classes and colours works unchanged.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

CLASSES = ("circle", "square", "triangle")
COLORS = ("red", "green", "blue", "yellow")
RELATIONS = ("left of", "right of", "above", "below")
TAGS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
NUMBERS = {2: "two", 3: "three", 4: "four"}
MAX_COUNT = max(NUMBERS)
MAX_PROMPT_WORDS = 32


class RecordError(ValueError):
    """A record or prompt ShapeWorld cannot represent; the message says why."""


def _plural(cls: str) -> str:
    return cls + "s"


def prompt_for(record: dict[str, Any]) -> str:
    """GenEval's template for a record (the string GenEval's generator writes)."""
    tag, inc = record["tag"], record["include"]
    if tag == "single_object":
        return f"a photo of a {inc[0]['class']}"
    if tag == "two_object":
        return f"a photo of a {inc[0]['class']} and a {inc[1]['class']}"
    if tag == "counting":  # GenEval's template; a stated colour is ShapeWorld's extra phrasing
        color = f"{inc[0]['color']} " if "color" in inc[0] else ""
        return f"a photo of {NUMBERS[inc[0]['count']]} {color}{_plural(inc[0]['class'])}"
    if tag == "colors":
        return f"a photo of a {inc[0]['color']} {inc[0]['class']}"
    if tag == "position":
        return f"a photo of a {inc[1]['class']} {inc[1]['position'][0]} a {inc[0]['class']}"
    if tag == "color_attr":
        a, b = inc
        return f"a photo of a {a['color']} {a['class']} and a {b['color']} {b['class']}"
    raise RecordError(f"unknown tag {tag!r}; expected one of {', '.join(TAGS)}")


def make_record(tag: str, classes: Iterable[str], colors: Iterable[str | None] = (),
                count: int = 1, relation: str | None = None) -> dict[str, Any]:
    """Build a GenEval record. For ``position`` the first class is the anchor:
    ``make_record("position", ["square", "circle"], relation="left of")`` is
    "a photo of a circle left of a square" (GenEval's order)."""
    classes, colors = list(classes), list(colors)
    include: list[dict[str, Any]] = []
    for i, cls in enumerate(classes):
        req: dict[str, Any] = {"class": cls, "count": count if tag == "counting" else 1}
        if i < len(colors) and colors[i] is not None:
            req["color"] = colors[i]
        include.append(req)
    if tag == "position":
        include[1]["position"] = [relation, 0]
    record: dict[str, Any] = {"tag": tag, "include": include}
    if tag == "counting":
        record["exclude"] = [{"class": classes[0], "count": count + 1}]
    record["prompt"] = prompt_for(record)
    validate(record)
    return record


def validate(record: dict[str, Any]) -> dict[str, Any]:
    """Check a record against ShapeWorld's vocabulary; raise RecordError naming the problem."""
    if not isinstance(record, dict):
        raise RecordError(f"a record must be a JSON object, got {type(record).__name__}")
    tag = record.get("tag")
    if tag not in TAGS:
        raise RecordError(f"unknown tag {tag!r}; expected one of {', '.join(TAGS)}")
    include = record.get("include")
    if not isinstance(include, list) or not include:
        raise RecordError(f"record {record.get('prompt')!r} has no 'include' requirements")
    for i, req in enumerate(list(include) + list(record.get("exclude", []))):
        if not isinstance(req, dict):
            raise RecordError(f"requirement {i} must be an object, got {req!r}")
        cls = req.get("class")
        if cls not in CLASSES:
            raise RecordError(f"unknown class {cls!r}: ShapeWorld knows {', '.join(CLASSES)}")
        count = req.get("count", 1)
        if not isinstance(count, int) or not 1 <= count <= MAX_COUNT + 1:
            raise RecordError(f"count {count!r} for {cls} is outside 1..{MAX_COUNT}")
        if "color" in req and req["color"] not in COLORS:
            raise RecordError(f"unknown color {req['color']!r}: ShapeWorld knows {', '.join(COLORS)}")
        if "position" in req:
            pos = req["position"]
            if (not isinstance(pos, (list, tuple)) or len(pos) != 2 or pos[0] not in RELATIONS
                    or not isinstance(pos[1], int) or not 0 <= pos[1] < i):
                raise RecordError(f"bad position {pos!r}: expected [relation, earlier index], "
                                  f"relation one of {', '.join(RELATIONS)}")
    if sum(r.get("count", 1) for r in include) > MAX_COUNT:
        raise RecordError(f"record {record.get('prompt')!r} asks for more than {MAX_COUNT} objects")
    prompt = record.get("prompt")
    if prompt is not None:
        check_prompt(prompt)
    return record


def check_prompt(prompt: Any) -> str:
    """A prompt of ShapeWorld's words (any case, any punctuation); RecordError naming an
    unknown word as typed, so generation, evaluation and training all accept the same prompts."""
    if not isinstance(prompt, str):
        raise RecordError(f"a prompt must be a string, got {type(prompt).__name__} {prompt!r}")
    if not prompt.strip():
        raise RecordError("empty prompt")
    if len(prompt.split()) > MAX_PROMPT_WORDS:
        raise RecordError(f"prompt has {len(prompt.split())} words; at most {MAX_PROMPT_WORDS} allowed")
    unknown = [w for w in re.findall(r"\w+", prompt) if w.lower() not in _known_words()]
    if unknown:
        raise RecordError(f"cannot read prompt {prompt!r}: unknown word(s) {', '.join(map(repr, unknown))}; "
                          f"ShapeWorld knows the classes {', '.join(CLASSES)} and the colours {', '.join(COLORS)}")
    return prompt


_COL = "|".join(COLORS)
_CLS = "|".join(CLASSES)
_NUM = "|".join(NUMBERS.values())
_REL = "|".join(RELATIONS)
_PATTERNS = [
    ("color_attr", rf"a photo of an? ({_COL}) ({_CLS}) and an? ({_COL}) ({_CLS})"),
    ("colors", rf"a photo of an? ({_COL}) ({_CLS})"),
    ("position", rf"a photo of an? ({_CLS}) ({_REL}) an? ({_CLS})"),
    ("two_object", rf"a photo of an? ({_CLS}) and an? ({_CLS})"),
    ("counting", rf"a photo of ({_NUM}) (?:({_COL}) )?({_CLS})s"),
    ("single_object", rf"a photo of an? ({_CLS})"),
]


def parse_prompt(prompt: str) -> dict[str, Any]:
    """Turn a GenEval-template prompt into its record; RecordError names what is unknown."""
    text = " ".join(check_prompt(prompt).lower().strip().rstrip(".").split())
    for tag, pattern in _PATTERNS:
        m = re.fullmatch(pattern, text)
        if not m:
            continue
        g = m.groups()
        if tag == "color_attr":
            return make_record(tag, [g[1], g[3]], [g[0], g[2]])
        if tag == "colors":
            return make_record(tag, [g[1]], [g[0]])
        if tag == "position":
            return make_record(tag, [g[2], g[0]], relation=g[1])
        if tag == "two_object":
            return make_record(tag, g)
        if tag == "counting":
            count = {v: k for k, v in NUMBERS.items()}[g[0]]
            return make_record(tag, [g[2]], [g[1]], count=count)
        return make_record(tag, g)
    raise RecordError(f"cannot read prompt {prompt!r}: it follows none of GenEval's templates, "
                      f"e.g. 'a photo of a circle left of a square' or 'a photo of a red circle and a blue square'")


@lru_cache(maxsize=None)
def _known_words() -> frozenset[str]:
    words = {"a", "an", "photo", "of", "and"} | set(NUMBERS.values())
    words |= set(COLORS) | set(CLASSES) | {_plural(c) for c in CLASSES}
    for rel in RELATIONS:
        words |= set(rel.split())
    return frozenset(words)


def vocabulary() -> list[str]:
    """Every word a ShapeWorld prompt can contain (the text encoder's vocabulary)."""
    return sorted(_known_words())


def load_records(path: str | Path) -> list[dict[str, Any]]:
    """Read a GenEval-format JSONL file; errors name the file and line."""
    records = []
    if Path(path).is_dir():
        raise RecordError(f"{path} is a folder, not a GenEval metadata JSONL file")
    try:
        with open(path, encoding="utf-8") as f:
            lines = list(f)
    except UnicodeDecodeError as e:
        raise RecordError(f"{path} is not UTF-8 text (byte {e.start}: {e.reason})") from None
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = validate(json.loads(line))
            if "prompt" not in record:  # GenEval's metadata always carries it; generation needs it
                raise RecordError("record has no 'prompt'")
            records.append(record)
        except (json.JSONDecodeError, RecordError) as e:
            raise RecordError(f"{path}:{lineno}: {e}") from None
    if not records:
        raise RecordError(f"{path} holds no records")
    return records


def save_records(records: Iterable[dict[str, Any]], path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")


def first_per_tag(records: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    """The first ``limit`` records of each tag, in file order."""
    counts: dict[str, int] = defaultdict(int)
    out = []
    for r in records:
        if counts[r["tag"]] < limit:
            out.append(r)
            counts[r["tag"]] += 1
    return out
