"""``rewardlab world ...``: the embedded ShapeWorld — verifier check, training, prompt sets."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from ..train_configs import ClipTrainConfig, TrainConfig
from .common import app, config_options, console, progress_bar, run_training

world_app = typer.Typer(help="ShapeWorld: the embedded world, its verifier and model.", no_args_is_help=True)
app.add_typer(world_app, name="world")


@world_app.command("verify-renders")
def verify_renders(
    per_tag: int = typer.Option(500, help="Random records rendered per tag."),
    size: int = typer.Option(32, help="Render resolution in pixels."),
    corrupt: bool = typer.Option(False, "--corrupt", help="Add Gaussian noise (σ=0.05) and JPEG (q=75)."),
    seed: int = typer.Option(0, help="Seed for records, layouts and corruption."),
):
    """Render random records, verify them, print per-tag accuracy of the verifier."""
    import numpy as np

    from ..world import render as R
    from ..world.prompts import compositions
    from ..world.records import TAGS
    from ..world.verify import verify

    table = Table("tag", "correct", "accuracy", title=f"verifier on {size}px renders"
                  + (" (noise σ=0.05 + JPEG q75)" if corrupt else ""))
    accs = []
    with progress_bar("verifying renders", per_tag * len(TAGS)) as advance:
        for t_i, tag in enumerate(TAGS):
            pool, ok = compositions(tag), 0
            rng = np.random.default_rng([seed, t_i])
            for _ in range(per_tag):
                rec = pool[rng.integers(len(pool))]
                img = R.render(R.sample_scene(rec, rng), size, rng)
                if corrupt:
                    img = R.corrupt(img, rng)
                ok += verify(img, rec).correct
                advance()
            accs.append(ok / per_tag)
            table.add_row(tag, f"{ok}/{per_tag}", f"{ok / per_tag:.4f}")
    console.print(table)
    print(f"verifier accuracy (min over tags): {min(accs):.4f}")


@world_app.command("train")
@config_options(TrainConfig)
def world_train(cfg: TrainConfig,
                out: Path = typer.Option(Path("runs/shapeworld"), help="Folder for checkpoints and exported weights.")):
    """Train the ShapeWorld model on the CPU; resumes from OUT/checkpoint.pt if present.

    Settings: the options below, a YAML file (--config configs/shapeworld.yaml) and KEY=VALUE overrides; the defaults are the shipped model's run."""
    from ..world.train import train

    run_training("training", cfg, out, lambda progress: train(cfg, out, progress=progress), "shapeworld.safetensors")


@world_app.command("train-clip")
@config_options(ClipTrainConfig)
def world_train_clip(cfg: ClipTrainConfig,
                     out: Path = typer.Option(Path("runs/shapeclip"), help="Folder for checkpoints and weights.")):
    """Train ShapeCLIP, the learned (hackable) ShapeWorld reward; resumes if OUT has a checkpoint."""
    from ..world.clip import train_clip

    run_training("training ShapeCLIP", cfg, out, lambda progress: train_clip(cfg, out, progress=progress),
                 "shapeclip.safetensors")


@world_app.command("prompts")
def world_prompts(out: Path = typer.Option(None, help="Folder (default: the package's data folder)."),
                  seed: int = typer.Option(0, help="Seed for the eval set's order.")):
    """Write the fixed prompt sets train.jsonl and eval.jsonl."""
    from ..world.prompts import PROMPT_DIR, build_prompt_sets
    from ..world.records import save_records

    out = out or PROMPT_DIR
    for name, recs in build_prompt_sets(seed).items():
        save_records(recs, Path(out) / f"{name}.jsonl")
        console.print(f"{name}: {len(recs)} records → {Path(out) / f'{name}.jsonl'}")
