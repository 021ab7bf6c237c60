"""``rewardlab train RECIPE``: the alignment recipes on one harness (``rewardlab.align``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import List, Optional

import typer

from ..align import RECIPES
from .common import app, check_output_dir, console, fail, progress_bar

RECIPE_HELP = "; ".join(f"{k}: {v[2]}" for k, v in RECIPES.items())


@app.command("train", context_settings={"help_option_names": ["-h", "--help"]})
def train(
    recipe: str = typer.Argument(..., help=f"The recipe — {RECIPE_HELP}."),
    overrides: Optional[List[str]] = typer.Argument(
        None, metavar="[KEY=VALUE]...", show_default=False,
        help="Settings by dotted name, e.g. train.lr=1e-4 sample.group_size=8 reward.names=shapeworld,shapeclip."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML preset (see configs/); KEY=VALUE overrides it."),
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="Run folder (default: runs/RECIPE). Rerunning the "
                                                                   "same command resumes from its checkpoint."),
    print_config: bool = typer.Option(False, "--print-config", help="Print the resolved settings as YAML and exit."),
    stop_on_hacking: bool = typer.Option(False, "--stop-on-hacking", help="Stop when the hacking monitor raises an "
                                         "alarm (a monitor reward falls while the training reward rises, or "
                                         "diversity collapses, or the palette drifts); the last checkpoint stays. "
                                         "Alarms are always printed."),
    palette_drift: float = typer.Option(0.2, "--palette-drift", min=0, max=1,
                                        help="Total variation of the hue fractions — of the rollouts' last 10 "
                                             "epochs from their first 10, or of an evaluation from the first one — "
                                             "that rings the palette alarm; 0 turns it off (a reward meant to "
                                             "change colours)."),
):
    """Fine-tune a generator with rewards, or train a reward model (rm): metrics.jsonl, TensorBoard
    (tb/), eval grids (grids/), checkpoint.pt and weights.safetensors land in the run folder.
    Multi-process: torchrun --nproc_per_node N $(which rewardlab) train ..."""
    from ..align import recipe_config
    from ..config import ConfigError, load_config, to_yaml
    from ..utils import CheckpointError

    if recipe not in RECIPES:
        fail(f"unknown recipe {recipe!r}; available: {', '.join(RECIPES)}")
    try:
        cfg = load_config(recipe_config(recipe), config, overrides or [])
    except ConfigError as e:
        fail(str(e))
    if print_config:
        typer.echo(to_yaml(cfg), nl=False)  # plain: rich would wrap long help lines
        raise typer.Exit(0)
    out = out or Path("runs") / recipe
    check_output_dir(out)
    if stop_on_hacking and not hasattr(cfg, "reward"):
        fail(f"--stop-on-hacking watches a generator's rewards; {recipe} trains none")
    if stop_on_hacking and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        fail("--stop-on-hacking runs in a single process (rank 0 alone would stop); watch the alarms instead")
    _run(recipe, cfg, out, (ConfigError, CheckpointError, FloatingPointError, OSError), stop_on_hacking,
         palette_drift)


class HackingStop(Exception):
    """Raised from the progress callback to end a run on a hacking alarm."""


def _hacking_watch(cfg, out: Path, stop: bool, palette_drift: float = 0.2):
    """``(epoch, metrics)`` → prints new hacking alarms (eval/hacking.py reads what the recipe
    logs; the recipe knows nothing of it) and raises ``HackingStop`` if told to stop."""
    from ..eval.hacking import MONITOR, HackingMonitor, read_log
    from ..utils import atomic_path

    monitor = HackingMonitor(gold=list(cfg.reward.monitors) or None,
                             trained=[f"score/{n}" for n in cfg.reward.names], drift=palette_drift)

    first = [True]

    def watch(epoch: int, metrics: dict) -> None:
        alarms = []
        if first[0]:  # no alarm can ring before the first epoch's report: write the threshold now
            with atomic_path(out / MONITOR, sync=False) as tmp:  # what `rewardlab report` draws (this session's)
                tmp.write_text(json.dumps({"palette_drift": palette_drift}) + "\n")
            if (out / "metrics.jsonl").exists():  # what came before: epoch 0's evaluation, a resumed run
                alarms = [a for row in read_log(out) if row["epoch"] < epoch for a in monitor.update(row)]
        first[0] = False
        for alarm in alarms + monitor.update({"epoch": epoch, **metrics}):
            console.print(f"[bold red]hacking alarm[/] {alarm.message}")
            if stop:
                raise HackingStop(alarm.message)

    return watch


def _run(recipe: str, cfg, out: Path, errors: tuple, stop_on_hacking: bool = False,
         palette_drift: float = 0.2) -> None:
    from ..align import recipe_train
    from ..align.common import CHECKPOINT

    main = int(os.environ.get("RANK", "0")) == 0
    if (out / CHECKPOINT).exists() and main:
        console.print(f"resuming from {out / CHECKPOINT}")
    # rm, trained on fixed pairs, counts optimiser steps and has no rewards to watch
    watch = _hacking_watch(cfg, out, stop_on_hacking, palette_drift) if hasattr(cfg, "reward") else None
    unit, total = ("epochs", cfg.train.epochs) if hasattr(cfg.train, "epochs") else ("steps", cfg.train.steps)
    with progress_bar(f"{recipe} {unit}", total) as advance:
        done = [None]

        def on_epoch(epoch: int, m: dict) -> None:
            if done[0] is None:  # the first report after a resume
                advance(epoch - 1)
            done[0] = epoch
            info = (f"reward {m['reward_mean']:.3f}" if "reward_mean" in m  # dpo and rm log no reward
                    else f"loss {m.get('loss', float('nan')):.4f}")
            if "eval/overall" in m:
                info += f"  eval {m['eval/overall']:.3f}"
            if "eval/accuracy" in m:
                info += f"  eval accuracy {m['eval/accuracy']:.3f}"
            advance(1, info=info)
            if watch:
                watch(epoch, m)

        try:
            weights = recipe_train(recipe)(cfg, out, on_epoch if main else None)
        except errors as e:
            fail(str(e))
        except HackingStop as e:
            console.print(f"stopped on a hacking alarm ({e}); the last checkpoint is in {out}")
            raise typer.Exit(3) from None
    if main:
        console.print(f"weights: {weights}\nmetrics: {out / 'metrics.jsonl'}  (tensorboard --logdir {out / 'tb'})")
        if recipe == "rm":
            console.print(f"(the preference reward with option preference.weights={weights}; copy them to "
                          f"src/rewardlab/world/data/preference.safetensors to ship)", soft_wrap=True)
