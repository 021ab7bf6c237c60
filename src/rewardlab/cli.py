"""The ``rewardlab`` command line (typer); every option shows its default in ``--help``."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

app = typer.Typer(help="rewardlab: reward-driven image generation.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
world_app = typer.Typer(help="ShapeWorld: the embedded world, its verifier and model.", no_args_is_help=True)
eval_app = typer.Typer(help="Evaluate generators (GenEval-compatible).", no_args_is_help=True)
rewards_app = typer.Typer(help="Reward models: list them.", no_args_is_help=True)
rm_app = typer.Typer(help="Preference datasets and Bradley-Terry reward models.", no_args_is_help=True)
app.add_typer(rm_app, name="rm")
app.add_typer(world_app, name="world")
app.add_typer(eval_app, name="eval")
app.add_typer(rewards_app, name="rewards")
console = Console()

DEFAULT_STEPS, DEFAULT_GUIDANCE = 20, 3.0


@contextlib.contextmanager
def progress_bar(description: str, total: int):
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), TextColumn("{task.fields[info]}"), console=console,
                  transient=False) as prog:
        task = prog.add_task(description, total=total, info="")
        yield lambda n=1, info="": prog.update(task, advance=n, info=info)


def step_progress(advance):
    """A ``(step, loss)`` callback for trainers that moves the bar to ``step`` (so a resumed
    run starts where its checkpoint left off)."""
    done = [0]

    def on_step(step: int, loss: float) -> None:
        advance(step - done[0], info=f"loss {loss:.4f}")
        done[0] = step

    return on_step


def fail(message: str) -> None:
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(2)


@app.command()
def generate(
    prompt: str = typer.Argument(..., help="A ShapeWorld prompt, e.g. 'a photo of two red circles'."),
    out: Path = typer.Option(Path("out.png"), "-o", "--out", help="PNG to write."),
    seed: int = typer.Option(0, help="Seed of the first image; image i uses seed + i."),
    n: int = typer.Option(1, "-n", help="Number of images (tiled into one grid when > 1)."),
    steps: int = typer.Option(DEFAULT_STEPS, help="Sampling steps."),
    guidance: float = typer.Option(DEFAULT_GUIDANCE, help="Classifier-free guidance scale."),
    scale: int = typer.Option(4, help="Nearest-neighbour upscaling of the saved PNG."),
    weights: Optional[Path] = typer.Option(None, help="Model weights (default: the shipped model)."),
    check: bool = typer.Option(True, help="Verify each image against the prompt and print the verdict."),
):
    """Generate images with the embedded ShapeWorld model."""
    from .images import grid, save_png
    from .world.records import RecordError, parse_prompt
    from .world.sample import sample_fn
    from .world.verify import verify

    try:
        record = parse_prompt(prompt)
    except RecordError as e:
        fail(str(e))
    if n < 1 or steps < 1:
        fail("-n and --steps must be at least 1")
    try:
        fn = sample_fn(weights, steps=steps, guidance=guidance)
    except (FileNotFoundError, ValueError) as e:
        fail(str(e))
    images = fn([record["prompt"]] * n, [seed + i for i in range(n)])
    save_png(images[0] if n == 1 else grid(images, min(n, 8)), out, scale=scale)
    if check:
        for i, img in enumerate(images):
            v = verify(img, record)
            console.print(f"seed {seed + i}: {'correct' if v.correct else 'incorrect'} "
                          f"(partial credit {v.score:.2f}){' — ' + v.reason if v.reason else ''}")
    console.print(f"wrote {out}")


@world_app.command("verify-renders")
def verify_renders(
    per_tag: int = typer.Option(500, help="Random records rendered per tag."),
    size: int = typer.Option(32, help="Render resolution in pixels."),
    corrupt: bool = typer.Option(False, "--corrupt", help="Add Gaussian noise (σ=0.05) and JPEG (q=75)."),
    seed: int = typer.Option(0, help="Seed for records, layouts and corruption."),
):
    """Render random records, verify them, print per-tag accuracy of the verifier."""
    import numpy as np

    from .world import render as R
    from .world.prompts import compositions
    from .world.records import TAGS
    from .world.verify import verify

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
    steps: int = typer.Option(2400, help="Total optimiser steps (rerun to resume)."),
    batch_size: int = typer.Option(64, help="Images per step."),
    lr: float = typer.Option(6e-4, help="Peak learning rate."),
    seed: int = typer.Option(0, help="Seed for weights, prompts, renders and noise."),
    checkpoint_every: int = typer.Option(100, help="Steps between (atomic) checkpoints."),
):
    """Train the ShapeWorld model on the CPU; resumes from OUT/checkpoint.pt if present."""
    from .world.train import TrainConfig, train

    cfg = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, seed=seed, checkpoint_every=checkpoint_every)
    with progress_bar("training", steps) as advance:
        path = train(cfg, out, progress=step_progress(advance))
    console.print(f"weights: {path}  (copy to src/rewardlab/world/data/shapeworld.safetensors to ship)")


@world_app.command("train-clip")
def world_train_clip(
    out: Path = typer.Option(Path("runs/shapeclip"), help="Folder for checkpoints and weights."),
    steps: int = typer.Option(2000, help="Total optimiser steps (rerun to resume)."),
    batch_size: int = typer.Option(128, help="Images per step (plus as many near-miss captions)."),
    lr: float = typer.Option(1e-3, help="Peak learning rate."),
    seed: int = typer.Option(0, help="Seed for weights, prompts and renders."),
):
    """Train ShapeCLIP, the learned (hackable) ShapeWorld reward; resumes if OUT has a checkpoint."""
    from .world.clip import ClipTrainConfig, train_clip

    cfg = ClipTrainConfig(steps=steps, batch_size=batch_size, lr=lr, seed=seed)
    with progress_bar("training ShapeCLIP", steps) as advance:
        path = train_clip(cfg, out, progress=step_progress(advance))
    console.print(f"weights: {path}  (copy to src/rewardlab/world/data/shapeclip.safetensors to ship)")


@world_app.command("prompts")
def world_prompts(out: Path = typer.Option(None, help="Folder (default: the package's data folder)."),
                  seed: int = typer.Option(0, help="Seed for the eval set's order.")):
    """Write the fixed prompt sets train.jsonl and eval.jsonl."""
    from .world.prompts import PROMPT_DIR, build_prompt_sets
    from .world.records import save_records

    out = out or PROMPT_DIR
    for name, recs in build_prompt_sets(seed).items():
        save_records(recs, Path(out) / f"{name}.jsonl")
        console.print(f"{name}: {len(recs)} records → {Path(out) / f'{name}.jsonl'}")


def _resolve_prompts(prompts: str) -> Path:
    from .world.prompts import prompt_set_path

    return Path(prompts) if Path(prompts).exists() else prompt_set_path(prompts)


@eval_app.command("geneval")
def eval_geneval(
    generator: str = typer.Option("shapeworld", help="Generator to evaluate (shapeworld)."),
    prompts: str = typer.Option("eval", help="GenEval metadata JSONL, or a shipped set: eval, train."),
    images_per_prompt: int = typer.Option(4, help="Images per prompt."),
    out: Path = typer.Option(Path("outputs/geneval"), help="Output folder (GenEval layout)."),
    steps: int = typer.Option(DEFAULT_STEPS, help="Sampling steps."),
    guidance: float = typer.Option(DEFAULT_GUIDANCE, help="Classifier-free guidance scale."),
    seed: int = typer.Option(0, help="Base seed; every image gets its own."),
    limit: int = typer.Option(0, help="Use only the first N records per tag (0 = all)."),
    weights: Optional[Path] = typer.Option(None, help="Model weights (default: the shipped model)."),
):
    """Generate for every prompt, verify, write GenEval's layout and print its summary."""
    from .eval.geneval import first_per_tag, format_summary, held_out_split, run_geneval, summarize
    from .world.records import RecordError, load_records
    from .world.sample import sample_fn

    if generator != "shapeworld":
        fail(f"unknown generator {generator!r}; available: shapeworld")
    try:
        records = load_records(_resolve_prompts(prompts))
        fn = sample_fn(weights, steps=steps, guidance=guidance)
    except (RecordError, FileNotFoundError, ValueError) as e:
        fail(str(e))
    if limit:
        records = first_per_tag(records, limit)
    with progress_bar("generating + verifying", len(records) * images_per_prompt) as advance:
        results = run_geneval(fn, records, images_per_prompt, out, seed=seed, progress=advance)
    print(format_summary(summarize(results)))
    for name, (acc, n) in held_out_split(results).items():
        console.print(f"position+color_attr, {name} compositions: {acc:.2%} of {n} images")
    console.print(f"images and results.jsonl in {out}")


