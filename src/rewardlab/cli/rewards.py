"""``rewardlab score``, ``rewardlab rewards ...`` and ``rewardlab rm ...``: rewards and preference data (reward
models are trained by ``rewardlab train rm``)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from .common import app, check_output_file, console, fail, progress_bar

rewards_app = typer.Typer(help="Reward models: list them.", no_args_is_help=True)
rm_app = typer.Typer(help="Preference datasets (a reward model is trained on one by `rewardlab train rm`).",
                     no_args_is_help=True)
app.add_typer(rm_app, name="rm")
app.add_typer(rewards_app, name="rewards")


@rewards_app.command("list")
def rewards_list():
    """Every registered reward with a one-line description."""
    from ..rewards import available

    table = Table("reward", "description")
    for name, desc in available().items():
        table.add_row(name, desc)
    console.print(table)


@rm_app.command("make-shapeworld")
def rm_make_shapeworld(
    out: Path = typer.Argument(..., help="Parquet file to write (prompt, image_a, image_b, label)."),
    pairs: int = typer.Option(20000, min=1, help="Number of pairs."),
    label_noise: float = typer.Option(0.1, min=0.0, max=0.5, help="Fraction of non-tie labels flipped."),
    tie_fraction: float = typer.Option(0.1, min=0.0, max=1.0,
                                       help="Fraction of pairs of two correct images (label 0.5)."),
    split: str = typer.Option("train", help="Prompt split: train, held_out or all."),
    seed: int = typer.Option(0, help="Seed."),
    from_model: bool = typer.Option(False, "--from-model", help="Pairs of the model's own samples (best vs worst "
                                    "of --samples per prompt, as the verifier ranks them) instead of ideal renders; "
                                    "what the dpo recipe trains on. --tie-fraction does not apply."),
    weights: Optional[Path] = typer.Option(None, help="--from-model: ShapeWorld weights (default: the shipped)."),
    samples: int = typer.Option(4, min=2, help="--from-model: samples per prompt."),
    steps: int = typer.Option(10, min=1, help="--from-model: sampling steps."),
    tags: str = typer.Option("", help="--from-model: only these tags' prompts, comma-separated (default: all)."),
):
    """A ShapeWorld preference dataset labelled by the verifier: correct vs near-miss renders, or
    (--from-model) the model's own samples."""
    from ..data.preferences import make_shapeworld_preferences, save_preferences

    if split not in ("train", "held_out", "all"):
        fail(f"unknown --split {split!r}; expected train, held_out or all")
    from ..world.records import TAGS

    tag_list = [t.strip() for t in tags.split(",") if t.strip()]
    if set(tag_list) - set(TAGS):
        fail(f"unknown --tags {', '.join(sorted(set(tag_list) - set(TAGS)))}; expected some of {', '.join(TAGS)}")
    check_output_file(out, (".parquet",))
    with progress_bar("sampling pairs" if from_model else "rendering pairs", pairs) as advance:
        if from_model:
            from ..align.pref_data import make_sample_preferences
            from ..generators import load_generator

            gen = load_generator("shapeworld" if weights is None else f"shapeworld:{weights}")
            rows = make_sample_preferences(gen, pairs, label_noise, samples_per_prompt=samples, steps=steps,
                                           split=split, seed=seed, progress=advance,
                                           tags=tag_list or None)
        else:
            rows = make_shapeworld_preferences(pairs, label_noise, tie_fraction, split, seed, progress=advance)
    save_preferences(rows, out)
    console.print(f"wrote {pairs} pairs to {out}")


@rm_app.command("train", hidden=True, context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def rm_train(ctx: typer.Context, dataset: str = typer.Argument("DATASET")):
    """Moved: `rewardlab train rm` (kept so the old command says where to go)."""
    fail(f"`rewardlab rm train` moved to the training harness: rewardlab train rm --config "
         f"configs/rm_shapeworld.yaml -o RUN data.train={dataset}")


@app.command()
def score(
    paths: list[Path] = typer.Argument(..., help="Image files to score."),
    prompt: Optional[str] = typer.Option(None, help="One prompt for every image."),
    prompts_file: Optional[Path] = typer.Option(None, help="A UTF-8 text file with one prompt per image, in order."),
    reward: str = typer.Option("shapeworld", help="Comma-separated reward names (see `rewardlab rewards list`)."),
    out: Optional[Path] = typer.Option(None, help="Write scores to .csv or .jsonl."),
    batch_size: int = typer.Option(32, min=1, help="Images per reward call."),
    option: list[str] = typer.Option([], "--set", help="A reward's option, REWARD.KEY=VALUE (repeatable), "
                                     "e.g. --set vlm_judge.model=llava-hf/llava-1.5-7b-hf"),
):
    """Score images with one or more rewards; unreadable files are reported, never fatal."""
    from ..rewards import load
    from ..rewards.registry import parse_options
    from ..rewards.scoring import score_files, write_scores

    if (prompt is None) == (prompts_file is None):
        fail("give exactly one of --prompt or --prompts-file")
    prompts = [prompt] * len(paths) if prompt is not None else _read_prompts(prompts_file)
    if len(prompts) != len(paths):
        fail(f"{len(paths)} images but {len(prompts)} prompts in {prompts_file}")
    if out:
        check_output_file(out, (".csv", ".jsonl"))
    names = [name.strip() for name in reward.split(",") if name.strip()]
    if not names:
        fail(f"--reward {reward!r} names no reward; see `rewardlab rewards list`")
    try:
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


def _read_prompts(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        fail(f"--prompts-file {path} is not UTF-8 text (byte {e.start}: {e.reason})")
    except OSError as e:
        fail(f"cannot read --prompts-file {path}: {e.strerror or e}")


def _fmt(v) -> str:
    return "—" if v is None else f"{v:.4f}"
