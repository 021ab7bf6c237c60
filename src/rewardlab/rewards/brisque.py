"""BRISQUE (Mittal, Moorthy & Bovik 2012): no-reference image quality, batched in torch.

Features: mean-subtracted contrast-normalised (MSCN) coefficients of the grey image and
their four neighbour products, each fitted by an asymmetric generalised Gaussian
(shape, mean, left/right variances), at full and half scale — 36 numbers. An RBF
ε-SVR maps them to a score of about 0 (pristine) to 100 (badly distorted); it can leave
that range. The SVR is the pretrained one the ``brisque`` package (0.2.0) ships, converted to safetensors by ``scripts/convert_brisque_model.py`` so no
libsvm or pickle is needed. Feature extraction follows that package (grey =
0.2125 R + 0.7154 G + 0.0721 B, 7×7 Gaussian of σ = 7/6 with zero padding, C = 1/255,
bicubic half scale).

Sign convention: the reward is ``-BRISQUE`` (higher is better); the raw score is the
``brisque`` sub-score. Flat images have no MSCN statistics: their score is NaN and so
marked invalid. Not differentiable (the shape fit is a root search).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from .base import Reward, RewardError, RewardOutput
from .registry import register

MODEL = Path(__file__).resolve().parent / "data" / "brisque_svr.safetensors"
MIN_SIDE = 16
ZERO_CONTRAST = 1e-9


def _blur(x: torch.Tensor, size: int = 7, sigma: float = 7 / 6) -> torch.Tensor:
    """Normalised 7×7 Gaussian, zero padding ('same'), as two 1-D passes."""
    t = torch.arange(size, dtype=x.dtype, device=x.device) - size // 2
    k = torch.exp(-t ** 2 / (2 * sigma ** 2))
    k = k / k.sum()
    x = F.conv2d(x, k.view(1, 1, 1, size), padding=(0, size // 2))
    return F.conv2d(x, k.view(1, 1, size, 1), padding=(size // 2, 0))


def mscn(gray: torch.Tensor) -> torch.Tensor:
    """[B, 1, H, W] grey in [0, 1] → MSCN coefficients (same size)."""
    mu, mu_sq = _blur(torch.cat([gray, gray ** 2])).chunk(2)
    m = (gray - mu) / ((mu ** 2 - mu_sq).abs().sqrt() + 1 / 255)
    # Flat areas have zero contrast, but rounding leaves ±1e-16 there, and the shape fit
    # counts signs: snap them to 0 so scores do not depend on summation order.
    return torch.where(m.abs() < ZERO_CONTRAST, torch.zeros_like(m), m)


def _phi(alpha: torch.Tensor) -> torch.Tensor:
    """Γ(2/α)² / (Γ(1/α) Γ(3/α)), increasing in α."""
    return torch.exp(2 * torch.lgamma(2 / alpha) - torch.lgamma(1 / alpha) - torch.lgamma(3 / alpha))


def aggd_fit(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Asymmetric generalised Gaussian fit of each row of ``x`` [B, N] (moment matching):
    returns shape α, mean, σ_l², σ_r² — each [B]."""
    neg, pos = x < 0, x >= 0
    left = (x ** 2 * neg).sum(1) / neg.sum(1)
    right = (x ** 2 * pos).sum(1) / pos.sum(1)
    gamma = left.sqrt() / right.sqrt()
    r_hat = x.abs().mean(1) ** 2 / (x ** 2).mean(1)
    target = r_hat * (gamma ** 3 + 1) * (gamma + 1) / (gamma ** 2 + 1) ** 2
    # bisection in log α over [0.05, 200]: φ is monotone, so the root is unique (near-Gaussian
    # noise has α ≈ 20; a target beyond φ's range, ≥ 0.75, stops at the bound)
    lo, hi = torch.full_like(target, 0.05), torch.full_like(target, 200.0)
    for _ in range(64):
        mid = (lo * hi).sqrt()
        below = _phi(mid) < target
        lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
    alpha = (lo * hi).sqrt()
    mean = (right.sqrt() - left.sqrt()) * torch.exp(torch.lgamma(2 / alpha) - 0.5 * (
        torch.lgamma(1 / alpha) + torch.lgamma(3 / alpha)))
    return alpha, mean, left, right


def scale_features(gray: torch.Tensor) -> torch.Tensor:
    """The 18 BRISQUE features of one scale: [B, 18]."""
    m = mscn(gray)[:, 0]
    pairs = [m[:, :, :-1] * m[:, :, 1:], m[:, :-1, :] * m[:, 1:, :],
             m[:, :-1, :-1] * m[:, 1:, 1:], m[:, 1:, :-1] * m[:, :-1, 1:]]
    alpha, _, left, right = aggd_fit(m.flatten(1))
    feats = [alpha, (left + right) / 2]
    for p in pairs:
        feats += list(aggd_fit(p.flatten(1)))
    return torch.stack(feats, 1)


def features(images: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] in [0, 1] → [B, 36] (full scale, then half scale)."""
    w = torch.tensor([0.2125, 0.7154, 0.0721], dtype=torch.float64, device=images.device)
    gray = (images.double() * w[:, None, None]).sum(1, keepdim=True)
    half = F.interpolate(gray, scale_factor=0.5, mode="bicubic", align_corners=False)
    return torch.cat([scale_features(gray), scale_features(half)], 1)


class Brisque(Reward):
    name = "brisque"
    differentiable = False

    def __init__(self, model: str | Path = MODEL, device: str = "cpu"):
        from safetensors.torch import load_file

        if not Path(model).exists():
            raise FileNotFoundError(f"BRISQUE model not found at {model}; regenerate it with "
                                    f"scripts/convert_brisque_model.py")
        self.svr = {k: v.to(device) for k, v in load_file(str(model)).items()}

    def quality(self, images: torch.Tensor) -> torch.Tensor:
        """Raw BRISQUE scores [B] (lower is better)."""
        if min(images.shape[-2:]) < MIN_SIDE:
            raise RewardError(f"brisque needs images of at least {MIN_SIDE}×{MIN_SIDE} pixels, "
                              f"got {tuple(images.shape[-2:])}")
        s = self.svr
        f = features(images.to(s["coef"].device))
        scaled = -1 + 2 * (f - s["feature_min"]) / (s["feature_max"] - s["feature_min"])
        kernel = torch.exp(-s["gamma"] * torch.cdist(scaled, s["support_vectors"]) ** 2)
        return (kernel @ s["coef"] - s["rho"]).cpu()

    def score(self, images, prompts, metadata):
        q = self.quality(images)
        return RewardOutput((-q).float(), sub_scores={"brisque": q.float()})


register("brisque", "no-reference image quality (BRISQUE), reward = -BRISQUE: higher is better")(Brisque)
