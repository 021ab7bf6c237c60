"""The exact ShapeWorld verifier: GenEval's decision rule on objects found from pixels alone,
counted only in a clean ShapeWorld scene.

Detection (classical image analysis, nothing but the pixels):

1. the background is the median colour of the image's border; a pixel is *foreground* when it is far
   from it (``FG_DISTANCE``) and not grey; its colour is the palette colour of nearest hue;
2. each colour's connected components (holes filled, specks under ``MIN_AREA`` of the
   image dropped) are objects;
3. an object's class is the ideal shape template, drawn inside the object's own bounding
   box, with the highest IoU against its mask — robust to the soft corners of generated
   images where fill-ratio rules are not;
4. a blob that fits templates better as several objects (touching same-coloured shapes,
   common in generated images) is split at its distance-transform peaks.

Cleanliness (``clean.py``): an object counts only when it is a clean shape, and the image
must be a clean scene; a picture that is not gets 0 (and partial credit 0) with the reason.

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

from .clean import SOLID_MIN, Detection, Pixels, blob_flaw, clutter, crop_box, scene_flaw, shape_flaw
from .records import CLASSES, COLORS, validate
from .render import PALETTE, relative_position, shape_mask

FG_DISTANCE = 0.3  # RGB distance from the background colour, on the [0, 1] scale
CHROMA_MIN = 0.08  # below this a pixel has no usable hue (grey)
MIN_AREA = 0.005  # smallest object, as a fraction of the image area
SPLIT_GAIN = 0.05  # a blob is split into touching objects when their mean fit is this much better
HUES = {c: colorsys.rgb_to_hsv(*(np.array(PALETTE[c]) / 255))[0] for c in COLORS}


@dataclass
class Scene:
    objects: list[Detection]  # clean shapes, largest first
    rejected: list[Detection]  # objects with a flaw
    clutter: float  # fraction of the image off-background that no clean object explains
    flaw: str  # why the image is not a clean ShapeWorld scene; empty when it is


@dataclass
class Verdict:
    correct: bool
    score: float  # mean partial credit over checks, in [0, 1]
    checks: dict[str, float] = field(default_factory=dict)
    reason: str = ""
    objects: list[Detection] = field(default_factory=list)


def _pixels(img: np.ndarray) -> Pixels:
    """The image on [0, 1], its background colour (the median of the outermost pixels:
    scenes keep a margin, and objects may cover more than half of the image), each pixel's
    distance from it and palette index (-1 for background).

    A pixel is foreground when its RGB distance from the background exceeds
    ``FG_DISTANCE`` — luminance keeps full resolution under JPEG — and it has some
    chroma; its colour is the palette colour of nearest hue."""
    x = img.astype(np.float32) / 255
    frame = np.concatenate([x[0], x[-1], x[1:-1, 0], x[1:-1, -1]])
    bg = np.median(frame, axis=0)
    mx, mn = x.max(-1), x.min(-1)
    chroma = mx - mn
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    safe = np.where(chroma > 0, chroma, 1)
    hue = np.where(mx == r, ((g - b) / safe) % 6, np.where(mx == g, (b - r) / safe + 2, (r - g) / safe + 4)) / 6
    centers = np.array([HUES[c] for c in COLORS])
    dist = np.abs(hue[..., None] - centers)
    dist = np.minimum(dist, 1 - dist)
    off = np.linalg.norm(x - bg, axis=-1)
    fg = (off > FG_DISTANCE) & (chroma > CHROMA_MIN)
    return Pixels(x, bg, off, np.where(fg, dist.argmin(-1), -1))


COVERAGE = 0.4  # a template pixel is "in" when the ideal shape covers this much of it
OFFSETS = (0.0, 0.5, 1.0, 1.5, 2.0)  # box sides move by up to one pixel, in half pixels


@functools.lru_cache(maxsize=4096)
def _templates(cls: str, w: int, h: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boolean templates ``[P, h+2, w+2]`` of ``cls`` in every box whose sides sit within
    one pixel (half-pixel steps) of a ``w`` x ``h`` box padded by one pixel, rasterised
    like a render: covered by at least ``COVERAGE``; also flattened as float32 ``[P, N]``
    (intersections become one matrix-vector product) and their pixel counts."""
    k = 4
    ys, xs = (np.mgrid[0:(h + 2) * k, 0:(w + 2) * k] + 0.5) / k
    out = []
    for x0, y0, dx1, dy1 in itertools.product(OFFSETS, OFFSETS, OFFSETS, OFFSETS):
        if w + dx1 - x0 < 1 or h + dy1 - y0 < 1:  # degenerate box for a 1-pixel-thin mask
            out.append(np.zeros((h + 2, w + 2), bool))
            continue
        cover = shape_mask(cls, xs, ys, (x0, y0, w + dx1, h + dy1)).reshape(h + 2, k, w + 2, k)
        out.append(cover.mean((1, 3)) >= COVERAGE)
    tmpl = np.stack(out)
    return tmpl, tmpl.reshape(len(tmpl), -1).astype(np.float32), tmpl.sum((1, 2))


