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
