"""Image I/O and the one canonical format: float tensors ``[B, 3, H, W]`` in [0, 1]."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

MAX_PIXELS = 64_000_000  # refuse decompression bombs


class ImageError(ValueError):
    """An image that cannot be read or converted; the message names the file."""


def load_image(source: str | Path | bytes) -> np.ndarray:
    """Read any PIL-readable file (or its bytes) as uint8 RGB ``[H, W, 3]`` (palette, alpha,
    16-bit, CMYK and greyscale are converted; transparency is composited on white)."""
    data = isinstance(source, (bytes, bytearray))
    name = "image bytes" if data else Path(source)
    try:
        with Image.open(io.BytesIO(source) if data else name) as im:
            if im.width * im.height > MAX_PIXELS:
                raise ImageError(f"{name}: {im.width}x{im.height} exceeds {MAX_PIXELS} pixels")
            im.load()
            return pil_to_array(im)
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(f"{name}: no such file") from None
    except Image.DecompressionBombError as e:  # PIL's own limit, met while reading the header
        raise ImageError(f"{name}: refused as a decompression bomb ({e})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"{name}: not a readable image ({e})") from None


def pil_to_array(im: Image.Image) -> np.ndarray:
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.float64)
        arr = (arr / max(1.0, arr.max()) * 255).round().astype(np.uint8)
        im = Image.fromarray(arr, mode="L")
    if im.mode == "P":
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA"):
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, im.convert("RGBA"))
    return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


def to_tensor(images: Iterable) -> torch.Tensor:
    """Stack paths, PIL images or uint8 ``[H, W, 3]`` arrays (all one size) into ``[B,3,H,W]``."""
    arrays = []
    for im in images:
        if isinstance(im, (str, Path)):
            im = load_image(im)
        elif isinstance(im, Image.Image):
            im = pil_to_array(im)
        arr = np.asarray(im)
        if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[-1] != 3:
            raise ImageError(f"expected uint8 [H, W, 3], got {arr.dtype} {arr.shape}")
        arrays.append(arr)
    if not arrays:
        raise ImageError("no images given")
    if len({a.shape for a in arrays}) > 1:
        raise ImageError(f"images differ in size: {sorted({a.shape for a in arrays})}")
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """``[B,3,H,W]`` in [0, 1] → uint8 ``[B, H, W, 3]``."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ImageError(f"expected [B, 3, H, W], got {tuple(images.shape)}")
    arr = images.detach().float().clamp(0, 1).mul(255).round().byte()
    return arr.permute(0, 2, 3, 1).cpu().numpy()


def save_png(image: np.ndarray, path: str | Path, scale: int = 1) -> None:
    """Write uint8 ``[H, W, 3]`` as a PNG, atomically (missing folders are created)."""
    from .utils import atomic_path

    im = Image.fromarray(image)
    if scale > 1:
        im = im.resize((im.width * scale, im.height * scale), Image.NEAREST)
    with atomic_path(path, sync=False) as tmp:
        im.save(tmp, format="PNG")


def grid(images: np.ndarray, cols: int) -> np.ndarray:
    """Tile uint8 ``[B, H, W, 3]`` into one image, ``cols`` per row (white padding)."""
    b, h, w, _ = images.shape
    rows = -(-b // cols)
    out = np.full((rows * (h + 2), cols * (w + 2), 3), 255, np.uint8)
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        out[r * (h + 2) + 1: r * (h + 2) + 1 + h, c * (w + 2) + 1: c * (w + 2) + 1 + w] = im
    return out


def group_diversity(images: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Mean pairwise RMS distance between the images of a group (the hacking monitor's
    collapse signal), averaged over groups with at least two images here."""
    vals = []
    for g in groups.unique():
        x = images[groups == g].flatten(1).float()
        if len(x) > 1:
            dist = torch.cdist(x, x) / math.sqrt(x.shape[1])
            vals.append(dist.sum() / (len(x) * (len(x) - 1)))
    return torch.stack(vals).mean() if vals else images.new_zeros(())


HUES = ("red", "orange", "yellow", "chartreuse", "green", "spring green", "cyan", "azure", "blue", "violet",
        "magenta", "rose")  # the hue bins of ``hue_histogram``, centred every 30° from red at 0°


def hue_histogram(images: torch.Tensor, min_saturation: float = 0.3, min_value: float = 0.2) -> torch.Tensor:
    """Counts ``[12]`` (float64) of a batch's coloured pixels (HSV saturation and value at least
    the given) by hue, each pixel shared linearly between the two nearest bin centres of
    ``HUES`` — so a slight tint moves the counts slightly, with no bin edge to jump. Normalised
    it is the batch's palette: the hacking monitor's drift signal, which every group turning
    red moves while the within-group diversity holds."""
    x = images.detach().float().clamp(0, 1)
    hi, lo = x.max(1).values, x.min(1).values
    chroma = (hi - lo).clamp_min(1e-8)
    r, g, b = x.unbind(1)
    hue = torch.where(hi == r, ((g - b) / chroma) % 6,
                      torch.where(hi == g, (b - r) / chroma + 2, (r - g) / chroma + 4)) / 6  # [0, 1)
    keep = (hi - lo >= min_saturation * hi) & (hi >= min_value) & (hi > lo)
    n = len(HUES)
    pos = hue[keep].double() * n  # bin centres at whole numbers
    below = pos.floor()
    frac = pos - below
    below = below.long() % n
    return (torch.bincount(below, weights=1 - frac, minlength=n)
            + torch.bincount((below + 1) % n, weights=frac, minlength=n))


def hue_fractions(counts: torch.Tensor) -> list[float] | None:
    """``hue_histogram`` counts as fractions (4 decimals), or None where no pixel is coloured."""
    total = float(counts.sum())
    return [round(float(c) / total, 4) for c in counts] if total > 0 else None