@eval_app.command("geneval-summary")
def eval_geneval_summary(results: Path = typer.Argument(..., help="A GenEval-format results.jsonl.")):
    """Print GenEval's summary (same arithmetic as summary_scores.py) for a results file."""
    from .eval.geneval import format_summary, load_results, summarize

    try:
        print(format_summary(summarize(load_results(results))))
    except (OSError, ValueError) as e:
        fail(str(e))


@rewards_app.command("list")
def rewards_list():
    """Every registered reward with a one-line description."""
    from .rewards import available

    table = Table("reward", "description")
    for name, desc in available().items():
        table.add_row(name, desc)
    console.print(table)


@rm_app.command("make-shapeworld")
def rm_make_shapeworld(
    out: Path = typer.Argument(..., help="Parquet file to write (prompt, image_a, image_b, label)."),
    pairs: int = typer.Option(20000, help="Number of pairs."),
    label_noise: float = typer.Option(0.1, help="Fraction of non-tie labels flipped."),
    tie_fraction: float = typer.Option(0.1, help="Fraction of pairs of two correct images (label 0.5)."),
    split: str = typer.Option("train", help="Prompt split: train, held_out or all."),
    seed: int = typer.Option(0, help="Seed."),
):
    """A ShapeWorld preference dataset labelled by the verifier (correct vs near-miss renders)."""
    from .data.preferences import make_shapeworld_preferences, save_preferences

    rows = make_shapeworld_preferences(pairs, label_noise, tie_fraction, split, seed)
    save_preferences(rows, out)
    console.print(f"wrote {pairs} pairs to {out}")


