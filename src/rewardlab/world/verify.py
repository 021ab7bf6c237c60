"""The exact ShapeWorld verifier: GenEval's decision rule on objects found from pixels alone.

Detection (classical image analysis, nothing but the pixels):

1. a pixel is *foreground* when it is far from the background colour (``FG_DISTANCE``)
   and not grey; its colour is the palette colour with the nearest hue;
2. each colour's connected components (holes filled, specks under ``MIN_AREA`` of the
   image dropped) are objects;
3. an object's class is the ideal shape template, drawn inside the object's own bounding
   box, with the highest IoU against its mask — robust to the soft corners of generated
   images where fill-ratio rules are not;
4. a blob that fits templates better as several objects (touching same-coloured shapes,
   common in generated images) is split at its distance-transform peaks.

Decision: GenEval's ``evaluate`` — per ``include`` requirement the first ``count``
objects of the class (largest first; ones of the required colour first) must exist,
have the colour, and stand in the relation to every object matched by the target
requirement (``relative_position`` with GenEval's 0.1 threshold); ``exclude`` asks for
fewer than ``count`` objects of the class. Every requirement also gets partial credit.
"""

from __future__ import annotations

import colorsys
import functools
import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from .records import CLASSES, COLORS, validate
from .render import PALETTE, relative_position, shape_mask

FG_DISTANCE = 0.3  # RGB distance from the background colour, on the [0, 1] scale
CHROMA_MIN = 0.08  # below this a pixel has no usable hue (grey)
MIN_AREA = 0.005  # smallest object, as a fraction of the image area
SPLIT_GAIN = 0.05  # a blob is split into touching objects when their mean fit is this much better
HUES = {c: colorsys.rgb_to_hsv(*(np.array(PALETTE[c]) / 255))[0] for c in COLORS}


@dataclass
class Detection:
    cls: str
    color: str
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels
    area: int
    fit: float  # IoU of the mask with the chosen template


@dataclass
class Verdict:
    correct: bool
    score: float  # mean partial credit over checks, in [0, 1]
    checks: dict[str, float] = field(default_factory=dict)
    reason: str = ""
    objects: list[Detection] = field(default_factory=list)


def _hue_labels(img: np.ndarray) -> np.ndarray:
    """Per-pixel palette index, or -1 for background.

    A pixel is foreground when its RGB distance from the background (the image's
    median colour) exceeds ``FG_DISTANCE`` — luminance keeps full resolution under
    JPEG — and it has some chroma; its colour is the palette colour of nearest hue."""
    x = img.astype(np.float32) / 255
    bg = np.median(x.reshape(-1, 3), axis=0)
    mx, mn = x.max(-1), x.min(-1)
    chroma = mx - mn
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    safe = np.where(chroma > 0, chroma, 1)
    hue = np.where(mx == r, ((g - b) / safe) % 6, np.where(mx == g, (b - r) / safe + 2, (r - g) / safe + 4)) / 6
    centers = np.array([HUES[c] for c in COLORS])
    dist = np.abs(hue[..., None] - centers)
    dist = np.minimum(dist, 1 - dist)
    fg = (np.linalg.norm(x - bg, axis=-1) > FG_DISTANCE) & (chroma > CHROMA_MIN)
    return np.where(fg, dist.argmin(-1), -1)


COVERAGE = 0.4  # a template pixel is "in" when the ideal shape covers this much of it
OFFSETS = (0.0, 0.5, 1.0, 1.5, 2.0)  # box sides move by up to one pixel, in half pixels


@functools.lru_cache(maxsize=4096)
def _templates(cls: str, w: int, h: int) -> np.ndarray:
    """Boolean templates ``[P, h+2, w+2]`` of ``cls`` in every box whose sides sit within
    one pixel (half-pixel steps) of a ``w`` x ``h`` box padded by one pixel, rasterised
    like a render: covered by at least ``COVERAGE``."""
    k = 4
    ys, xs = (np.mgrid[0:(h + 2) * k, 0:(w + 2) * k] + 0.5) / k
    out = []
    for x0, y0, dx1, dy1 in itertools.product(OFFSETS, OFFSETS, OFFSETS, OFFSETS):
        if w + dx1 - x0 < 1 or h + dy1 - y0 < 1:  # degenerate box for a 1-pixel-thin mask
            out.append(np.zeros((h + 2, w + 2), bool))
            continue
        cover = shape_mask(cls, xs, ys, (x0, y0, w + dx1, h + dy1)).reshape(h + 2, k, w + 2, k)
        out.append(cover.mean((1, 3)) >= COVERAGE)
    return np.stack(out)


def classify_shape(mask: np.ndarray) -> tuple[str, float]:
    """Best-matching class for a boolean object mask cropped to its bounding box: the
    highest IoU over each class's templates (see ``_templates``), so a noise spur, a
    lost corner or a soft edge does not decide the class. (Soft, anti-aliased IoU was
    tried too: slower and less accurate on JPEG'd 32-pixel renders.)"""
    h, w = mask.shape
    padded = np.pad(mask, 1)
    area = padded.sum()
    best = ("circle", -1.0)
    for cls in CLASSES:
        tmpl = _templates(cls, w, h)
        inter = (tmpl & padded).sum((1, 2))
        iou = float((inter / np.maximum(1, tmpl.sum((1, 2)) + area - inter)).max())
        if iou > best[1]:
            best = (cls, iou)
    return best


