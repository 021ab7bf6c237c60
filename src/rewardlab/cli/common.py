"""The top-level typer app and what every command shares: console, progress bars, errors,
and the checks that refuse bad options and unwritable outputs before any work starts."""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import List, NoReturn, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from ..config import setting
from ..generators import DEFAULT_GUIDANCE, DEFAULT_STEPS

app = typer.Typer(help="rewardlab: reward-driven image generation.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
console = Console()
err_console = Console(stderr=True, soft_wrap=True)  # errors stay on one line, however long


@dataclass
class SampleConfig:
    """How ``generate``, ``demo`` and ``eval geneval`` sample: through the Generator layer."""

    generator: str = setting("shapeworld", "generator: shapeworld[:WEIGHTS], sd:DIR, sd3:DIR or flux:DIR "
                                           "(a save_pretrained folder or hub id)")
    weights: Optional[Path] = setting(None, "ShapeWorld model weights (default: the shipped model)")
    steps: int = setting(DEFAULT_STEPS, "sampling steps (deterministic ODE/DDIM)", min=1)
    guidance: Optional[float] = setting(None, f"classifier-free guidance scale, 1 = off (default: the generator's, "
                                              f"{DEFAULT_GUIDANCE}; 1 for FLUX, which is guidance-distilled)")
    height: Optional[int] = setting(None, "image height for sd/sd3/flux (default: the pipeline's)", min=8)
    width: Optional[int] = setting(None, "image width for sd/sd3/flux (default: the pipeline's)", min=8)
    compile: bool = setting(False, "torch.compile the denoiser: on 2 CPU cores ShapeWorld sampling runs 1.24-1.34x "
                                   "faster after about a minute of compiling per batch shape — for long runs "
                                   "(not for search, whose batch sizes vary)")


def load_sampler(cfg: SampleConfig):
    """The generator ``cfg`` names and its sampler ``(prompts, seeds) -> [B,3,H,W] in [0, 1]``
    (deterministic, one seed per image); a one-line error if it cannot be loaded."""
    from ..eval.geneval import generator_sampler
    from ..generators import load_generator

    options = {k: v for k, v in (("height", cfg.height), ("width", cfg.width)) if v is not None}
    if cfg.generator.partition(":")[0] == "shapeworld":
        if options:
            fail("--height/--width are for sd, sd3 and flux; the ShapeWorld model samples at its own resolution")
        if cfg.weights is not None:
            if cfg.generator != "shapeworld":
                fail(f"give the ShapeWorld weights once: --generator {cfg.generator} or --weights {cfg.weights}")
            options["weights"] = cfg.weights
    elif cfg.weights is not None:
        fail(f"--weights is for the shapeworld generator; {cfg.generator} names its pipeline folder itself")
    try:
        gen = load_generator(cfg.generator, **options)
        if "height" in options or "width" in options:
            gen.latent_shape(gen.height, gen.width)  # a size the VAE/patching cannot take fails here
    except (OSError, ValueError) as e:
        fail(str(e))
    if cfg.compile:
        from ..generators.compiled import compile_no_grad

        compile_no_grad(gen.denoiser)
    return gen, generator_sampler(gen, cfg.steps, cfg.guidance)


@contextlib.contextmanager
def progress_bar(description: str, total: int, completed: int = 0):
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), TextColumn("{task.fields[info]}"), console=console,
                  transient=False) as prog:
        task = prog.add_task(description, total=total, completed=completed, info="")
        yield lambda n=1, info="": prog.update(task, advance=n, info=info)


def run_training(description: str, cfg, out: Path, train, ship_as: str) -> None:
    """Run ``train(progress)`` — a trainer of config ``cfg`` writing into ``out`` that reports
    ``(step, loss)`` and returns its weights path — under a bar that follows the step, then say
    where the weights are and where to copy them to ship. The output folder and any checkpoint
    in it are checked first: an unreadable checkpoint or one trained with other settings is a
    one-line error, and a resumed run says where it resumes."""
    from ..training import checkpoint_step
    from ..utils import CheckpointError

    check_output_dir(out)
    try:
        start = checkpoint_step(out / "checkpoint.pt", cfg)
    except CheckpointError as e:
        fail(str(e))
    if start:
        console.print(f"resuming from step {start} ({out / 'checkpoint.pt'})")
    done = [start]
    with progress_bar(description, cfg.steps, completed=min(start, cfg.steps)) as advance:
        def on_step(step: int, loss: float) -> None:
            advance(step - done[0], info=f"loss {loss:.4f}")
            done[0] = step

        try:
            path = train(on_step)
        except (CheckpointError, FloatingPointError) as e:
            fail(str(e))
    console.print(f"weights: {path}  (copy to src/rewardlab/world/data/{ship_as} to ship)")


