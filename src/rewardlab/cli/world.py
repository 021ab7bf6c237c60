"""``rewardlab world ...``: the embedded ShapeWorld — verifier check, training, prompt sets."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from .common import app, console, positive_finite, progress_bar, run_training

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
def world_train(
    out: Path = typer.Option(Path("runs/shapeworld"), help="Folder for checkpoints and exported weights."),
    steps: int = typer.Option(2400, min=1, help="Total optimiser steps (rerun to resume)."),
    batch_size: int = typer.Option(64, min=1, help="Images per step."),
    lr: float = typer.Option(6e-4, callback=positive_finite, help="Peak learning rate."),
    seed: int = typer.Option(0, help="Seed for weights, prompts, renders and noise."),
    checkpoint_every: int = typer.Option(100, min=1, help="Steps between (atomic) checkpoints."),
):
    """Train the ShapeWorld model on the CPU; resumes from OUT/checkpoint.pt if present."""
    from ..world.train import TrainConfig, train

    cfg = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, seed=seed, checkpoint_every=checkpoint_every)
    run_training("training", cfg, out, lambda progress: train(cfg, out, progress=progress), "shapeworld.safetensors")


@world_app.command("train-clip")
def world_train_clip(
    out: Path = typer.Option(Path("runs/shapeclip"), help="Folder for checkpoints and weights."),
    steps: int = typer.Option(2000, min=1, help="Total optimiser steps (rerun to resume)."),
    batch_size: int = typer.Option(128, min=1, help="Images per step (plus as many near-miss captions)."),
    lr: float = typer.Option(1e-3, callback=positive_finite, help="Peak learning rate."),
    seed: int = typer.Option(0, help="Seed for weights, prompts and renders."),
    checkpoint_every: int = typer.Option(100, min=1, help="Steps between (atomic) checkpoints."),
):
    """Train ShapeCLIP, the learned (hackable) ShapeWorld reward; resumes if OUT has a checkpoint."""
    from ..world.clip import ClipTrainConfig, train_clip

    cfg = ClipTrainConfig(steps=steps, batch_size=batch_size, lr=lr, seed=seed, checkpoint_every=checkpoint_every)
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
