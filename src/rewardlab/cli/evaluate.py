"""``rewardlab eval ...``: GenEval-compatible evaluation."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .common import DEFAULT_GUIDANCE, DEFAULT_STEPS, app, console, fail, progress_bar

eval_app = typer.Typer(help="Evaluate generators (GenEval-compatible).", no_args_is_help=True)
app.add_typer(eval_app, name="eval")


def _resolve_prompts(prompts: str) -> Path:
    from ..world.prompts import prompt_set_path

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
    from ..eval.geneval import first_per_tag, format_summary, held_out_split, run_geneval, summarize
    from ..world.records import RecordError, load_records
    from ..world.sample import sample_fn

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
    from ..eval.geneval import format_summary, load_results, summarize

    try:
        print(format_summary(summarize(load_results(results))))
    except (OSError, ValueError) as e:
        fail(str(e))
