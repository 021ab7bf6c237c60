"""LoRA adapters through PEFT on any generator's denoiser (UNet or transformer):
add, save (adapter only, safetensors), load, merge, and switch off for a reference pass."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch

DEFAULT_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")


def add_lora(module: torch.nn.Module, rank: int = 4, alpha: float | None = None,
             targets=DEFAULT_TARGETS, init: bool | str = "gaussian") -> torch.nn.Module:
    """Inject a LoRA adapter and freeze everything else; only ``lora_`` weights train."""
    from peft import LoraConfig

    if rank < 1:
        raise ValueError(f"LoRA rank must be at least 1, got {rank}")
    config = LoraConfig(r=rank, lora_alpha=alpha or rank, target_modules=list(targets), init_lora_weights=init)
    module.add_adapter(config)
    for name, p in module.named_parameters():
        p.requires_grad_("lora_" in name)
    return module


def lora_parameters(module: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for n, p in module.named_parameters() if "lora_" in n]


def save_lora(module: torch.nn.Module, path: str | Path) -> None:
    """Write only the adapter weights (and its config, in the metadata) as safetensors."""
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    from ..utils import atomic_path

    config = module.peft_config["default"]
    meta = {"rank": config.r, "alpha": config.lora_alpha, "targets": sorted(config.target_modules)}
    state = {k: v.detach().contiguous() for k, v in get_peft_model_state_dict(module).items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"lora": json.dumps(meta)})


def load_lora(module: torch.nn.Module, path: str | Path) -> torch.nn.Module:
    from peft.utils import set_peft_model_state_dict
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no LoRA adapter at {path}")
    with safe_open(str(path), "pt") as f:
        meta = json.loads((f.metadata() or {}).get("lora", "null") or "null")
    if meta is None:
        raise ValueError(f"{path} is not a rewardlab LoRA file (no 'lora' metadata)")
    add_lora(module, meta["rank"], meta["alpha"], meta["targets"], init=True)
    result = set_peft_model_state_dict(module, load_file(str(path)))
    if getattr(result, "unexpected_keys", None):
        raise ValueError(f"{path} does not fit this model: unexpected keys {result.unexpected_keys[:3]}")
    return module


def merge_lora(module: torch.nn.Module) -> torch.nn.Module:
    """Fold the adapter into the base weights and remove it (no extra cost at inference)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, BaseTunerLayer):
                child.merge()
                setattr(parent, name, child.get_base_layer())
    if hasattr(module, "peft_config"):
        del module.peft_config
    module._hf_peft_config_loaded = False
    for p in module.parameters():
        p.requires_grad_(True)
    return module


@contextlib.contextmanager
def lora_disabled(module: torch.nn.Module):
    """Run ``module`` as its base model: every LoRA layer's adapters off inside the block,
    restored (with each adapter weight's ``requires_grad``) on exit. The reference policy of
    KL penalties and DiffusionNFT without a second copy of the weights."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [m for m in module.modules() if isinstance(m, BaseTunerLayer)]
    was_off = [m.disable_adapters for m in layers]
    grads = {p: p.requires_grad for p in lora_parameters(module)}
    try:
        for m in layers:
            m.enable_adapters(False)
        yield module
    finally:
        for m, off in zip(layers, was_off):
            m.enable_adapters(not off)
        for p, g in grads.items():
            p.requires_grad_(g)


@contextlib.contextmanager
def lora_merged(module: torch.nn.Module):
    """Run ``module`` with every active LoRA folded into its base weight (``W + s·B·A``): one
    matmul per layer instead of three and no adapter dispatch — for sampling without gradients.
    The base weights are copied first and restored exactly on exit, so training goes on
    through the unmerged adapters with unchanged weights; outputs differ from the unmerged
    pass by float rounding only. A module without LoRA layers is left as it is."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [m for m in module.modules()
              if isinstance(m, BaseTunerLayer) and not m.disable_adapters and not m.merged]
    grads = {p: p.requires_grad for p in lora_parameters(module)}
    saved = []
    try:
        with torch.no_grad():
            for m in layers:
                weight = m.get_base_layer().weight
                saved.append((m, weight.detach().clone()))
                for name in m.active_adapters:
                    if name in m.lora_A:
                        weight.add_(m.get_delta_weight(name))
                m.enable_adapters(False)
        yield module
    finally:
        with torch.no_grad():
            for m, weight in saved:
                m.get_base_layer().weight.copy_(weight)
                m.enable_adapters(True)
        for p, g in grads.items():
            p.requires_grad_(g)