@rm_app.command("train")
def rm_train(
    dataset: Path = typer.Argument(..., help="Preference parquet (prompt, image_a, image_b, label)."),
    out: Path = typer.Option(Path("runs/preference"), help="Folder for checkpoints and weights."),
    steps: int = typer.Option(600, help="Total optimiser steps (rerun to resume)."),
    batch_size: int = typer.Option(64, help="Pairs per step."),
    lr: float = typer.Option(1e-3, help="Learning rate."),
    seed: int = typer.Option(0, help="Seed."),
):
    """Train a Bradley-Terry reward model (ShapeCLIP architecture) on a preference dataset."""
    from .data.preferences import load_preferences
    from .rewards.preference import RMTrainConfig, train_rm

    try:
        rows = load_preferences(dataset)
    except ValueError as e:
        fail(str(e))
    cfg = RMTrainConfig(steps=steps, batch_size=batch_size, lr=lr, seed=seed)
    with progress_bar("training reward model", steps) as advance:
        path = train_rm(rows, cfg, out, progress=step_progress(advance))
    console.print(f"weights: {path}  (copy to src/rewardlab/world/data/preference.safetensors to ship)")


@app.command()
def score(
    paths: list[Path] = typer.Argument(..., help="Image files to score."),
    prompt: Optional[str] = typer.Option(None, help="One prompt for every image."),
    prompts_file: Optional[Path] = typer.Option(None, help="A text file with one prompt per image, in order."),
    reward: str = typer.Option("shapeworld", help="Comma-separated reward names (see `rewardlab rewards list`)."),
    out: Optional[Path] = typer.Option(None, help="Write scores to .csv or .jsonl."),
    batch_size: int = typer.Option(32, help="Images per reward call."),
    option: list[str] = typer.Option([], "--set", help="A reward's option, REWARD.KEY=VALUE (repeatable), "
                                     "e.g. --set vlm_judge.model=llava-hf/llava-1.5-7b-hf"),
):
    """Score images with one or more rewards; unreadable files are reported, never fatal."""
    from .rewards import load
    from .rewards.registry import parse_options
    from .rewards.scoring import score_files, write_scores

    if (prompt is None) == (prompts_file is None):
        fail("give exactly one of --prompt or --prompts-file")
    prompts = [prompt] * len(paths) if prompt is not None else prompts_file.read_text().splitlines()
    if len(prompts) != len(paths):
        fail(f"{len(paths)} images but {len(prompts)} prompts in {prompts_file}")
    if out and out.suffix not in (".csv", ".jsonl"):
        fail(f"--out must end in .csv or .jsonl, got {out.name}")
    try:
        names = [name.strip() for name in reward.split(",") if name.strip()]
        options = parse_options(option)
        if set(options) - set(names):
            raise ValueError(f"--set names rewards not in --reward: {', '.join(sorted(set(options) - set(names)))}")
        rewards = [load(name, **options.get(name, {})) for name in names]
    except (KeyError, ValueError, FileNotFoundError) as e:
        fail(str(e).strip("'\""))
    with progress_bar("scoring", len(paths)) as advance:
        rows = score_files(paths, prompts, rewards, batch_size, progress=advance)
    table = Table("file", *[r.name for r in rewards], "error")
    for row in rows:
        table.add_row(row["file"], *[_fmt(row.get(r.name)) for r in rewards], row.get("error", ""))
    console.print(table)
    if out:
        write_scores(rows, out)
        console.print(f"wrote {out}")


