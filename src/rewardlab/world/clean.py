"""What a clean ShapeWorld scene is — the rules that keep the verifier from being fooled.

The RL recipes optimise the verifier, so an object counts only when it is a *clean shape*:
inside the frame, template IoU at least ``FIT_MIN`` (``SPLIT_FIT_MIN`` for a part cut from
a blob), the class's aspect ratio, not elongated in any direction, not tiny, solid
(filling holes adds almost nothing), without dents or bulges thicker than a pixel,
single-coloured and sharp-edged. The image is a *scene* when its background is plain
light grey and the pixels off that background which no clean object explains — clutter,
rejected objects, halos, noise — stay under ``CLUTTER_MAX`` of the image.

Each threshold sits outside what clean, corrupted (noise + JPEG) and generated images
show, and every attack kind in ``adversarial.py`` is checked against them
(``benchmarks/verifier_robustness.py``). Detection and the GenEval decision are in
``verify.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from .records import COLORS
from .render import EXTENT

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
class Pixels:
    x: np.ndarray  # the image on [0, 1], [H, W, 3]
    bg: np.ndarray  # background colour (the median of the outermost pixels)
    dist: np.ndarray  # per-pixel RGB distance from the background
    labels: np.ndarray  # per-pixel palette index, -1 for background


def crop_box(mask: np.ndarray) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    return mask[y0:y1, x0:x1], (float(x0), float(y0), float(x1), float(y1))


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
    crop = obj.mask[int(y0):int(y1), int(x0):int(x1)]  # the mask in its box, as the template was fitted
    if ndimage.binary_erosion(obj.template ^ np.pad(crop, 1), BLOCK).sum() > DENT_MAX * obj.area:
        return f"{obj.cls} dented or bulging"
    inner = ndimage.binary_erosion(mask, CROSS)
    if inner.sum() >= 4 and local.x[inner].std(0).max() > COLOR_STD_MAX:
        return f"{obj.cls} not single-coloured"
    if _softness(mask, inner, local) > SOFT_MAX or _halo(mask, inner, local) > HALO_MAX:
        return f"{obj.cls} blurred"
    return ""


def blob_flaw(mask: np.ndarray, own: np.ndarray, px: Pixels) -> str:
    """The flaws a whole component shows before any template is fitted: too small for any
    part of it to be a shape, or too hollow for any part to be solid."""
    x0, y0, x1, y1 = crop_box(mask)[1]
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


def clutter(px: Pixels, clean: list[Detection]) -> float:
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


def scene_flaw(bg: np.ndarray, clutter: float, clean: list[Detection], rejected: list[Detection]) -> str:
    if bg.max() - bg.min() > BG_CHROMA_MAX or bg.max() < BG_VALUE_MIN:
        return "not a ShapeWorld scene: the background is not plain light grey"
    if not clean and (rejected or clutter > CLUTTER_MAX):
        worst = max(rejected, key=lambda o: o.area, default=None)  # the largest says most
        return "no clean object" + (f": {worst.color} {worst.flaw}" if worst else "")
    if clutter > CLUTTER_MAX:
        return f"clutter: {clutter:.0%} of the image is off the background and no clean object explains it"
    return ""
