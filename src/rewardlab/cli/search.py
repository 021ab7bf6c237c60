"""``rewardlab search``: one prompt, one method, a budget; the ranked candidates and a JSON trace."""

from __future__ import annotations

import ast
import inspect
import json
from pathlib import Path
from typing import List

import typer

from .common import SampleConfig, app, check_output_dir, config_options, console, fail, load_sampler, progress_bar
from .evaluate import load_judge


def method_options(method: str, items: list[str]) -> dict:
    """``--opt KEY=VALUE`` items checked against the method's keyword arguments; values are
    Python literals (``0.3``, ``0.3,0.5``, ``True``) or plain words (``diff``); a lone number
    for an option that takes several (``checks``, ``schedule``) becomes a one-element tuple."""
    from ..search import METHODS

    params = {k: p for k, p in inspect.signature(inspect.unwrap(METHODS[method])).parameters.items()
              if k not in ("s", "rewriter")}
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            fail(f"--opt {item!r} is not KEY=VALUE")
        if key not in params:
            fail(f"{method} has no option {key!r}; its options: {', '.join(params)}")
        try:
            parsed = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            parsed = value
        if isinstance(params[key].default, tuple) and not isinstance(parsed, (tuple, list)):
            parsed = (parsed,)
        out[key] = parsed
    return out


@app.command()
@config_options(SampleConfig, files=False)
def search(
    cfg: SampleConfig,
    prompt: str = typer.Argument(..., help="The prompt to search for; for ShapeWorld e.g. 'a photo of a circle "
                                           "left of a square'."),
    method: str = typer.Option("best_of_n", help="best_of_n, noise_opt, evolutionary, prune, smc or prompt_search."),
    budget: float = typer.Option(4.0, min=1, help="Budget in single samples (a sample = --steps network passes, "
                                                   "twice that with guidance)."),
    reward: str = typer.Option("shapeworld", help="The reward to search with (see `rewardlab rewards list`); "
                                                  "ShapeWorld's verifier scores partial credit."),
    option: List[str] = typer.Option([], "--set", help="A reward or monitor option, REWARD.KEY=VALUE (repeatable)."),
    opt: List[str] = typer.Option([], "--opt", help="A method option, KEY=VALUE (repeatable), e.g. --opt lam=5 "
                                                    "for smc; a wrong key lists the method's options."),
    seed: int = typer.Option(0, min=0, max=2**31 - 1, help="Candidate k starts from seed + k."),
    out: Path = typer.Option(Path("search_out"), "-o", "--out", help="Folder for best.png, the ranked "
                                                                    "candidates and trace.json."),
    overwrite: bool = typer.Option(False, help="Replace an earlier search's files in --out."),
    monitor: List[str] = typer.Option([], "--monitor", help="A reward only logged per scoring round, never "
                                      "searched with (repeatable): the gold signal `rewardlab report` watches "
                                      "for hacking."),
):
    """Search for the image a reward likes best at a fixed budget (test-time scaling)."""
    from ..generators.base import check_prompts
    from ..images import save_png, to_uint8
    from ..search import METHODS, nfe_per_sample
    from ..search import search as run_search
    from ..world.records import RecordError, parse_prompt

    if method not in METHODS:
        fail(f"unknown search method {method!r}; expected one of: {', '.join(METHODS)}")
    try:
        check_prompts([prompt])
        record = parse_prompt(prompt)
    except RecordError as e:
        if cfg.generator.partition(":")[0] == "shapeworld":
            fail(str(e))
        record = None
    except ValueError as e:
        fail(str(e))
    options = method_options(method, opt)
    check_output_dir(out)
    if (out / "trace.json").exists() and not overwrite:
        fail(f"{out} holds an earlier search; pass --overwrite to replace it")
    judge, monitors = _load_rewards(reward, monitor, option)
    if method == "noise_opt" and not judge.differentiable:
        fail(f"noise_opt needs a differentiable reward; {reward!r} is not (try shapeclip, or another method)")
    gen, _ = load_sampler(cfg)
    guidance = gen.default_guidance if cfg.guidance is None else cfg.guidance
    with progress_bar(f"{method}: network passes", int(budget * nfe_per_sample(cfg.steps, guidance) + 1e-6)) as advance:
        state = {"seen": 0}

        def progress(nfe: int, limit: int) -> None:
            advance(nfe - state["seen"])
            state["seen"] = nfe

        try:
            res = run_search(method, gen, judge, [prompt], budget, seed, steps=cfg.steps, guidance=cfg.guidance,
                             metadata=None if record is None else [record], keep_candidates=True,
                             progress=progress, monitors=monitors or None, **options)
        except (ValueError, TypeError) as e:  # a bad option value (TypeError: e.g. a word where a number goes)
            fail(f"{method}: {e}")
    write(res, out, save_png, to_uint8)
    console.print(f"best score {float(res.scores[0]):.4g} ({res.nfe} of {res.budget_nfe} NFEs, "
                  f"{res.reward_calls} reward calls, {res.seconds:.1f} s); wrote {out}/best.png, "
                  f"{out}/candidates/ and {out}/trace.json")


def _load_rewards(reward: str, monitors: list[str], option: list[str]):
    """The search reward and the monitors, each with its own ``--set NAME.KEY=VALUE`` options."""
    from ..rewards.registry import parse_options

    try:
        options = parse_options(option)
    except ValueError as e:
        fail(str(e))
    unknown = sorted(set(options) - {reward, *monitors})
    if unknown:
        fail(f"--set names rewards that are neither --reward nor --monitor: {', '.join(unknown)}")
    own = lambda name: [o for o in option if o.partition("=")[0].rpartition(".")[0] == name]  # noqa: E731
    return load_judge(reward, own(reward)), {name: load_judge(name, own(name)) for name in monitors}


def write(res, out: Path, save_png, to_uint8) -> None:
    """best.png, candidates/rank_KKK.png (best first) and trace.json."""
    cand = out / "candidates"
    cand.mkdir(parents=True, exist_ok=True)
    for old in cand.glob("rank_*.png"):
        old.unlink()
    save_png(to_uint8(res.images)[0], out / "best.png", scale=4)
    scores, images = res.candidates[0], res.candidate_images[0]
    ranked = sorted(range(len(scores)), key=lambda k: -scores[k])
    for rank, k in enumerate(ranked):
        save_png(to_uint8(images[k:k + 1])[0], cand / f"rank_{rank:03d}.png", scale=4)
    summary = res.summary()
    summary["prompts"][0]["ranked"] = [{"file": f"candidates/rank_{r:03d}.png", "score": scores[k]}
                                       for r, k in enumerate(ranked)]
    (out / "trace.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