def split_touching(mask: np.ndarray) -> list[np.ndarray]:
    """Split a blob of touching same-coloured objects at its distance-transform peaks.

    Peaks farther apart than the larger of their two inscribed radii are separate
    objects; pixels go to the peak minimising ``distance - radius`` (a power diagram)."""
    d = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    peaks = (d == ndimage.maximum_filter(d, size=3)) & (d >= max(1.5, 0.5 * d.max()))
    centers: list[tuple[np.ndarray, float]] = []
    for c in sorted(np.argwhere(peaks), key=lambda c: -d[tuple(c)]):
        r = d[tuple(c)]
        if all(np.hypot(*(c - c2)) > max(r, r2) for c2, r2 in centers):
            centers.append((c, r))
    if len(centers) < 2:
        return [mask]
    ys, xs = np.nonzero(mask)
    cost = np.stack([np.hypot(ys - c[0], xs - c[1]) - r for c, r in centers])
    owner = cost.argmin(0)
    parts = []
    for k in range(len(centers)):
        part = np.zeros_like(mask)
        part[ys[owner == k], xs[owner == k]] = True
        parts.append(part)
    return parts


def _crop(mask: np.ndarray) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    return mask[y0:y1, x0:x1], (float(x0), float(y0), float(x1), float(y1))


def _objects(mask: np.ndarray, color: str, min_area: float) -> list[Detection]:
    """One component → one object, or several when splitting it fits templates better."""
    crop, box = _crop(mask)
    cls, fit = classify_shape(crop)
    whole = [Detection(cls, color, box, int(crop.sum()), fit)]
    if fit + SPLIT_GAIN >= 1.0:  # parts fit at most 1.0: a split could never win
        return whole
    parts = [p for p in split_touching(mask) if p.sum() >= min_area]
    if len(parts) < 2:
        return whole
    split = []
    for part in parts:
        crop, box = _crop(part)
        part_cls, part_fit = classify_shape(crop)
        split.append(Detection(part_cls, color, box, int(crop.sum()), part_fit))
    return split if np.mean([o.fit for o in split]) > fit + SPLIT_GAIN else whole


def detect(img: np.ndarray) -> list[Detection]:
    """Objects in a uint8 ``[H, W, 3]`` image, largest first."""
    if img.ndim != 3 or img.shape[-1] != 3 or img.dtype != np.uint8:
        raise ValueError(f"expected a uint8 [H, W, 3] image, got {img.dtype} {img.shape}")
    labels = _hue_labels(img)
    min_area = max(3, MIN_AREA * img.shape[0] * img.shape[1])
    found = []
    for ci, color in enumerate(COLORS):
        comp, n = ndimage.label(labels == ci)
        for i in range(1, n + 1):
            mask = ndimage.binary_fill_holes(comp == i)
            if mask.sum() >= min_area:
                found += _objects(mask, color, min_area)
    return sorted(found, key=lambda d: -d.area)


def evaluate(objects: list[Detection], record: dict[str, Any]) -> Verdict:
    """GenEval's decision for detected objects, with per-requirement partial credit."""
    by_class = {c: [o for o in objects if o.cls == c] for c in CLASSES}
    checks: dict[str, float] = {}
    reasons: list[str] = []
    matched: list[list[Detection] | None] = []
    for i, req in enumerate(record["include"]):
        cls, count, color = req["class"], req.get("count", 1), req.get("color")
        cands = sorted(by_class[cls], key=lambda o: o.color != color) if color else by_class[cls]
        found = cands[:count]
        ok = len(found) == count
        checks[f"include[{i}].count"] = len(found) / count
        if not ok:
            reasons.append(f"expected {cls}>={count}, found {len(found)}")
        if color:
            n_col = sum(o.color == color for o in found)
            checks[f"include[{i}].color"] = n_col / count
            if ok and n_col < count:
                ok = False
                reasons.append(f"expected {color} {cls}>={count}, found {n_col} {color}")
        if "position" in req:
            rel, target = req["position"]
            group = matched[target]
            pairs = [(o, t) for o in found for t in (group or [])]
            good = sum(rel in relative_position(o.box, t.box)[0] for o, t in pairs)
            checks[f"include[{i}].position"] = good / len(pairs) if pairs else 0.0
            if ok and (not pairs or good < len(pairs)):
                ok = False
                reasons.append(f"no target for {cls} to be {rel}" if not pairs
                               else f"expected {cls} {rel} target")
        matched.append(found if ok else None)
    for j, req in enumerate(record.get("exclude", [])):
        n = len(by_class[req["class"]])
        checks[f"exclude[{j}]"] = float(n < req["count"])
        if n >= req["count"]:
            reasons.append(f"expected {req['class']}<{req['count']}, found {n}")
    correct = not reasons
    return Verdict(correct, float(np.mean(list(checks.values()))), checks, "; ".join(reasons), objects)


def verify(img: np.ndarray, record: dict[str, Any]) -> Verdict:
    """Is ``img`` (uint8 ``[H, W, 3]``) a correct picture of ``record``?"""
    return evaluate(detect(img), validate(record))
