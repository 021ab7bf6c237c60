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

Cleanliness (what keeps noise, scribbles and blobs from passing — ``adversarial.py``
holds the attacks): an object counts only when it is a *clean shape* — inside the frame,
template IoU at least ``FIT_MIN`` (``SPLIT_FIT_MIN`` for a part cut from a blob), the
class's aspect ratio, not elongated in any direction, not tiny, solid (filling holes
adds almost nothing), without dents or bulges thicker than a pixel, single-coloured and
sharp-edged. The image is a *scene* when its background is plain light grey and the
pixels off that background which no clean object explains — clutter, rejected objects,
halos, noise — stay under ``CLUTTER_MAX`` of the image. A non-scene gets 0 (and partial
credit 0) with the reason. The thresholds sit outside what clean, corrupted (noise +
JPEG) and generated images show and were checked against every attack kind
(``benchmarks/verifier_robustness.py``).

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
from .render import EXTENT, PALETTE, relative_position, shape_mask

FG_DISTANCE = 0.3  # RGB distance from the background colour, on the [0, 1] scale
CHROMA_MIN = 0.08  # below this a pixel has no usable hue (grey)
MIN_AREA = 0.005  # smallest object, as a fraction of the image area
SPLIT_GAIN = 0.05  # a blob is split into touching objects when their mean fit is this much better
# a clean shape:
FIT_MIN = 0.85  # template IoU
SPLIT_FIT_MIN = 0.90  # template IoU of a shape cut from a blob (fused twins fit worse)
DENT_MAX = 0.02  # template mismatch in 2x2 blocks (dents, bulges, fused twins), per object pixel
ASPECT_TOL = 0.25  # |log(width/height) - log(the class's width/height)|, plus 1/(shorter side)
ELONG_MAX = 1.25  # see ``_elongation``: diagonal capsules of fused twins
BORDER_CUT = 0.5  # share of a box side lying on the image's outermost pixels (an apex may touch)
MIN_SIDE = 0.12  # shorter box side, as a fraction of the image side
SOLID_MIN = 0.95  # fraction of the filled mask that has the object's colour
COLOR_STD_MAX = 0.15  # per-channel std of the object's interior, [0, 1] scale
SOFT_MAX, HALO_MAX = 1.45, 0.08  # see ``_softness`` and ``_halo``: blurred edges
# a clean scene:
BG_CHROMA_MAX, BG_VALUE_MIN = 0.12, 0.75  # ShapeWorld's background is light grey
OFF_DISTANCE = 0.25  # a pixel this far from the background is off it...
OFF_SMOOTH = 0.10  # ...as is one whose 3x3 neighbourhood mean is this far (halos, blur)
EXPLAIN_PX = 1  # a clean object explains the off pixels up to this many pixels around it
CLUTTER_MAX = 0.015  # fraction of the image that may be off-background and unexplained
LUMA = np.array([0.299, 0.587, 0.114])
CROSS, BLOCK = ndimage.generate_binary_structure(2, 1), np.ones((2, 2), bool)
HUES = {c: colorsys.rgb_to_hsv(*(np.array(PALETTE[c]) / 255))[0] for c in COLORS}


@dataclass
class Detection:
    cls: str
    color: str
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels
    area: int
    fit: float  # IoU of the mask with the chosen template
    flaw: str = ""  # why this is not a clean shape; empty when it is
    split: bool = False  # cut from a blob of touching shapes
    mask: np.ndarray | None = field(default=None, repr=False, compare=False)  # full-image mask
    template: np.ndarray | None = field(default=None, repr=False, compare=False)  # best fit, box + 1 px


@dataclass
class Scene:
    objects: list[Detection]  # clean shapes, largest first
    rejected: list[Detection]  # objects with a flaw
    clutter: float  # fraction of the image off-background that no clean object explains
    flaw: str  # why the image is not a clean ShapeWorld scene; empty when it is


@dataclass
class Pixels:
    x: np.ndarray  # the image on [0, 1], [H, W, 3]
    bg: np.ndarray  # background colour (the median of the outermost pixels)
    dist: np.ndarray  # per-pixel RGB distance from the background
    labels: np.ndarray  # per-pixel palette index, -1 for background


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


