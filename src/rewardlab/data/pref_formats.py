"""Readers for the preference formats people have on disk — what the judge benchmarks
(``eval/judges.py``) score and what the ``dpo`` recipe trains on. Each gives a
``PreferenceSet``: items of a prompt, two or more images and a human verdict — a pairwise
``label`` (1: the first image preferred, 0: the second, 0.5: a tie) or ``ranks`` (lower is
better, equal ranks tie). Malformed rows are counted in ``skipped``, never fatal; images are
read only when used, so a missing file costs its item alone.

=================  ==========================================================================
format             what it reads
=================  ==========================================================================
``pickapic``       Pick-a-Pic v2 parquet: ``caption, jpg_0, jpg_1, label_0, label_1``
``hpdv2``          HPDv2 ``test.json``: ``[{prompt, image_path: [...], rank: [...]}]``
``imagereward``    ImageRewardDB ``test.json``: ``[{prompt, generations: [...], ranking: [...]}]``
``mjbench``        MJ-Bench parquet/jsonl: ``caption, image0, image1, label`` (0: image0 is preferred,
                   1: image1, 0.5/"tie": tie; or Pick-a-Pic's ``label_0``), ``category, subcategory``
``preference``     rewardlab's preference parquet: ``prompt, image_a, image_b, label``
=================  ==========================================================================

An image is bytes, a Hugging Face image struct (``{"bytes", "path"}``) or a path relative to
the dataset file's folder. ``winner_loser_pairs`` turns any set into (prompt, winner, loser)
pairs: a ranking of n images gives its n(n-1)/2 ordered pairs, ties are left out and counted.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

FORMATS = ("pickapic", "hpdv2", "imagereward", "mjbench", "preference")


@dataclass
class Item:
    prompt: str
    images: list[Any]  # bytes or Path
    label: float | None = None  # pairwise: 1 = images[0] preferred, 0 = images[1], 0.5 = tie
    ranks: list[float] | None = None  # rankings: lower is better
    category: str = "all"
    subcategory: str = ""


@dataclass
class PreferenceSet:
    items: list[Item]
    format: str
    skipped: Counter = field(default_factory=Counter)  # reason -> rows


def read_preference_set(path: str | Path, fmt: str | None = None,
                        image_root: str | Path | None = None) -> PreferenceSet:
    """Read ``path`` (format detected from its columns unless ``fmt``); image paths are
    relative to ``image_root`` (default: the file's folder)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    rows = _rows(path)
    fmt = fmt or _detect(path, rows)
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    out = PreferenceSet([], fmt)
    for row in rows:
        try:
            out.items.append(READERS[fmt](row, Path(image_root or path.parent)))
        except (KeyError, TypeError, ValueError, IndexError) as e:
            out.skipped[f"malformed row ({type(e).__name__}: {str(e)[:60]})"] += 1
    if not out.items:
        raise ValueError(f"{path}: no usable {fmt} rows ({dict(out.skipped) or 'the file is empty'})")
    return out


def _rows(path: Path) -> list[dict]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            return pq.read_table(path).to_pylist()
        except (OSError, ValueError) as e:
            raise ValueError(f"{path}: not a readable parquet file ({e})") from None
    try:
        text = path.read_text(encoding="utf-8")
        data = [json.loads(ln) for ln in text.splitlines() if ln.strip()] if path.suffix == ".jsonl" else json.loads(text)
    except (UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"{path}: not readable JSON ({e})") from None
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a list of rows")
    return [r for r in data if isinstance(r, dict)]


def _detect(path: Path, rows: list[dict]) -> str:
    keys = set(rows[0]) if rows else set()
    for fmt, needed in (("pickapic", {"jpg_0", "jpg_1"}), ("mjbench", {"image0", "image1"}),
                        ("preference", {"image_a", "image_b"}), ("imagereward", {"generations", "ranking"}),
                        ("hpdv2", {"image_path", "rank"})):
        if needed <= keys:
            return fmt
    raise ValueError(f"{path}: cannot tell the format from its columns {sorted(keys)[:8]}; name it "
                     f"(eval judge --format, dpo data_format): {', '.join(FORMATS)}")


def _image(value, root: Path):
    if isinstance(value, dict):  # a Hugging Face image struct
        value = value.get("bytes") or value.get("path")
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, str) and value:
        return root / value
    raise ValueError("no image")


def _pickapic(row, root):
    l0, l1 = float(row["label_0"]), float(row["label_1"])
    if l0 + l1 != 1 or l0 not in (0, 0.5, 1):
        raise ValueError(f"labels {l0}, {l1}")
    return Item(str(row["caption"]), [_image(row["jpg_0"], root), _image(row["jpg_1"], root)], label=l0)


def _mjbench(row, root):
    if "label_0" in row and row.get("label") is None:
        label = float(row["label_0"])
    else:
        raw = row["label"]
        label = 0.5 if str(raw).lower() == "tie" or float(raw) == 0.5 else 1.0 - float(raw)
    if label not in (0, 0.5, 1):
        raise ValueError(f"label {row.get('label')}")
    return Item(str(row["caption"]), [_image(row["image0"], root), _image(row["image1"], root)], label=label,
                category=str(row.get("category") or "all"), subcategory=str(row.get("subcategory") or ""))


def _preference(row, root):
    label = float(row["label"])
    if label not in (0, 0.5, 1):
        raise ValueError(f"label {label}")
    return Item(str(row["prompt"]), [_image(row["image_a"], root), _image(row["image_b"], root)], label=label)


def _ranked(prompt, images, ranks, root):
    if len(images) != len(ranks) or len(images) < 2:
        raise ValueError(f"{len(images)} images, {len(ranks)} ranks")
    return Item(str(prompt), [_image(x, root) for x in images], ranks=[float(r) for r in ranks])


READERS = {
    "pickapic": _pickapic,
    "mjbench": _mjbench,
    "preference": _preference,
    "hpdv2": lambda row, root: _ranked(row["prompt"], row["image_path"], row["rank"], root),
    "imagereward": lambda row, root: _ranked(row["prompt"], row["generations"], row["ranking"], root),
}


def winner_loser_pairs(data: PreferenceSet) -> tuple[list[tuple[str, Any, Any]], int]:
    """``(prompt, winner, loser)`` for every decided pair of ``data`` — a pairwise verdict, or
    each pair of a ranking's images with different ranks (n images: up to n(n-1)/2 pairs) —
    and the number of tied pairs left out."""
    pairs, ties = [], 0
    for item in data.items:
        if item.ranks is None:
            if item.label == 0.5:
                ties += 1
            else:
                a, b = item.images if item.label == 1 else item.images[::-1]
                pairs.append((item.prompt, a, b))
            continue
        for i, j in combinations(range(len(item.images)), 2):
            if item.ranks[i] == item.ranks[j]:
                ties += 1
            else:
                a, b = (i, j) if item.ranks[i] < item.ranks[j] else (j, i)
                pairs.append((item.prompt, item.images[a], item.images[b]))
    return pairs, ties
