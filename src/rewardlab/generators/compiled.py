"""``torch.compile`` for the denoiser's passes without gradients — sampling, evaluation, and
the old-policy and reference passes of the trainers — while passes that build a graph for
backward stay eager.

Measured on this project's 2-core CPU (torch 2.13, inductor, fp32; ``/tmp`` probes recorded in
benchmarks/results/peer_trl_ddpo.json's notes): a forward without gradients took 0.61x the
eager time on the tiny SD UNet at batch 16 and 0.76x on the ShapeWorld UNet at batch 32, but a
forward + backward took 0.90x (tiny SD with LoRA, batch 128) and 1.17x (ShapeWorld, full
fine-tune, batch 32) — slower — after 50-110 s of compilation. So only gradient-free calls
go through the compiled function. Each new input shape compiles once more (``dynamic=False``:
a static graph per shape runs faster than a symbolic one; a run has few shapes — the sampling
batch, the last partial batch, the training minibatch), which costs about a minute per
shape on a CPU: worth it for a training run or a full evaluation, not for a few images.
"""

from __future__ import annotations

import torch


def compile_no_grad(module: torch.nn.Module, backend="inductor") -> torch.nn.Module:
    """Route ``module``'s calls made without gradients through ``torch.compile`` (in place;
    returns it). Its parameters, state dict and LoRA adapters are untouched (no
    ``_orig_mod`` wrapper), so saving, loading and swapping weights work as before; the
    compiled graph reads the live parameters, so in-place updates, merged LoRA weights and
    swapped-in copies (old policy, reference) are what it computes with. ``backend``: any of
    ``torch.compile``'s (tests count compilations with a counting one)."""
    if getattr(module, "_rewardlab_compiled", False):
        return module
    eager = module.forward
    compiled = torch.compile(eager, backend=backend, dynamic=False)

    def forward(*args, **kwargs):
        return eager(*args, **kwargs) if torch.is_grad_enabled() else compiled(*args, **kwargs)

    module.forward = forward
    module._rewardlab_compiled = True
    return module
