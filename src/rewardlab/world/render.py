"""ShapeWorld scenes: place coloured shapes so a record holds, and rasterise them.

Coordinates are normalised to [0, 1] (x right, y down), so one scene renders at
any resolution. Every object is axis-aligned; its bounding box is
``(cx - hw, cy - hh, cx + hw, cy + hh)`` with the half-extents below.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .records import CLASSES, COLORS, validate

PALETTE = {  # sRGB, jittered per object when rendering
    "red": (215, 45, 40),
    "green": (45, 160, 65),
    "blue": (45, 85, 215),
    "yellow": (230, 195, 35),
}
# half-width, half-height of each class's bounding box, in units of the object size s
EXTENT = {"circle": (1.0, 1.0), "square": (0.9, 0.9), "triangle": (1.1, 1.0)}
SIZE_RANGE = (0.17, 0.22)  # object size s as a fraction of the image side
GAP = 0.06  # minimum gap between bounding boxes (and to the border)
POSITION_MARGIN = 0.65  # GenEval needs |direction| > 0.5; renders keep this much


@dataclass(frozen=True)
class Shape:
    cls: str
    color: str
    cx: float
    cy: float
    size: float

    @property
    def box(self) -> tuple[float, float, float, float]:
        ex, ey = EXTENT[self.cls]
        hw, hh = ex * self.size, ey * self.size
        return (self.cx - hw, self.cy - hh, self.cx + hw, self.cy + hh)


def shape_mask(cls: str, xs: np.ndarray, ys: np.ndarray, box) -> np.ndarray:
    """Boolean mask of the ideal ``cls`` filling ``box`` evaluated at points (xs, ys)."""
    x0, y0, x1, y1 = box
    cx, cy, hw, hh = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
    if cls == "circle":
        return ((xs - cx) / hw) ** 2 + ((ys - cy) / hh) ** 2 <= 1.0
    if cls == "square":
        return (np.abs(xs - cx) <= hw) & (np.abs(ys - cy) <= hh)
    if cls == "triangle":  # apex up, base down
        frac = (ys - y0) / (2 * hh)
        return (frac >= 0) & (frac <= 1) & (np.abs(xs - cx) <= hw * frac)
    raise ValueError(f"unknown class {cls!r}")


def relative_position(box_a, box_b, threshold: float = 0.1) -> tuple[set[str], np.ndarray]:
    """GenEval's ``relative_position``: relations of A to B from their boxes, plus the
    revised direction vector (dx, dy) the relations are read from."""
    boxes = np.array([box_a, box_b], dtype=float).reshape(2, 2, 2)
    center_a, center_b = boxes.mean(axis=-2)
    dim_a, dim_b = np.abs(np.diff(boxes, axis=-2))[..., 0, :]
    offset = center_a - center_b
    revised = np.maximum(np.abs(offset) - threshold * (dim_a + dim_b), 0) * np.sign(offset)
    if np.all(np.abs(revised) < 1e-3):
        return set(), np.zeros(2)
    d = revised / np.linalg.norm(offset)
    rels = set()
    if d[0] < -0.5:
        rels.add("left of")
    if d[0] > 0.5:
        rels.add("right of")
    if d[1] < -0.5:
        rels.add("above")
    if d[1] > 0.5:
        rels.add("below")
    return rels, d


_DIRECTION = {"left of": (0, -1), "right of": (0, 1), "above": (1, -1), "below": (1, 1)}


def _holds_with_margin(rel: str, box_a, box_b) -> bool:
    axis, sign = _DIRECTION[rel]
    return sign * relative_position(box_a, box_b)[1][axis] > POSITION_MARGIN


def _separated(a: Shape, b: Shape) -> bool:
    ax0, ay0, ax1, ay1 = a.box
    bx0, by0, bx1, by1 = b.box
    return ax1 + GAP <= bx0 or bx1 + GAP <= ax0 or ay1 + GAP <= by0 or by1 + GAP <= ay0


def scene_objects(record: dict[str, Any], rng: np.random.Generator) -> list[tuple[str, str]]:
    """(class, colour) of every object a record asks for; unstated colours are random."""
    objs = []
    for req in record["include"]:
        for _ in range(req.get("count", 1)):
            objs.append((req["class"], req.get("color") or COLORS[rng.integers(len(COLORS))]))
    return objs


def sample_scene(record: dict[str, Any], rng: np.random.Generator, restarts: int = 200) -> list[Shape]:
    """Place the record's objects at random so that the record holds (with margins).

    Objects are placed one at a time (50 tries each); after every 10 failed restarts
    the size range shrinks by 7%, so crowded scenes still fit."""
    validate(record)
    objs = scene_objects(record, rng)
    rel = record["include"][1].get("position") if len(record["include"]) > 1 else None
    for attempt in range(restarts):
        scale = 0.93 ** (attempt // 10)
        shapes: list[Shape] = []
        for cls, color in objs:
            shape = _place(cls, color, shapes, rng, scale, rel if len(shapes) == 1 else None)
            if shape is None:
                break
            shapes.append(shape)
        if len(shapes) == len(objs):
            return shapes
    raise RuntimeError(f"could not place {record['prompt']!r} after {restarts} restarts")


def _place(cls, color, placed, rng, scale, rel, tries: int = 50) -> Shape | None:
    ex, ey = EXTENT[cls]
    for _ in range(tries):
        s = rng.uniform(*SIZE_RANGE) * scale
        cx = rng.uniform(ex * s + GAP / 2, 1 - ex * s - GAP / 2)
        cy = rng.uniform(ey * s + GAP / 2, 1 - ey * s - GAP / 2)
        cand = Shape(cls, color, float(cx), float(cy), float(s))
        if not all(_separated(cand, p) for p in placed):
            continue
        if rel and not _holds_with_margin(rel[0], cand.box, placed[rel[1]].box):
            continue
        return cand
    return None


def render(shapes: list[Shape], size: int = 32, rng: np.random.Generator | None = None,
           supersample: int = 4) -> np.ndarray:
    """Rasterise shapes on a light background; returns uint8 ``[size, size, 3]``.

    With ``rng`` the background grey and each object's colour are jittered slightly."""
    if size < 8:
        raise ValueError(f"render size must be at least 8 pixels, got {size}")
    xs, ys = pixel_grid(size * supersample)
    bg = 242.0 + (rng.uniform(-8, 8) if rng is not None else 0.0)
    canvas = np.full(xs.shape + (3,), bg, dtype=np.float32)
    for s in shapes:
        color = np.array(PALETTE[s.color], dtype=np.float32)
        if rng is not None:
            color = np.clip(color + rng.uniform(-12, 12, size=3), 0, 255)
        canvas[shape_mask(s.cls, xs, ys, s.box)] = color
    return downsample(canvas, size)


