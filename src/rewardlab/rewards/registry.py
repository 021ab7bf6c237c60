"""Name → reward factory, with a one-line description each; heavy imports stay inside
the factories so listing rewards costs nothing."""

from __future__ import annotations

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
    return _REGISTRY[name][0](**kwargs)


def _populate() -> None:
    from . import clip, detectors, hps, preference, shapeclip, simple  # noqa: F401  (register on import)