def _fmt(v) -> str:
    return "—" if v is None else f"{v:.4f}"


DEMO_PROMPTS = ["a photo of a circle", "a photo of two red circles", "a photo of a blue square",
                "a photo of a triangle left of a square", "a photo of a red circle and a blue square",
                "a photo of three triangles"]


@app.command()
def demo(out: Path = typer.Option(Path("outputs/demo"), help="Folder for the grid and evaluation."),
         per_tag: int = typer.Option(12, help="Eval records per tag for the quick GenEval table."),
         images_per_prompt: int = typer.Option(2, help="Images per eval record.")):
    """The main job on the embedded default: a sample grid and the base GenEval-style table."""
    from .eval.geneval import first_per_tag, format_summary, run_geneval, summarize
    from .images import grid, save_png
    from .world.prompts import prompt_set_path
    from .world.records import load_records
    from .world.sample import sample_fn

    fn = sample_fn(None, steps=DEFAULT_STEPS, guidance=DEFAULT_GUIDANCE)
    prompts = [p for p in DEMO_PROMPTS for _ in range(8)]
    images = fn(prompts, list(range(len(prompts))))
    save_png(grid(images, 8), out / "grid.png", scale=4)
    console.print(f"sample grid (rows: {'; '.join(DEMO_PROMPTS)}) → {out / 'grid.png'}")
    records = first_per_tag(load_records(prompt_set_path("eval")), per_tag)
    with progress_bar("base GenEval-style eval", len(records) * images_per_prompt) as advance:
        results = run_geneval(fn, records, images_per_prompt, out / "geneval", progress=advance)
    print(format_summary(summarize(results)))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
