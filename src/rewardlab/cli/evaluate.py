"""``rewardlab eval ...``: GenEval-compatible evaluation."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from .common import (SampleConfig, app, check_output_dir, check_output_file, config_options, console, fail, finite,
                     load_sampler, progress_bar)

eval_app = typer.Typer(help="Evaluate generators (GenEval-compatible) and judges (reward models).", no_args_is_help=True)
app.add_typer(eval_app, name="eval")


def _resolve_prompts(prompts: str) -> Path:
    from ..world.prompts import prompt_set_path

    return Path(prompts) if Path(prompts).exists() else prompt_set_path(prompts)


@eval_app.command("geneval")
@config_options(SampleConfig, files=False)
def eval_geneval(
    cfg: SampleConfig,
    prompts: str = typer.Option("eval", help="GenEval metadata JSONL, or a shipped set: eval, train."),
    images_per_prompt: int = typer.Option(4, min=1, help="Images per prompt."),
    out: Path = typer.Option(Path("outputs/geneval"), help="Output folder (GenEval layout)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the GenEval output of an earlier run in OUT."),
    seed: int = typer.Option(0, min=0, max=100_000, help="Base seed; every image gets its own."),
    limit: int = typer.Option(0, min=0, help="Use only the first N records per tag (0 = all)."),
    judge: str = typer.Option("shapeworld", help="The reward that judges each image (see `rewardlab rewards list`)."),
    option: list[str] = typer.Option([], "--set", help="A judge option, JUDGE.KEY=VALUE (repeatable), "
                                     "e.g. --set vlm_judge.model=DIR"),
    threshold: float = typer.Option(0.5, callback=finite, help="For a judge without a binary verdict (all but "
                                    "shapeworld and geneval): an image is correct when its score is at least this."),
):
    """Generate for every prompt, judge each image, write GenEval's layout and print its summary."""
    from ..eval.geneval import clear_output, format_summary, held_out_split, run_geneval, summarize
    from ..eval.geneval_real import load_geneval_records
    from ..world.records import RecordError, first_per_tag, load_records

    read = load_geneval_records if judge == "geneval" else load_records  # real images: any (COCO) classes
    try:
        records = read(_resolve_prompts(prompts))
    except (RecordError, OSError) as e:
        fail(str(e))
    earlier = prepare_geneval_output(out, overwrite)
    reward = load_judge(judge, option)
    _, sample = load_sampler(cfg)
    if limit:
        records = first_per_tag(records, limit)
    clear_output(earlier)  # only now: every check has passed
    with progress_bar(f"generating + judging ({reward.name})", len(records) * images_per_prompt) as advance:
        results = run_geneval(sample, reward, records, images_per_prompt, out, seed=seed, threshold=threshold,
                              progress=advance)
    print(format_summary(summarize(results)))
    for name, (acc, n) in held_out_split(results).items():
        console.print(f"position+color_attr, {name} compositions: {acc:.2%} of {n} images")
    console.print(f"images and results.jsonl in {out}")


def load_judge(name: str, options: list[str]):
    """The judge reward ``name`` with its ``--set JUDGE.KEY=VALUE`` options; the ShapeWorld
    verifier and GenEval's real-image judge score partial credit (their verdict decides what is
    correct)."""
    from ..rewards import load
    from ..rewards.registry import parse_options

    try:
        parsed = parse_options(options)
        if set(parsed) - {name}:
            raise ValueError(f"--set names rewards other than the judge {name!r}: "
                             f"{', '.join(sorted(set(parsed) - {name}))}")
        defaults = {"mode": "partial"} if name in ("shapeworld", "geneval") else {}
        return load(name, **{**defaults, **parsed.get(name, {})})
    except (KeyError, ValueError, FileNotFoundError) as e:
        fail(str(e).strip("'\""))


def prepare_geneval_output(out: Path, overwrite: bool) -> list[Path]:
    """Check a GenEval output folder before any work: writable, and not holding an earlier
    run's images (which GenEval's scorer would count with the new ones) unless ``overwrite``.
    Returns what to clear once every other check has passed."""
    from ..eval.geneval import earlier_output

    check_output_dir(out)
    try:
        earlier = earlier_output(out)
    except ValueError as e:
        fail(str(e))
    if earlier and not overwrite:
        fail(f"{out} already holds GenEval output from an earlier run; pass --overwrite to replace it "
             f"or choose another --out")
    return earlier


@eval_app.command("geneval-summary")
def eval_geneval_summary(results: Path = typer.Argument(..., help="A GenEval-format results.jsonl.")):
    """Print GenEval's summary (same arithmetic as summary_scores.py) for a results file."""
    from ..eval.geneval import format_summary, load_results, summarize

    try:
        print(format_summary(summarize(load_results(results))))
    except (OSError, ValueError) as e:
        fail(str(e))


