"""rewardlab's torch BRISQUE against known distortions and against the `brisque`
package (0.2.0, libsvm).

The reference comparison needs the reference beside rewardlab (it compiles libsvm; numpy 2.4 needs its
features flattened, done here):

    python -m venv /tmp/bq && /tmp/bq/bin/pip install torch==2.13.0 safetensors numpy scipy \\
        scikit-image requests opencv-python-headless==4.14.0.94 pillow
    /tmp/bq/bin/pip install --no-deps brisque==0.2.0 libsvm-official
    PYTHONPATH=src /tmp/bq/bin/python benchmarks/brisque_reference.py

Without it, only the distortion table is printed (mean BRISQUE as noise, blur and JPEG
strength grow; lower is better). Writes benchmarks/results/brisque_reference.json.
"""

import io
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter

from rewardlab.rewards.brisque import Brisque, features


def test_images(n=12, size=128):
    """Dead-leaves scenes (occluding discs with radii ~ r^-3, the classic stand-in for
    natural-image statistics), lightly blurred like a lens, uint8 HWC."""
    from PIL import ImageDraw

    rng, out = np.random.default_rng(0), []
    for _ in range(n):
        img = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 256, 3)))
        draw = ImageDraw.Draw(img)
        for _ in range(600):
            r = 2 / np.sqrt(1 - rng.random() * (1 - (2 / 40) ** 2))  # inverse-CDF draw of p(r) ∝ r^-3 on [2, 40]
            x, y = rng.uniform(-r, size + r, 2)
            draw.ellipse([x - r, y - r, x + r, y + r], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
        out.append(np.asarray(img.filter(ImageFilter.GaussianBlur(0.6))))
    return out


def distort(img, kind, level, rng):
    if kind == "noise":
        return np.clip(img + rng.normal(0, level, img.shape), 0, 255).astype(np.uint8)
    pil = Image.fromarray(img)
    if kind == "blur":
        return np.asarray(pil.filter(ImageFilter.GaussianBlur(level)))
    buf = io.BytesIO()
    pil.save(buf, "JPEG", quality=level)
    return np.asarray(Image.open(buf).convert("RGB"))


def to_t(imgs):
    return torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).double() / 255


def reference_rows(imgs, ours):
    try:
        import cv2
        import skimage.color
        from brisque import BRISQUE
    except ImportError:
        print("reference `brisque` not installed: comparison skipped (see the docstring)")
        return None

    class Ref(BRISQUE):  # brisque 0.2.0's features are 1-element arrays; numpy 2.4 wants scalars
        def scale_features(self, f):
            return super().scale_features(np.array([np.asarray(x, float).ravel()[0] for x in f]))

        def feats(self, img):
            g = skimage.color.rgb2gray(img)
            half = cv2.resize(g, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_CUBIC)
            f = np.concatenate([self.calculate_brisque_features(g, 7, 7 / 6),
                                self.calculate_brisque_features(half, 7, 7 / 6)])
            return np.array([np.asarray(x, float).ravel()[0] for x in f])

    ref = Ref()
    t0 = time.perf_counter()
    ref_scores = np.array([ref.score(im) for im in imgs])
    ref_time = time.perf_counter() - t0
    t0 = time.perf_counter()
    our_scores = ours.quality(to_t(imgs)).numpy()
    our_time = time.perf_counter() - t0
    feat_diff = max(np.abs(ref.feats(im) - features(to_t([im]))[0].numpy()).max() for im in imgs)
    row = {"images": len(imgs), "max_abs_score_diff": float(np.abs(ref_scores - our_scores).max()),
           "max_abs_feature_diff": float(feat_diff), "reference_images_per_s": len(imgs) / ref_time,
           "rewardlab_images_per_s": len(imgs) / our_time}
    print("| images | max abs score diff | max abs feature diff | reference img/s | rewardlab img/s (batched) |")
    print("|---|---|---|---|---|")
    print(f"| {row['images']} | {row['max_abs_score_diff']:.2e} | {row['max_abs_feature_diff']:.2e} | "
          f"{row['reference_images_per_s']:.1f} | {row['rewardlab_images_per_s']:.1f} |")
    return row


def main():
    ours, rng = Brisque(), np.random.default_rng(1)
    clean = test_images()
    cases = [("clean", None)] + [("noise", s) for s in (5, 15, 40)] + [("blur", r) for r in (1, 2, 4)] + \
            [("jpeg", q) for q in (50, 15, 5)]
    all_imgs, rows = [], []
    for kind, level in cases:
        imgs = clean if kind == "clean" else [distort(im, kind, level, rng) for im in clean]
        all_imgs += imgs
        rows.append({"distortion": kind, "level": level, "mean_brisque": float(ours.quality(to_t(imgs)).mean())})
    print("| distortion | level | mean BRISQUE (lower is better) |\n|---|---|---|")
    for r in rows:
        print(f"| {r['distortion']} | {r['level'] if r['level'] is not None else '—'} | {r['mean_brisque']:.2f} |")
    ref = reference_rows(all_imgs, ours)
    out = Path(__file__).parent / "results" / "brisque_reference.json"
    out.write_text(json.dumps({"distortions": rows, "reference": ref}, indent=2) + "\n")


if __name__ == "__main__":
    main()
