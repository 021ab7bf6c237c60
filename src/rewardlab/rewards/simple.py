"""Verifiable and offline rewards that need no weights."""

from __future__ import annotations

import io
from functools import partial

import torch
from PIL import Image

from ..images import to_uint8
from .base import Reward, RewardOutput
from .registry import register


class ShapeWorldReward(Reward):
    """The exact GenEval verifier: ``binary`` (correct or not) or ``partial`` (mean of the
    per-requirement credits). Records come from ``metadata`` or are parsed from prompts;
    sub-scores are the binary verdict and the partial credit; ``reasons`` say which
    requirement failed (or why a prompt cannot be read)."""

    name = "shapeworld"

    def __init__(self, mode: str = "binary"):
        if mode not in ("binary", "partial"):
            raise ValueError(f"mode must be 'binary' or 'partial', got {mode!r}")
        self.mode = mode

    def score(self, images, prompts, metadata):
        from ..world.records import RecordError, parse_prompt
        from ..world.verify import verify

        rows, reasons = [], []  # (correct, partial credit, valid) per image; why it is wrong or invalid
        for i, img in enumerate(to_uint8(images)):
            try:
                v = verify(img, metadata[i] if metadata is not None else parse_prompt(prompts[i]))
            except RecordError as e:  # a prompt ShapeWorld cannot read: not scorable
                rows.append((0.0, 0.0, False))
                reasons.append(str(e))
                continue
            rows.append((float(v.correct), v.score, True))
            reasons.append(v.reason)
        c, p, valid = (torch.tensor(col) for col in zip(*rows))
        return RewardOutput(c if self.mode == "binary" else p, {"correct": c, "partial": p}, valid, reasons)


class JpegSize(Reward):
    """DDPO's JPEG (in)compressibility: the file size in kB at ``quality`` (negated for
    compressibility, so higher is always better)."""

    def __init__(self, compressible: bool = True, quality: int = 95):
        self.sign = -1.0 if compressible else 1.0
        self.quality = quality
        self.name = "jpeg_compressibility" if compressible else "jpeg_incompressibility"

    def score(self, images, prompts, metadata):
        sizes = []
        for img in to_uint8(images):
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="JPEG", quality=self.quality)
            sizes.append(buf.tell() / 1000)
        kb = torch.tensor(sizes)
        return RewardOutput(self.sign * kb, {"jpeg_kb": kb})


register("shapeworld", "ShapeWorld's exact GenEval verifier (mode=binary|partial); not differentiable")(
    ShapeWorldReward)
register("jpeg_compressibility", "DDPO: minus the JPEG size in kB (smaller files score higher)")(
    partial(JpegSize, compressible=True))
register("jpeg_incompressibility", "DDPO: the JPEG size in kB (larger files score higher)")(
    partial(JpegSize, compressible=False))

__all__ = ["ShapeWorldReward", "JpegSize"]
