"""``torch.compile`` for the denoiser's passes without gradients — sampling, evaluation, and
the old-policy and reference passes of the trainers — while passes that build a graph for
backward stay eager.

Measured on this project's 2-core CPU (torch 2.13, inductor, fp32; benchmarks/results/
sampler_throughput.md): ShapeWorld sampling at batch 16 ran 1.24-1.34x the eager images/s, the
tiny SD UNet's forward at batch 16 took 0.61x the eager time — but forward + backward took
0.90x (tiny SD with LoRA, batch 128) and 1.17x (ShapeWorld, full fine-tune, batch 32), after
50-110 s of compiling, so only gradient-free calls go through the compiled function. Each new
input shape compiles once more (``dynamic=False``, one static graph per shape; a run has few:
the sampling batch, a last partial batch, the training minibatch), about a minute per shape
on a CPU: worth it for a training run or a full evaluation, not for a few images, nor for
searches whose batches shrink as candidates are pruned. Past dynamo's recompile limit a call
runs eagerly. Compiled and eager outputs differ by float rounding (~1e-7), so a run resumed
with compiling switched is not bit-identical to one that never switched.
"""

from __future__ import annotations

import types
import warnings

import torch


def compile_no_grad(module: torch.nn.Module, backend="inductor") -> torch.nn.Module:
    """Route ``module``'s calls made without gradients through ``torch.compile`` (in place;
    returns it). Its parameters, state dict and LoRA adapters are untouched (no
    ``_orig_mod`` wrapper), so saving, loading and swapping weights work as before; the
    compiled graph reads the live parameters, so in-place updates, merged LoRA weights and
    swapped-in copies (old policy, reference) are what it computes with, and a deep copy of
    the module runs its own weights. ``backend``: any of ``torch.compile``'s (tests count
    compilations with a counting one). If compiling fails (say, no C++ compiler for inductor
    on a CPU), a warning says so and the module runs eagerly."""
    if "forward" in vars(module):
        if vars(module).get("_compiled_no_grad") is not None:
            return module  # compiled already
        raise ValueError(f"{type(module).__name__} already has its own forward (a hook?); compile it before adding one")
    module._compiled_no_grad = [torch.compile(type(module).forward, backend=backend, dynamic=False)]
    module.forward = types.MethodType(_forward, module)  # a bound method: a deep copy binds to the copy
    return module


def is_compiled(module: torch.nn.Module) -> bool:
    """Whether ``compile_no_grad`` wrapped ``module`` (even if compiling later failed)."""
    return vars(module).get("_compiled_no_grad") is not None


def _forward(self, *args, **kwargs):
    eager, compiled = type(self).forward, self._compiled_no_grad
    if torch.is_grad_enabled() or not compiled:
        return eager(self, *args, **kwargs)
    try:
        return compiled[0](self, *args, **kwargs)
    except Exception as e:
        out = eager(self, *args, **kwargs)  # an error of the call itself (shapes, memory) is raised here
        # eager works, so compiling is what failed (no C++ compiler, an op the backend cannot lower)
        why = " ".join(str(e).split())[:300]  # one line
        warnings.warn(f"torch.compile failed, the denoiser runs eagerly: {type(e).__name__}: {why}", stacklevel=2)
        compiled.clear()
        return out
