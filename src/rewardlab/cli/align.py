"""``rewardlab train RECIPE``: the alignment recipes on one harness (``rewardlab.align``)."""

from __future__ import annotations

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
):
    """Fine-tune a generator with rewards: metrics.jsonl, TensorBoard (tb/), eval grids (grids/),
    checkpoint.pt and weights.safetensors land in the run folder. Multi-process: torchrun
    --nproc_per_node N $(which rewardlab) train ..."""
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
    _run(recipe, cfg, out, (ConfigError, CheckpointError, FloatingPointError, OSError))


def _run(recipe: str, cfg, out: Path, errors: tuple) -> None:
    import os

    from ..align import recipe_train
    from ..align.common import CHECKPOINT

    main = int(os.environ.get("RANK", "0")) == 0
    if (out / CHECKPOINT).exists() and main:
        console.print(f"resuming from {out / CHECKPOINT}")
    with progress_bar(f"{recipe} epochs", cfg.train.epochs) as advance:
        done = [None]

        def on_epoch(epoch: int, m: dict) -> None:
            if done[0] is None:  # the first report after a resume
                advance(epoch - 1)
            done[0] = epoch
            info = f"reward {m.get('reward_mean', float('nan')):.3f}"
            if "eval/overall" in m:
                info += f"  eval {m['eval/overall']:.3f}"
            advance(1, info=info)

        try:
            weights = recipe_train(recipe)(cfg, out, on_epoch if main else None)
        except errors as e:
            fail(str(e))
    if main:
        console.print(f"weights: {weights}\nmetrics: {out / 'metrics.jsonl'}  (tensorboard --logdir {out / 'tb'})")
