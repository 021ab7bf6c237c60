"""Name → reward factory, with a one-line description each; heavy imports stay inside
the factories so listing rewards costs nothing."""

from __future__ import annotations

import inspect
from typing import Callable

from .base import Reward

_REGISTRY: dict[str, tuple[Callable[..., Reward], str]] = {}


def register(name: str, description: str):
    def deco(factory):
        _REGISTRY[name] = (factory, description)
        return factory
    return deco


def available() -> dict[str, str]:
    _populate()
    return {k: d for k, (_, d) in sorted(_REGISTRY.items())}


def load(name: str, **kwargs) -> Reward:
    _populate()
    if name not in _REGISTRY:
        raise KeyError(f"unknown reward {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    factory = _REGISTRY[name][0]
    params = inspect.signature(factory).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(kwargs) - set(params))
        if unknown:
            raise ValueError(f"reward {name!r} has no option {', '.join(unknown)}; it takes: "
                             f"{', '.join(k for k in params if k != 'self') or 'nothing'}")
    return factory(**kwargs)


def parse_options(items: list[str]) -> dict[str, dict]:
    """``["vlm_judge.model=DIR", "clipscore.device=cuda"]`` → ``{reward: {key: value}}``;
    values that read as int, float or true/false become those."""
    out: dict[str, dict] = {}
    for item in items:
        key, sep, value = item.partition("=")
        name, dot, opt = key.rpartition(".")  # option names have no dots; reward names may (hpsv2.1)
        if not (sep and dot and name and opt):
            raise ValueError(f"reward option must look like REWARD.KEY=VALUE, got {item!r}")
        out.setdefault(name, {})[opt] = _literal(value)
    return out


def _literal(value: str):
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


def _populate() -> None:
    from . import (brisque, clip, detectors, geneval, hps, imagereward, preference, shapeclip,  # noqa: F401  (register on import)
                   simple, vlm)
    from ..serve import remote  # noqa: F401