def config_options(cls, files: bool = True):
    """Give a command the settings of the config dataclass ``cls`` — built by the one config
    loader (``rewardlab.config``), never copied by hand. The command gains one option per
    field (``--batch-size``: its help, default and range come from the field) and, with
    ``files``, ``--config FILE`` (YAML), trailing ``KEY=VALUE`` overrides and
    ``--print-config``; it is called with the resolved config as ``cfg``. Later wins: the
    defaults, the file, the options, the overrides. A bad file, key or value is a one-line
    error before any work."""
    from ..config import ConfigError, check_value, load_config, settings, to_yaml

    def deco(fn):
        own = [p for p in inspect.signature(fn).parameters.values() if p.name != "cfg"]
        fields = [s for s in settings(cls) if "." not in s.key and s.key not in {p.name for p in own}
                  and _option_type(s.type)]
        if not files and len(fields) < len(settings(cls)):  # nothing else could set the others
            raise TypeError(f"{cls.__name__}: without files, every setting must be a plain option")
        extra = [_param("config_context", typer.Context, inspect.Parameter.empty)]
        if files:
            extra += [
                _param("config_file", Optional[Path], typer.Option(
                    None, "--config", help="YAML file of settings (see configs/); options and KEY=VALUE override it.")),
                _param("print_config", bool, typer.Option(
                    False, "--print-config", help="Print the resolved settings as YAML and exit.")),
                _param("overrides", Optional[List[str]], typer.Argument(
                    None, metavar="[KEY=VALUE]...", show_default=False,
                    help="Settings by name, e.g. " + (f"{fields[0].key}={fields[0].default}" if fields else
                                                      "key=value") + "; a dotted key sets a nested one.")),
            ]
        extra += [_param(s.key, s.type, _field_option(s, check_value)) for s in fields]

        @functools.wraps(fn)
        def command(**kwargs):
            path, show = kwargs.pop("config_file", None), kwargs.pop("print_config", False)
            overrides, ctx = kwargs.pop("overrides", None) or [], kwargs.pop("config_context")
            given = {s.key: v for s in fields if (v := kwargs.pop(s.key)) is not None
                     and ctx.get_parameter_source(s.key).name != "DEFAULT"}  # only what the user gave
            try:
                cfg = load_config(cls, path, given, overrides)
            except ConfigError as e:
                fail(str(e))
            if show:
                typer.echo(to_yaml(cfg), nl=False)  # plain: rich would wrap long help lines
                raise typer.Exit(0)
            return fn(cfg=cfg, **kwargs)

        params = own + extra
        command.__signature__ = inspect.Signature(params)
        command.__annotations__ = {p.name: p.annotation for p in params}
        return command

    return deco


def _option_type(tp) -> bool:
    """Whether a field of type ``tp`` can be a plain option (a scalar, maybe Optional)."""
    import typing

    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return tp in (int, float, str, bool, Path) or (len(args) == 1 and args[0] in (int, float, str, Path))


def _param(name, annotation, default) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


def _field_option(s, check_value):
    from ..config import describe_bounds

    def validate(value):
        if value is None:
            return None
        try:
            return check_value(s, value)
        except ValueError as e:  # "steps=0: must be ≥ 1" → click's "Invalid value for '--steps': must be ≥ 1"
            raise typer.BadParameter(str(e).split(": ", 1)[-1]) from None

    bounds = describe_bounds(s)
    name = "--" + s.key.replace("_", "-")
    decls = [f"{name}/--no-{s.key.replace('_', '-')}"] if s.type is bool else [name]
    return typer.Option(s.default, *decls, callback=validate, show_default=s.default is not None,
                        help=s.help[:1].upper() + s.help[1:] + (f" [{bounds}]" if bounds else "") + ".")


def fail(message: str) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {message}", markup=True, highlight=False)
    raise typer.Exit(2)


# ---- checks of option values (typer callbacks) ----
def finite(value: float | None) -> float | None:
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"must be a finite number, got {value}")
    return value


# ---- checks of output paths, before any work ----
def check_output_file(path: Path, suffixes: tuple[str, ...]) -> None:
    """Refuse an output file that cannot be written: a folder in its place, an extension
    other than ``suffixes``, a parent that is a file or not writable. Missing parent
    folders are fine: they are created when the file is written."""
    if path.is_dir():
        fail(f"{path} is a folder; give a file name ending in {' or '.join(suffixes)}")
    if path.suffix not in suffixes:
        fail(f"cannot write {path}: unsupported extension {path.suffix or '(none)'!r}; "
             f"use {' or '.join(suffixes)}")
    _check_writable(path.parent, path)


def check_output_dir(path: Path) -> None:
    """Refuse an output folder that is a file, or lies under a file or an unwritable folder."""
    if path.exists() and not path.is_dir():
        fail(f"{path} is a file, not a folder")
    _check_writable(path, path)


def _check_writable(folder: Path, target: Path) -> None:
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        fail(f"cannot write {target}: {existing} is a file, not a folder")
    try:  # a real probe: os.access says yes to root in a read-only folder, and knows no read-only mounts
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".rewardlab-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        fail(f"cannot write {target}: {existing} is not writable ({e.strerror or e})")
