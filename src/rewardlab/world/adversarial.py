"""Images that are not ShapeWorld scenes, made to fool the verifier.

Each kind is a function ``(record, rng, size) -> uint8 [size, size, 3]``. Where it helps
the attack, the image is built on a *correct* layout of the record (right classes,
colours, counts and positions), so only the verifier's cleanliness rules stand between
it and a "correct" verdict. ``rewardlab world verify-renders --adversarial`` prints the
acceptance rate of each kind; the target is at most 1%.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
from scipy import ndimage

from .records import COLORS
from .render import PALETTE, Shape, downsample, pixel_grid, render, sample_scene, shape_mask

BG = 242.0


def _color(rng) -> np.ndarray:
    return np.array(PALETTE[COLORS[rng.integers(len(COLORS))]], np.float32)


def uniform_noise(record, rng, size):
    return rng.integers(0, 256, (size, size, 3), dtype=np.uint8)


def gaussian_noise(record, rng, size):
    mean = rng.uniform(0.3, 0.95, 3)
    x = rng.normal(mean, rng.uniform(0.15, 0.4), (size, size, 3))
    return (np.clip(x, 0, 1) * 255).round().astype(np.uint8)


def blurred_blobs(record, rng, size):
    """Soft Gaussian blobs of the right colours where a correct scene has its shapes."""
    xs, ys = pixel_grid(size)
    img = np.full((size, size, 3), BG, np.float32)
    for s in sample_scene(record, rng):
        sigma = s.size * rng.uniform(0.5, 0.9)
        w = np.exp(-((xs - s.cx) ** 2 + (ys - s.cy) ** 2) / (2 * sigma ** 2))[..., None]
        img = img * (1 - w) + np.array(PALETTE[s.color], np.float32) * w
    return np.clip(img.round(), 0, 255).astype(np.uint8)


def stripes(record, rng, size):
    xs, ys = pixel_grid(size)
    angle, width = rng.uniform(0, np.pi), rng.uniform(0.05, 0.25)
    band = np.floor((xs * np.cos(angle) + ys * np.sin(angle)) / width).astype(int)
    colors = np.stack([_color(rng) for _ in range(3)] + [np.full(3, BG, np.float32)])
    return colors[band % len(colors)].astype(np.uint8)


def _polyline(canvas, rng, color, points: int, width: float):
    n = canvas.shape[0]
    xs, ys = pixel_grid(n)
    pts = rng.uniform(0.1, 0.9, (points, 2))
    for (x0, y0), (x1, y1) in zip(pts[:-1], pts[1:]):
        d = np.array([x1 - x0, y1 - y0])
        t = np.clip(((xs - x0) * d[0] + (ys - y0) * d[1]) / max(d @ d, 1e-9), 0, 1)
        near = np.hypot(xs - x0 - t * d[0], ys - y0 - t * d[1]) <= width / 2
        canvas[near] = color


def scribbles(record, rng, size):
    """A few coloured random polylines, one to three pixels thick."""
    canvas = np.full((size * 4, size * 4, 3), BG, np.float32)
    for _ in range(rng.integers(2, 6)):
        _polyline(canvas, rng, _color(rng), int(rng.integers(3, 8)), rng.uniform(1, 3) / size)
    return downsample(canvas, size)


def outlines(record, rng, size):
    """The correct scene drawn as hollow outlines (filling holes would make them solid)."""
    xs, ys = pixel_grid(size * 4)
    canvas = np.full(xs.shape + (3,), BG, np.float32)
    for s in sample_scene(record, rng):
        inner = Shape(s.cls, s.color, s.cx, s.cy, s.size * rng.uniform(0.55, 0.75))
        ring = shape_mask(s.cls, xs, ys, s.box) & ~shape_mask(s.cls, xs, ys, inner.box)
        canvas[ring] = PALETTE[s.color]
    return downsample(canvas, size)


def confetti(record, rng, size):
    img = np.full((size, size, 3), BG, np.float32)
    n = int(rng.integers(size * size // 20, size * size // 5))
    for y, x in rng.integers(0, size - 1, (n, 2)):
        k = int(rng.integers(1, 3))
        img[y:y + k, x:x + k] = _color(rng)
    return img.astype(np.uint8)


def solid_fill(record, rng, size):
    return np.broadcast_to(_color(rng), (size, size, 3)).astype(np.uint8).copy()


def cluttered(record, rng, size):
    """A correct render with heavy clutter (scribbles and specks) added around it."""
    shapes = sample_scene(record, rng)
    canvas = np.repeat(np.repeat(render(shapes, size, rng).astype(np.float32), 4, 0), 4, 1)
    keep = canvas.copy()
    xs, ys = pixel_grid(size * 4)
    objects = np.zeros(xs.shape, bool)
    for s in shapes:
        objects |= shape_mask(s.cls, xs, ys, s.box)
    for _ in range(rng.integers(3, 7)):
        _polyline(canvas, rng, _color(rng), int(rng.integers(2, 5)), rng.uniform(1.5, 3) / size)
    canvas[objects] = keep[objects]  # clutter stays off the objects themselves
    return downsample(canvas, size)


def halves(record, rng, size):
    """The correct scene with every shape cut in half (a triangle only left/right)."""
    xs, ys = pixel_grid(size * 4)
    canvas = np.full(xs.shape + (3,), BG, np.float32)
    for s in sample_scene(record, rng):
        vertical = s.cls == "triangle" or rng.random() < 0.5
        coord, centre = (xs, s.cx) if vertical else (ys, s.cy)
        side = coord < centre if rng.random() < 0.5 else coord >= centre
        canvas[shape_mask(s.cls, xs, ys, s.box) & side] = PALETTE[s.color]
    return downsample(canvas, size)


def merged(record, rng, size):
    """Every shape of the correct scene fused with an overlapping twin into one blob."""
    xs, ys = pixel_grid(size * 4)
    canvas = np.full(xs.shape + (3,), BG, np.float32)
    for s in sample_scene(record, rng):
        angle, dist = rng.uniform(0, 2 * np.pi), s.size * rng.uniform(0.8, 1.3)
        twin = Shape(s.cls, s.color, s.cx + dist * np.cos(angle), s.cy + dist * np.sin(angle), s.size)
        canvas[shape_mask(s.cls, xs, ys, s.box) | shape_mask(s.cls, xs, ys, twin.box)] = PALETTE[s.color]
    return downsample(canvas, size)


def blurred_render(record, rng, size):
    """A correct render blurred until its edges are several pixels wide."""
    img = render(sample_scene(record, rng), size, rng).astype(np.float32)
    sigma = size * rng.uniform(0.05, 0.08)
    return np.clip(ndimage.gaussian_filter(img, (sigma, sigma, 0), mode="nearest").round(), 0, 255).astype(np.uint8)


KINDS: dict[str, Callable[[dict[str, Any], np.random.Generator, int], np.ndarray]] = {
    "uniform_noise": uniform_noise, "gaussian_noise": gaussian_noise, "blurred_blobs": blurred_blobs,
    "blurred_render": blurred_render, "stripes": stripes, "scribbles": scribbles, "outlines": outlines,
    "confetti": confetti, "solid_fill": solid_fill, "cluttered": cluttered, "halves": halves,
    "merged": merged,
}


def scenes(kind: str, tag: str, n: int, size: int = 32, seed: int = 0):
    """``n`` (image, record) pairs of one tag: ``clean`` renders, ``corrupted`` renders (noise
    σ=0.05 + JPEG q75) or an adversarial kind from ``KINDS``; fully determined by the seed."""
    from .prompts import compositions
    from .records import TAGS
    from .render import corrupt

    if kind not in ("clean", "corrupted", *KINDS):
        raise ValueError(f"unknown kind {kind!r}; expected clean, corrupted or one of {', '.join(KINDS)}")
    pool, rng = compositions(tag), np.random.default_rng([seed, TAGS.index(tag)])
    for _ in range(n):
        record = pool[rng.integers(len(pool))]
        if kind in ("clean", "corrupted"):
            img = render(sample_scene(record, rng), size, rng)
            yield (corrupt(img, rng) if kind == "corrupted" else img), record
        else:
            yield KINDS[kind](record, rng, size), record


def accepted(kind: str, tag: str, n: int, size: int = 32, seed: int = 0) -> float:
    """Share of ``scenes(kind, tag, n, size, seed)`` the verifier judges correct: its accuracy
    on ``clean`` and ``corrupted`` renders, what it wrongly accepts of an attack kind."""
    from .verify import verify

    return sum(verify(img, rec).correct for img, rec in scenes(kind, tag, n, size, seed)) / n