def fit_template(mask: np.ndarray) -> tuple[str, float, np.ndarray]:
    """Best-matching class for a boolean object mask cropped to its bounding box: the
    highest IoU over each class's templates (see ``_templates``), so a noise spur, a
    lost corner or a soft edge does not decide the class. Returns the class, the IoU and
    the template (padded by one pixel, like ``np.pad(mask, 1)``). (Soft, anti-aliased IoU
    was tried too: slower and less accurate on JPEG'd 32-pixel renders.)"""
    h, w = mask.shape
    padded = np.pad(mask, 1)
    area = padded.sum()
    best = ("circle", -1.0, padded)
    for cls in CLASSES:
        tmpl, flat, sizes = _templates(cls, w, h)
        inter = flat @ padded.ravel().astype(np.float32)
        ious = inter / np.maximum(1, sizes + area - inter)
        k = int(ious.argmax())
        if ious[k] > best[1]:
            best = (cls, float(ious[k]), tmpl[k])
    return best


def classify_shape(mask: np.ndarray) -> tuple[str, float]:
    """``fit_template`` without the template: (class, IoU)."""
    return fit_template(mask)[:2]


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


def _detection(mask: np.ndarray, color: str) -> Detection:
    crop, box = crop_box(mask)
    cls, fit, template = fit_template(crop)
    return Detection(cls, color, box, int(crop.sum()), fit, mask=mask, template=template)


def _objects(mask: np.ndarray, color: str, min_area: float) -> list[Detection]:
    """One component → one object, or several when splitting it fits templates better."""
    whole = [_detection(mask, color)]
    if whole[0].fit + SPLIT_GAIN >= 1.0:  # parts fit at most 1.0: a split could never win
        return whole
    parts = [p for p in split_touching(mask) if p.sum() >= min_area]
    if len(parts) < 2:
        return whole
    split = [_detection(p, color) for p in parts]
    for part in split:
        part.split = True
    return split if np.mean([o.fit for o in split]) > whole[0].fit + SPLIT_GAIN else whole


def analyse(img: np.ndarray) -> Scene:
    """Objects in a uint8 ``[H, W, 3]`` image, and whether it is a clean scene."""
    if img.ndim != 3 or img.shape[-1] != 3 or img.dtype != np.uint8:
        raise ValueError(f"expected a uint8 [H, W, 3] image, got {img.dtype} {img.shape}")
    px = _pixels(img)
    min_area = max(3, MIN_AREA * img.shape[0] * img.shape[1])
    clean, rejected = [], []
    for ci, color in enumerate(COLORS):
        own = px.labels == ci
        if not own.any():
            continue
        comp, n = ndimage.label(own)
        sizes = np.bincount(comp.ravel())
        for i, box in enumerate(ndimage.find_objects(comp), 1):
            if sizes[i] < SOLID_MIN * min_area:  # filled, it would be too small or not solid
                continue
            mask = np.zeros_like(own)
            mask[box] = ndimage.binary_fill_holes(comp[box] == i)
            if mask.sum() < min_area:
                continue
            blob = blob_flaw(mask, own, px)
            if blob:  # no shape can come out of it: skip the template fits (noise is full of these)
                rejected.append(Detection("blob", color, crop_box(mask)[1], int(mask.sum()), 0.0, blob, mask=mask))
                continue
            for obj in _objects(mask, color, min_area):
                obj.flaw = shape_flaw(obj, px)
                (rejected if obj.flaw else clean).append(obj)
    share = clutter(px, clean)
    return Scene(sorted(clean, key=lambda d: -d.area), rejected, share, scene_flaw(px.bg, share, clean, rejected))


def detect(img: np.ndarray) -> list[Detection]:
    """The clean objects in a uint8 ``[H, W, 3]`` image, largest first."""
    return analyse(img).objects


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
    """Is ``img`` (uint8 ``[H, W, 3]``) a correct picture of ``record``? A picture that is
    not a clean scene scores 0 on every check, with the reason."""
    scene = analyse(img)
    verdict = evaluate(scene.objects, validate(record))
    if scene.flaw:
        return Verdict(False, 0.0, dict.fromkeys(verdict.checks, 0.0), scene.flaw, scene.objects)
    return verdict