def _crop(mask: np.ndarray) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    return mask[y0:y1, x0:x1], (float(x0), float(y0), float(x1), float(y1))


def _detection(mask: np.ndarray, color: str) -> Detection:
    crop, box = _crop(mask)
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


def shape_flaw(obj: Detection, px: Pixels) -> str:
    """Why ``obj`` is not a clean ShapeWorld shape ("" when it is)."""
    x0, y0, x1, y1 = obj.box
    w, h = x1 - x0, y1 - y0
    ex, ey = EXTENT[obj.cls]
    if _cut_by_border(obj, px.dist):
        return f"{obj.cls} cut by the image border"
    if obj.fit < (SPLIT_FIT_MIN if obj.split else FIT_MIN):
        return f"poor {obj.cls} fit (IoU {obj.fit:.2f})"
    if abs(np.log(w / h) - np.log(ex / ey)) > ASPECT_TOL + 1 / min(w, h):  # ±1 px on a small box
        return f"{obj.cls} of wrong aspect {w:.0f}x{h:.0f}"
    if min(w, h) < MIN_SIDE * min(px.dist.shape):
        return f"{obj.cls} too small ({w:.0f}x{h:.0f} px)"
    near = np.s_[max(0, int(y0) - 6):int(y1) + 6, max(0, int(x0) - 6):int(x1) + 6]  # what the checks below see
    mask, local = obj.mask[near], Pixels(px.x[near], px.bg, px.dist[near], px.labels[near])
    if _elongation(mask) > ELONG_MAX:
        return f"{obj.cls} elongated"
    if (mask & (local.labels == COLORS.index(obj.color))).sum() < SOLID_MIN * obj.area:
        return f"{obj.cls} not solid"
    crop, _ = _crop(mask)
    if ndimage.binary_erosion(obj.template ^ np.pad(crop, 1), BLOCK).sum() > DENT_MAX * obj.area:
        return f"{obj.cls} dented or bulging"
    inner = ndimage.binary_erosion(mask, CROSS)
    if inner.sum() >= 4 and local.x[inner].std(0).max() > COLOR_STD_MAX:
        return f"{obj.cls} not single-coloured"
    if _softness(mask, inner, local) > SOFT_MAX or _halo(mask, inner, local) > HALO_MAX:
        return f"{obj.cls} blurred"
    return ""


def _blob_flaw(mask: np.ndarray, own: np.ndarray, px: Pixels) -> str:
    """The flaws a whole component shows before any template is fitted: too small for any
    part of it to be a shape, or too hollow for any part to be solid."""
    x0, y0, x1, y1 = _crop(mask)[1]
    if max(x1 - x0, y1 - y0) < MIN_SIDE * min(px.dist.shape):
        return f"blob too small ({x1 - x0:.0f}x{y1 - y0:.0f} px)"
    if (mask & own).sum() < SOLID_MIN * mask.sum():
        return "blob not solid"
    return ""


def _cut_by_border(obj: Detection, dist: np.ndarray) -> bool:
    """More than ``BORDER_CUT`` of a box side lies on the image's outermost pixels in full
    colour (a render keeps a margin; noise and JPEG may leave only faint pixels there)."""
    x0, y0, x1, y1 = obj.box
    strong = obj.mask & (dist > 0.6 * np.median(dist[obj.mask]))
    return (max(strong[0].sum(), strong[-1].sum()) > BORDER_CUT * (x1 - x0)
            or max(strong[:, 0].sum(), strong[:, -1].sum()) > BORDER_CUT * (y1 - y0))


def _elongation(mask: np.ndarray) -> float:
    """sqrt of the ratio of the mask's principal second moments: about 1 for every class
    (a triangle 1.05), whatever its orientation — which the box's aspect ratio misses."""
    ys, xs = np.nonzero(mask)
    lo, hi = np.linalg.eigvalsh(np.cov(np.stack([xs, ys]).astype(float)))
    return float(np.sqrt(hi / max(lo, 1e-9)))


