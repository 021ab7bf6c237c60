"""Generators: text-to-image policies that expose their denoising trajectory.

``DEFAULT_STEPS`` and ``DEFAULT_GUIDANCE`` are the one place the library and the CLI take
their sampling defaults from. ``load_generator(spec, **options)`` builds an adapter from a
spec string (the small registry ``--generator`` accepts):

* ``shapeworld`` or ``shapeworld:WEIGHTS`` — the embedded model (shipped weights by default);
* ``sd:DIR`` — a Stable Diffusion pipeline folder or hub id (DDIM step);
* ``sd3:DIR`` — a Stable Diffusion 3 / 3.5 pipeline (flow step);
* ``flux:DIR`` — a FLUX.1 pipeline (flow step, distilled guidance as its own option).

Heavy imports happen inside ``load_generator``, so importing this package costs nothing.
"""

from __future__ import annotations

DEFAULT_STEPS = 20  # sampling steps when none are given
DEFAULT_GUIDANCE = 3.0  # classifier-free guidance scale when none is given (1 = off)

GENERATORS = {
    "shapeworld": "the embedded ShapeWorld model (shapeworld or shapeworld:WEIGHTS)",
    "sd": "Stable Diffusion 1.x/2.x pipeline (sd:DIR or sd:HUB_ID)",
    "sd3": "Stable Diffusion 3 / 3.5 pipeline (sd3:DIR or sd3:HUB_ID)",
    "flux": "FLUX.1 pipeline (flux:DIR or flux:HUB_ID)",
}


def load_generator(spec: str, **options):
    """Build a generator from ``shapeworld[:WEIGHTS] | sd:DIR | sd3:DIR | flux:DIR``; ``options``
    go to the adapter's constructor (e.g. ``step_type``, ``height``, ``device`` for ShapeWorld)."""
    kind, _, source = str(spec).partition(":")
    if kind not in GENERATORS:
        raise ValueError(f"unknown generator {spec!r}; expected one of: "
                         + "; ".join(f"{k} — {d}" for k, d in GENERATORS.items()))
    if kind == "shapeworld":
        from ..world.model import ShapeWorldModel
        from .shapeworld import ShapeWorldGenerator

        device = options.pop("device", "cpu")
        return ShapeWorldGenerator(ShapeWorldModel.load(source or options.pop("weights", None), device=device),
                                   **options)
    if not source:
        raise ValueError(f"generator {kind!r} needs a pipeline folder or hub id: {kind}:DIR")
    if kind == "sd":
        from .diffusers_sd import StableDiffusionGenerator

        return StableDiffusionGenerator(source, **options)
    from .diffusers_flow import FluxGenerator, SD3Generator

    return (SD3Generator if kind == "sd3" else FluxGenerator)(source, **options)