def pixel_grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Normalised centre coordinates ``(xs, ys)`` of an ``n`` x ``n`` pixel grid."""
    g = (np.arange(n) + 0.5) / n
    return np.meshgrid(g, g)


def downsample(canvas: np.ndarray, size: int) -> np.ndarray:
    """A supersampled float canvas ``[k*size, k*size, 3]`` averaged to uint8 ``[size, size, 3]``."""
    k = canvas.shape[0] // size
    img = canvas.reshape(size, k, size, k, 3).mean(axis=(1, 3))
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def render_record(record: dict[str, Any], seed: int, size: int = 32) -> np.ndarray:
    """A correct image for ``record``, fully determined by ``seed``."""
    rng = np.random.default_rng(seed)
    return render(sample_scene(record, rng), size=size, rng=rng)


def corrupt(img: np.ndarray, rng: np.random.Generator, sigma: float = 0.05,
            jpeg_quality: int = 75) -> np.ndarray:
    """Gaussian noise (std ``sigma`` on the [0,1] scale) then a JPEG round trip."""
    import io

    from PIL import Image

    noisy = img.astype(np.float32) / 255 + rng.normal(0, sigma, img.shape)
    noisy = (np.clip(noisy, 0, 1) * 255).round().astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noisy).save(buf, format="JPEG", quality=jpeg_quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


assert set(EXTENT) == set(CLASSES) and set(PALETTE) == set(COLORS)
