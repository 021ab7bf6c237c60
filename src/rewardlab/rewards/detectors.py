"""Offline detector rewards whose models ship inside their wheels."""

from __future__ import annotations

import torch

from ..images import to_uint8
from .base import Reward, RewardOutput
from .registry import register


class FaceReward(Reward):
    """Is there a face? OpenCV's Haar cascade (bundled with ``opencv-python-headless<5``).
    Score: 1 if at least one face is found, else 0; sub-scores: ``count`` and
    ``largest_area`` (fraction of the image covered by the largest face)."""

    name = "face"

    def __init__(self, cascade: str = "haarcascade_frontalface_default.xml", scale_factor: float = 1.1,
                 min_neighbors: int = 4, min_size: float = 0.05):
        try:
            import cv2
        except ImportError:
            raise ImportError("the face reward needs OpenCV 4: pip install 'opencv-python-headless<5'") from None
        self.cv2 = cv2
        self.detector = cv2.CascadeClassifier(cv2.data.haarcascades + cascade)
        if self.detector.empty():
            raise FileNotFoundError(f"OpenCV has no cascade {cascade!r} (OpenCV 5 wheels ship none; use 4.x)")
        self.scale_factor, self.min_neighbors, self.min_size = scale_factor, min_neighbors, min_size

    def score(self, images, prompts, metadata):
        counts, areas = [], []
        for img in to_uint8(images):
            gray = self.cv2.cvtColor(img, self.cv2.COLOR_RGB2GRAY)
            side = max(1, int(self.min_size * min(gray.shape)))
            faces = self.detector.detectMultiScale(gray, self.scale_factor, self.min_neighbors,
                                                   minSize=(side, side))
            counts.append(len(faces))
            areas.append(max((w * h for _, _, w, h in faces), default=0) / gray.size)
        count = torch.tensor(counts, dtype=torch.float32)
        return RewardOutput((count > 0).float(), {"count": count, "largest_area": torch.tensor(areas)})


register("face", "face present (OpenCV Haar cascade, offline); sub-scores count and largest_area")(FaceReward)


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions), O(len(a)·len(b))."""
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def ocr_score(found: str, target: str) -> float:
    """Flow-GRPO's OCR reward: spaces and case ignored; 1 if the target appears, else
    ``1 - min(edit distance, len(target)) / len(target)``."""
    found, target = found.replace(" ", "").lower(), target.replace(" ", "").lower()
    if target in found:
        return 1.0
    return 1.0 - min(levenshtein(found, target), len(target)) / len(target)


def quoted_text(prompt: str) -> str | None:
    import re

    m = re.search(r'"([^"]+)"|“([^”]+)”|\'([^\']+)\'', prompt)
    return next((g for g in m.groups() if g), None) if m else None


class OCRReward(Reward):
    """Does the prompt's quoted text appear in the image? RapidOCR (ONNX models bundled in
    ``rapidocr-onnxruntime``) reads the image; the score is ``ocr_score``. Prompts without
    quoted text are marked invalid."""

    name = "ocr"

    def __init__(self):
        try:
            from rapidocr_onnxruntime import RapidOCR
        except ImportError:
            raise ImportError("the ocr reward needs rapidocr: `make install` installs it "
                              "(pip install --no-deps rapidocr-onnxruntime plus the [ocr] extra)") from None
        self.engine = RapidOCR()

    def score(self, images, prompts, metadata):
        scores, valid, texts = [], [], []
        for img, prompt in zip(to_uint8(images), prompts):
            target = quoted_text(prompt)
            result, _ = self.engine(img)
            text = " ".join(r[1] for r in result or [])
            texts.append(text)
            scores.append(ocr_score(text, target) if target else 0.0)
            valid.append(target is not None)
        return RewardOutput(torch.tensor(scores), {}, torch.tensor(valid))


register("ocr", 'OCR (RapidOCR, offline): edit-distance match of the prompt\'s "quoted text" (Flow-GRPO)')(OCRReward)