@eval_app.command("judge")
def eval_judge(
    dataset: Path = typer.Argument(..., help="Judge benchmark file: Pick-a-Pic parquet, HPDv2 or ImageRewardDB "
                                   "test.json, MJ-Bench parquet/jsonl, or a preference parquet."),
    reward: str = typer.Option(..., help="The reward to judge with (see `rewardlab rewards list`)."),
    format: Optional[str] = typer.Option(None, "--format", help="pickapic, hpdv2, imagereward, mjbench or "
                                         "preference (default: detected from the columns)."),
    images: Optional[Path] = typer.Option(None, help="Folder the dataset's image paths are relative to "
                                          "(default: the dataset file's folder)."),
    val: Optional[Path] = typer.Option(None, help="A validation file of the same format: the tie threshold τ is "
                                       "chosen on it (else τ = 0)."),
    option: list[str] = typer.Option([], "--set", help="A reward option, REWARD.KEY=VALUE (repeatable)."),
    batch_size: int = typer.Option(32, min=1, help="Images per reward call."),
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="Write the report as JSON here."),
):
    """Pairwise accuracy of a reward against a benchmark's verdicts, per category, with and
    without ties (PickScore's scoring), and Spearman's ρ where rankings are given. Missing
    images and malformed rows are counted and reported, never fatal."""
    import json

    from ..data.pref_formats import read_preference_set as read_judge_set
    from ..eval.judges import evaluate_judge

    if out:
        check_output_file(out, (".json",))
    try:
        data = read_judge_set(dataset, format, images)
        val_data = read_judge_set(val, data.format, images) if val else None
    except ValueError as e:
        fail(str(e))
    judge = load_judge(reward, option)
    with progress_bar(f"judging ({judge.name})", sum(len(i.images) for i in data.items)) as advance:
        try:
            report = evaluate_judge(judge, data, val_data, batch_size, progress=advance)
        except ValueError as e:  # RewardError: a judge that cannot read these prompts, a server that is down
            fail(f"{judge.name}: {e}")
    console.print(judge_table(report, judge.name))
    for reason, n in report["skipped"].items():
        console.print(f"skipped {n} item(s): {reason}")
    if out:
        from ..utils import atomic_path

        with atomic_path(out) as tmp:
            tmp.write_text(json.dumps(report, indent=1) + "\n")
        console.print(f"wrote {out}")


def judge_table(report: dict, name: str) -> Table:
    table = Table("category", "pairs", "tie labels", f"accuracy (τ={report['tau']:.3g})", "without ties",
                  title=f"{name} on {report['format']}: {report['scored']} of {report['items']} items scored"
                        + (f", Spearman ρ {report['spearman']:.3f}" if report["spearman"] is not None else ""))
    for cat, r in report["categories"].items():
        no_ties = "—" if r["accuracy_no_ties"] is None else f"{r['accuracy_no_ties']:.3f}"
        table.add_row(cat, str(r["pairs"]), str(r["tie_labels"]), f"{r['accuracy']:.3f}", no_ties)
    return table


@eval_app.command("make-judge-set")
def eval_make_judge_set(
    out: Path = typer.Argument(..., help="Parquet to write (MJ-Bench's columns)."),
    per_subcategory: int = typer.Option(100, min=1, help="Pairs per subcategory."),
    seed: int = typer.Option(0, help="Seed."),
):
    """The ShapeWorld judge benchmark: alignment (object, colour, count, position, binding),
    near misses and quality (noise, blur, JPEG at matched content), labels known exactly."""
    from ..eval.shapeworld_judges import make_shapeworld_judge_set, save_judge_set

    check_output_file(out, (".parquet",))
    rows = make_shapeworld_judge_set(per_subcategory, seed)
    save_judge_set(rows, out)
    console.print(f"wrote {len(rows['caption'])} pairs to {out}")


@app.command("report")
def report(
    run: Path = typer.Argument(..., help="A run folder: from `rewardlab train`, `search` or `eval geneval`."),
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="HTML file to write (default: RUN/report.html)."),
):
    """One self-contained HTML report of a run: configuration, reward and gold curves, the
    hacking monitor's alarms, per-tag tables before/after, image grids or ranked candidates."""
    from ..eval.report import write_report

    if out:
        check_output_file(out, (".html",))
    try:
        path = write_report(run, out)
    except (ValueError, OSError) as e:
        fail(str(e))
    except (KeyError, TypeError, AttributeError) as e:  # a log or trace missing a field or holding another type
        fail(f"{run}: a malformed log or trace ({type(e).__name__}: {e})")
    console.print(f"wrote {path}")
