"""Preference datasets: parquet files with columns ``prompt``, ``image_a``, ``image_b``
(PNG bytes) and ``label`` (1: a preferred, 0: b preferred, 0.5: tie).

``make_shapeworld_preferences`` labels pairs with the exact verifier: a correct render of a
record against a render of a near miss (or, for ties, two correct renders), with
``label_noise`` of the labels flipped to imitate disagreeing annotators.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

COLUMNS = ("prompt", "image_a", "image_b", "label")


def png_bytes(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    from ..images import load_image

    return load_image(data)


def make_shapeworld_preferences(pairs: int, label_noise: float = 0.0, tie_fraction: float = 0.1,
                                split: str = "train", seed: int = 0, size: int = 32,
                                progress=None) -> dict[str, list]:
    from ..world.prompts import PromptSampler, near_miss
    from ..world.render import render_record

    if not 0 <= label_noise <= 0.5:
        raise ValueError(f"label_noise must be in [0, 0.5], got {label_noise}")
    rng = np.random.default_rng(seed)
    sampler = PromptSampler(split, seed=seed)
    rows: dict[str, list] = {c: [] for c in COLUMNS}
    for rec in sampler(pairs, rng):
        good = render_record(rec, int(rng.integers(2**31)), size)
        tie = rng.random() < tie_fraction
        other = render_record(rec if tie else near_miss(rec, rng), int(rng.integers(2**31)), size)
        a_is_good = rng.random() < 0.5
        a, b = (good, other) if a_is_good else (other, good)
        label = 0.5 if tie else float(a_is_good)
        if not tie and rng.random() < label_noise:
            label = 1.0 - label
        for col, val in zip(COLUMNS, (rec["prompt"], png_bytes(a), png_bytes(b), label)):
            rows[col].append(val)
        if progress is not None:
            progress(1)
    return rows


def save_preferences(rows: dict[str, list], path: str | Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ..utils import atomic_path

    with atomic_path(path) as tmp:
        pq.write_table(pa.table({c: rows[c] for c in COLUMNS}), tmp)


def load_preferences(path: str | Path) -> dict[str, list]:
    """Read and validate a preference parquet; errors name the file and the problem."""
    import pyarrow.parquet as pq

    from ..world.records import RecordError, check_prompt

    try:
        table = pq.read_table(path)
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not a readable parquet file ({e})") from None
    missing = set(COLUMNS) - set(table.column_names)
    if missing:
        raise ValueError(f"{path}: missing column(s) {sorted(missing)}; need {', '.join(COLUMNS)}")
    rows = {c: table.column(c).to_pylist() for c in COLUMNS}
    if not rows["label"]:
        raise ValueError(f"{path} holds no pairs")
    bad = [i for i, y in enumerate(rows["label"]) if y not in (0, 0.5, 1)]
    if bad:
        raise ValueError(f"{path}: labels must be 1, 0 or 0.5; row {bad[0]} has {rows['label'][bad[0]]!r}")
    for i, prompt in enumerate(rows["prompt"]):  # the reward model reads ShapeWorld's words only
        try:
            check_prompt(prompt)
        except RecordError as e:
            raise ValueError(f"{path}: row {i}: {e}") from None
    return rows