def _softness(mask: np.ndarray, inner: np.ndarray, px: Pixels) -> float:
    """Pixels of the object less than 70% of the way from the background to its colour (read
    at the 90th percentile of distance, so a blurred peak counts as the colour), per pixel
    of its one-pixel rim: about 0.5 for an anti-aliased edge, above 1 for a blurred one —
    but JPEG's half-resolution chroma softens a yellow edge almost as much (see ``_halo``)."""
    d = px.x[mask] - px.bg
    color = d[np.argsort(px.dist[mask])[int(0.9 * (len(d) - 1))]]
    alpha = d @ color / max(float(color @ color), 1e-6)
    return float((alpha < 0.7).sum() / max(1, (mask & ~inner).sum()))


def _halo(mask: np.ndarray, inner: np.ndarray, px: Pixels) -> float:
    """How far the background two pixels out from the object (and not next to another
    object) is on its way to the object's colour, in luminance, which JPEG keeps at full
    resolution: under 0.07 for a sharp, anti-aliased edge even after noise and JPEG (the
    first pixel out holds the anti-aliasing), about 0.1 and more for a blurred one."""
    luma = px.x @ LUMA
    contrast = np.median(luma[inner if inner.any() else mask]) - px.bg @ LUMA
    near = ndimage.binary_dilation(mask, CROSS)
    others = ndimage.binary_dilation((px.labels >= 0) & ~mask, CROSS, iterations=3)  # their own edges
    ring = ndimage.binary_dilation(near, CROSS) & ~near & ~others
    if not ring.any() or abs(contrast) < 1e-3:
        return 0.0
    return float(np.mean(luma[ring] - px.bg @ LUMA) / contrast)


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
            blob = _blob_flaw(mask, own, px)
            if blob:  # no shape can come out of it: skip the template fits (noise is full of these)
                rejected.append(Detection("blob", color, _crop(mask)[1], int(mask.sum()), 0.0, blob, mask=mask))
                continue
            for obj in _objects(mask, color, min_area):
                obj.flaw = shape_flaw(obj, px)
                (rejected if obj.flaw else clean).append(obj)
    clutter = _clutter(px, clean)
    return Scene(sorted(clean, key=lambda d: -d.area), rejected, clutter, _scene_flaw(px.bg, clutter, clean, rejected))


def _clutter(px: Pixels, clean: list[Detection]) -> float:
    """Fraction of the image off the background and not explained by a clean object: a
    pixel is off when it is ``OFF_DISTANCE`` from the background, or its 3x3 mean is
    ``OFF_SMOOTH`` from it (noise averages out there, blur and halos do not); objects
    explain off pixels up to ``EXPLAIN_PX`` around them (one more for the 3x3 mean)."""
    explained = np.zeros(px.dist.shape, bool)
    for obj in clean:
        explained |= obj.mask
    near = ndimage.binary_dilation(explained, CROSS, iterations=EXPLAIN_PX) if clean else explained
    nearer = ndimage.binary_dilation(near, CROSS) if clean else explained
    off = (px.dist > OFF_DISTANCE) & ~near
    mean3 = ndimage.uniform_filter(px.x, size=(3, 3, 1), mode="nearest")
    off |= (np.linalg.norm(mean3 - px.bg, axis=-1) > OFF_SMOOTH) & ~nearer
    return float(off.mean())


def _scene_flaw(bg: np.ndarray, clutter: float, clean: list[Detection], rejected: list[Detection]) -> str:
    if bg.max() - bg.min() > BG_CHROMA_MAX or bg.max() < BG_VALUE_MIN:
        return "not a ShapeWorld scene: the background is not plain light grey"
    if not clean and (rejected or clutter > CLUTTER_MAX):
        worst = max(rejected, key=lambda o: o.area, default=None)  # the largest says most
        return "no clean object" + (f": {worst.color} {worst.flaw}" if worst else "")
    if clutter > CLUTTER_MAX:
        return f"clutter: {clutter:.0%} of the image is off the background and no clean object explains it"
    return ""


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
