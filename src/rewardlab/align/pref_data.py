"""The data of the preference recipes: (prompt, winner, loser) pairs from any preference
format (``data.pref_formats``), an epoch's share of them, their images as latents — and
``make_sample_preferences``, a data set of the generator's own samples judged by ShapeWorld's
exact verifier (what ``configs/dpo_shapeworld.yaml`` trains on: DPO on the policy's own
distribution, where ``data.preferences.make_shapeworld_preferences`` renders ideal pictures).
"""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
import torch

from ..config import ConfigError


def load_pairs(cfg) -> tuple[list, dict[str, float]]:
    """``cfg.data``'s (prompt, winner, loser) pairs and counts to log (ties and malformed rows
    left out); ConfigError if the data cannot be used."""
    from ..data.pref_formats import read_preference_set, winner_loser_pairs

    if cfg.data is None:
        raise ConfigError("dpo needs a preference data set: set data=PATH")
    try:
        data = read_preference_set(cfg.data, None if cfg.data_format == "auto" else cfg.data_format, cfg.image_root)
    except ValueError as e:
        raise ConfigError(f"data: {e}") from None
    pairs, ties = winner_loser_pairs(data)
    if not pairs:
        raise ConfigError(f"data: {cfg.data} holds no decided pair ({ties} ties, which DPO leaves out)")
    if cfg.model.generator.partition(":")[0] == "shapeworld":  # its text encoder knows ShapeWorld's words only
        from ..world.records import RecordError, check_prompt

        for p in dict.fromkeys(p[0] for p in pairs):
            try:
                check_prompt(p)
            except RecordError as e:
                raise ConfigError(f"data: {cfg.data}: {e}") from None
    skipped = sum(data.skipped.values())
    if ties or skipped:
        warnings.warn(f"{cfg.data}: {len(pairs)} pairs; left out {ties} ties and {skipped} malformed rows",
                      stacklevel=2)
    return pairs, {"data/pairs": len(pairs), "data/ties_skipped": ties, "data/rows_skipped": skipped}


def epoch_order(n_data: int, n: int, seed: int, epoch: int) -> np.ndarray:
    """The data indices of an epoch's ``n`` pairs: pass after pass over the data, each in a
    fresh order fixed by ``(seed, pass)``, so every pair is seen once per pass."""
    pos = np.arange(epoch * n, (epoch + 1) * n)
    out = np.empty(n, dtype=np.int64)
    for p in np.unique(pos // n_data):
        m = pos // n_data == p
        out[m] = np.random.default_rng([seed, int(p), 17]).permutation(n_data)[pos[m] % n_data]
    return out


def encode_pairs(gen, pairs, batch_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Winners' and losers' latents ``[n, ...]`` (images fitted to the generator's size) and
    which pairs could be read: an unreadable image costs its pair alone, with a warning."""
    from ..images import ImageError, load_image

    h, w = image_size(gen)
    images, ok = np.zeros((2, len(pairs), h, w, 3), np.uint8), torch.ones(len(pairs), dtype=torch.bool)
    for j, (_, win, lose) in enumerate(pairs):
        try:
            images[0, j], images[1, j] = fit(load_image(win), h, w), fit(load_image(lose), h, w)
        except ImageError as e:
            ok[j] = False
            warnings.warn(f"pair left out: {e}", RuntimeWarning, stacklevel=2)
    x = torch.from_numpy(images).permute(0, 1, 4, 2, 3).float().div(255)
    with torch.no_grad():
        latents = [torch.cat([gen.encode(x[s, b:b + batch_size]) for b in range(0, len(pairs), batch_size)])
                   for s in (0, 1)]
    return latents[0], latents[1], ok


def image_size(gen) -> tuple[int, int]:
    """(height, width) of the images ``gen`` samples."""
    if getattr(gen, "height", None) and getattr(gen, "width", None):
        return gen.height, gen.width
    res = gen.model.config.resolution  # the ShapeWorld model
    return res, res


def fit(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """The image scaled (bilinear) to cover ``h × w`` and centre-cropped, as the released
    Diffusion-DPO code prepares Pick-a-Pic (Resize + CenterCrop); unchanged at that size."""
    if img.shape[:2] == (h, w):
        return img
    from PIL import Image

    s = max(h / img.shape[0], w / img.shape[1])
    size = (max(w, round(img.shape[1] * s)), max(h, round(img.shape[0] * s)))
    big = np.asarray(Image.fromarray(img).resize(size, Image.BILINEAR))
    top, left = (big.shape[0] - h) // 2, (big.shape[1] - w) // 2
    return big[top:top + h, left:left + w]


def make_sample_preferences(gen, pairs: int, label_noise: float = 0.1, samples_per_prompt: int = 4,
                            steps: int = 10, guidance: float | None = None, split: str = "train",
                            tags: Sequence[str] | None = None, seed: int = 0, batch_size: int = 16,
                            progress=None) -> dict[str, list]:
    """``pairs`` rows of rewardlab's preference parquet (``data.preferences.save_preferences``)
    from ``gen``'s own samples: per ShapeWorld prompt of ``split`` (of ``tags``, default all),
    ``samples_per_prompt`` images (deterministic sampler, seeded), each judged by the verifier;
    the best and the worst (correct first, then partial credit) make a pair when the verifier
    tells them apart, the winner first or second at random, ``label_noise`` of the labels flipped."""
    from ..data.preferences import COLUMNS, png_bytes
    from ..generators.sampling import generate_images
    from ..images import to_uint8
    from ..world import verify
    from ..world.prompts import PromptSampler
    from ..world.records import TAGS

    if not 0 <= label_noise <= 0.5:
        raise ValueError(f"label_noise must be in [0, 0.5], got {label_noise}")
    if samples_per_prompt < 2:
        raise ValueError(f"samples_per_prompt must be at least 2, got {samples_per_prompt}")
    rng, k = np.random.default_rng(seed), samples_per_prompt
    sampler = PromptSampler(split, tags=tuple(tags or TAGS), seed=seed)
    rows: dict[str, list] = {c: [] for c in COLUMNS}
    for _ in range(100):  # rounds: prompts whose samples all score alike give no pair
        need = pairs - len(rows["label"])
        if need <= 0:
            return rows
        recs = sampler(min(max(need, 8), 256), rng)
        prompts = [r["prompt"] for r in recs for _ in range(k)]
        seeds = rng.integers(2**31, size=len(prompts)).tolist()
        images = to_uint8(generate_images(gen, prompts, seeds, steps=steps, guidance=guidance, batch_size=batch_size))
        for j, rec in enumerate(recs):
            if len(rows["label"]) == pairs:
                break
            group = images[j * k:(j + 1) * k]
            keys = [(v.correct, v.score) for v in (verify.verify(im, rec) for im in group)]
            best, worst = max(range(k), key=keys.__getitem__), min(range(k), key=keys.__getitem__)
            if keys[best] == keys[worst]:
                continue
            a_wins = bool(rng.random() < 0.5)
            a, b = (group[best], group[worst]) if a_wins else (group[worst], group[best])
            label = float(a_wins) if rng.random() >= label_noise else float(not a_wins)
            for col, val in zip(COLUMNS, (rec["prompt"], png_bytes(a), png_bytes(b), label)):
                rows[col].append(val)
            if progress is not None:
                progress(1)
    raise RuntimeError(f"only {len(rows['label'])} of {pairs} pairs after 100 rounds: the verifier rarely tells "
                       f"this model's samples apart (raise samples_per_prompt)")
