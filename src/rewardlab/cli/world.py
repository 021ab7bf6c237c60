"""``rewardlab world ...``: the embedded ShapeWorld — verifier check, training, prompt sets."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from ..train_configs import ClipTrainConfig, TrainConfig
from .common import app, check_output_dir, config_options, console, progress_bar, run_training

world_app = typer.Typer(help="ShapeWorld: the embedded world, its verifier and model.", no_args_is_help=True)
app.add_typer(world_app, name="world")


@world_app.command("verify-renders")
def verify_renders(
    per_tag: int = typer.Option(500, min=1, help="Random records rendered per tag (and per kind)."),
    size: int = typer.Option(32, min=8, max=1024, help="Render resolution in pixels."),
    corrupt: bool = typer.Option(False, "--corrupt", help="Add Gaussian noise (σ=0.05) and JPEG (q=75)."),
    adversarial: bool = typer.Option(False, "--adversarial", help="Instead, images that are not scenes "
                                     "(noise, blobs, scribbles, clutter, cut or fused shapes, ...): the "
                                     "share the verifier wrongly accepts, per kind and tag (target ≤ 1%)."),
    seed: int = typer.Option(0, help="Seed for records, layouts and corruption."),
):
    """Render random records, verify them, print per-tag accuracy of the verifier."""
    from ..world.adversarial import KINDS, accepted
    from ..world.records import TAGS

    kinds = list(KINDS) if adversarial else ["corrupted" if corrupt else "clean"]
    title = (f"share of non-scenes accepted at {size}px" if adversarial else f"verifier on {size}px renders"
             + (" (noise σ=0.05 + JPEG q75)" if corrupt else ""))
    short = {"single_object": "single", "two_object": "two", "color_attr": "attr"}
    table = Table("kind", *(short.get(t, t) for t in TAGS), "all", title=title)
    rates = []
    with progress_bar("verifying", per_tag * len(TAGS) * len(kinds)) as advance:
        for kind in kinds:
            row = []
            for tag in TAGS:
                row.append(accepted(kind, tag, per_tag, size, seed))
                advance(per_tag)
            rates.append(row)
            table.add_row(kind, *(f"{r:.3f}" for r in row), f"{sum(row) / len(row):.4f}")
    console.print(table)
    if adversarial:
        print(f"accepted (max over kinds and tags): {max(max(r) for r in rates):.4f}")
    else:
        print(f"verifier accuracy (min over tags): {min(rates[0]):.4f}")


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

    out = Path(out or PROMPT_DIR)
    check_output_dir(out)
    for name, recs in build_prompt_sets(seed).items():
        save_records(recs, Path(out) / f"{name}.jsonl")
        console.print(f"{name}: {len(recs)} records → {Path(out) / f'{name}.jsonl'}")
