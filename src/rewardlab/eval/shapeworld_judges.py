"""A ShapeWorld judge benchmark with known labels, in MJ-Bench's form (``caption, image0,
image1, label, category, subcategory``; label 0: image0 is the better one). Categories:

* ``alignment`` — a correct render against a render of another prompt of the same tag:
  object (single/two object), colour, count, position, attribute binding (color_attr);
* ``near_miss`` — the same, against a prompt one edit away (``world.prompts.near_miss``);
* ``quality`` — one render against itself degraded, content matched: Gaussian noise
  (σ = 0.12), Gaussian blur (σ = 1 px), JPEG at quality 10.

The better image goes first or second at random. A wrong render is kept only if the exact
verifier rejects it for the caption ("a circle and a square" and "a square and a circle"
are different strings of one scene), so every label is right by ShapeWorld's definition.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

SUBCATEGORY = {"single_object": "object", "two_object": "object", "colors": "colour", "counting": "count",
               "position": "position", "color_attr": "binding"}
QUALITY = ("noise", "blur", "jpeg")


def degrade(img: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    if kind == "noise":
        return np.clip(img + rng.normal(0, 0.12 * 255, img.shape), 0, 255).astype(np.uint8)
    if kind == "blur":
        from scipy.ndimage import gaussian_filter

        return gaussian_filter(img.astype(np.float32), sigma=(1, 1, 0)).round().astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=10)
    return np.asarray(Image.open(buf).convert("RGB"))


def make_shapeworld_judge_set(per_subcategory: int = 100, seed: int = 0, size: int = 32) -> dict[str, list]:
    from ..data.preferences import png_bytes
    from ..world.prompts import PromptSampler, near_miss
    from ..world.render import render_record
    from ..world.verify import verify

    rng = np.random.default_rng(seed)
    rows: dict[str, list] = {k: [] for k in ("caption", "image0", "image1", "label", "category", "subcategory")}

    def add(caption, good, bad, category, sub):
        first = rng.random() < 0.5
        for k, v in zip(rows, (caption, png_bytes(good if first else bad), png_bytes(bad if first else good),
                               0 if first else 1, category, sub)):
            rows[k].append(v)

    def render(rec, draw, correct: bool):  # a render of draw() that the verifier judges (in)correct for rec
        for _ in range(100):
            img = render_record(draw(), int(rng.integers(2**31)), size)
            if verify(img, rec).correct == correct:
                return img
        raise RuntimeError(f"no {'correct' if correct else 'wrong'} render for {rec['prompt']!r} in 100 tries")

    for tag, sub in SUBCATEGORY.items():
        sampler = PromptSampler("all", tags=(tag,), seed=seed)
        n = per_subcategory // 2 if sub == "object" else per_subcategory  # object: two tags share the count
        for rec in sampler(n, rng):
            good = render(rec, lambda: rec, True)
            add(rec["prompt"], good, render(rec, lambda: sampler(1, rng)[0], False), "alignment", sub)
            add(rec["prompt"], good, render(rec, lambda: near_miss(rec, rng), False), "near_miss", sub)
    for kind in QUALITY:
        for rec in PromptSampler("all", seed=seed + 1)(per_subcategory, rng):
            good = render_record(rec, int(rng.integers(2**31)), size)
            add(rec["prompt"], good, degrade(good, kind, rng), "quality", kind)
    return rows


def save_judge_set(rows: dict[str, list], path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ..utils import atomic_path

    with atomic_path(path) as tmp:
        pq.write_table(pa.table(rows), tmp)
