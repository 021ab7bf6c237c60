"""Classifier-free guidance in one place (Ho & Salimans 2022, "Classifier-Free Diffusion
Guidance", eq. 6), written as k-diffusion's ``CFGDenoiser``: a function that wraps any
adapter's ``denoise`` instead of code inside each adapter.

    guided(x, t, c) = D(x, t, ∅) + s · (D(x, t, c) − D(x, t, ∅))

with ∅ the negative prompt (or the empty prompt). The meaning is the same for every
adapter: ``s = 1`` is the plain conditional pass (one network call, no unconditional
states needed); any other ``s`` — 0.5, 0, 3 — is applied as written, with the conditional
and unconditional passes batched into one call. FLUX.1's *distilled* guidance is not this:
it is an input of the network, set by the FLUX adapter's own ``distilled_guidance`` option.
"""

from __future__ import annotations

from typing import Callable

import torch

from .base import Cond

Denoise = Callable[[torch.Tensor, torch.Tensor, Cond], torch.Tensor]


def guided(denoise: Denoise, scale: float, detach_uncond: bool = False) -> Denoise:
    """``denoise`` with guidance scale ``scale`` folded in (``scale == 1`` returns it unchanged).
    ``detach_uncond`` lets gradients reach only the conditional pass: a recipe that trains the
    guided policy then moves each prompt's prediction, not the one shared unconditional
    prediction that every prompt's guidance leans on (whose gradient carries weight 1 − s)."""
    scale = float(scale)
    if scale == 1.0:
        return denoise

    def fn(x: torch.Tensor, t: torch.Tensor, cond: Cond) -> torch.Tensor:
        t = torch.as_tensor(t)
        out_c, out_u = denoise(torch.cat([x, x]), t if t.ndim == 0 else torch.cat([t, t]), cond.stacked()).chunk(2)
        if detach_uncond:
            out_u = out_u.detach()
        return out_u + scale * (out_c - out_u)

    return fn
