"""Does a reward make the ShapeWorld model better? Before/after GenEval-style tables of the
alignment recipes, beside a compute-matched supervised baseline.

    # 1. train (resumable; rerun the same command after an interruption)
    rewardlab train nft --config configs/nft_shapeworld.yaml -o runs/nft_shapeworld
    # 2. judge a run's weights on the whole eval split (4 images per prompt, as eval geneval)
    python benchmarks/align_shapeworld.py eval nft runs/nft_shapeworld
    # 3. the baseline: the same minutes of continued supervised training (world train, init=shipped)
    python benchmarks/align_shapeworld.py baseline --minutes M
    # 4. the table (benchmarks/results/align_shapeworld.{json,md}); --ship copies the best weights
    python benchmarks/align_shapeworld.py table [--ship]
    # 5. every run's config and metrics into results/, their periodic evals side by side
    python benchmarks/align_shapeworld.py logs runs/*

"before" is benchmarks/results/geneval_base.json (the shipped model, same settings);
train minutes are the runs' own epoch times (sampling + reward + update, periodic evals
excluded), from metrics.jsonl.
"""

import argparse
import json
import shutil
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
OUT = RESULTS / "align_shapeworld.json"
SHIPPED = RESULTS / "align_shapeworld_best.safetensors"
RECIPES = ("grpo", "nft", "backprop", "dpo", "online_dpo", "pref_grpo")


def geneval(weights: Path | None, out: Path, per_prompt: int = 4, compile: bool = False) -> dict:
    from rewardlab.eval.geneval import generator_sampler, held_out_split, run_geneval, summarize
    from rewardlab.generators import load_generator
    from rewardlab.generators.compiled import compile_no_grad
    from rewardlab.world.prompts import prompt_set_path
    from rewardlab.world.records import load_records

    gen = load_generator("shapeworld" if weights is None else f"shapeworld:{weights}")
    if compile:  # the same verdicts as eager, ~18% faster here (sampler_throughput.md)
        compile_no_grad(gen.denoiser)
    results = run_geneval(generator_sampler(gen), None, load_records(prompt_set_path("eval")), per_prompt, out)
    s = summarize(results)
    table = {t: round(acc, 4) for t, (acc, _, _) in s["tags"].items()}
    table["overall"] = round(s["overall"], 4)
    table["held_out"] = {k: round(a, 4) for k, (a, n) in held_out_split(results).items()}
    return table


def load() -> dict:
    return json.loads(OUT.read_text()) if OUT.exists() else {}


def save(data: dict) -> None:
    RESULTS.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(data, indent=2) + "\n")


def before(per_prompt: int = 4, out: Path = Path("outputs/align_shapeworld")) -> dict:
    """The shipped model's table at ``per_prompt`` images per eval prompt: geneval_base.json
    for 4 (eval geneval's setting); other counts are judged once and kept in the results."""
    if per_prompt == 4:
        base = json.loads((RESULTS / "geneval_base.json").read_text())["summary"]
        table = {t: round(v[0], 4) for t, v in base["tags"].items()}
        table["overall"] = round(base["overall"], 4)
        return table
    key = f"shipped_{per_prompt}_per_prompt"
    data = load()
    if key not in data:
        data[key] = geneval(None, out / key, per_prompt)
        save(data)
    return data[key]


def cmd_eval(args) -> None:
    run = Path(args.run)
    rows = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    trained = [r for r in rows if r["epoch"] > 0]
    minutes = sum(r["time/epoch"] for r in trained) / 60
    start = before(args.images_per_prompt, Path(args.out))
    if args.periodic:  # the run's own first and last evaluations (fewer images), not the whole eval split
        evals = [r for r in rows if "eval/overall" in r]
        first = evals[0]
        if args.before_run:  # the shipped model's epoch-0 eval: fixed records and seeds, the same in every run
            first = json.loads((Path(args.before_run) / "metrics.jsonl").read_text().splitlines()[0])
            assert first["epoch"] == 0 and "eval/overall" in first, f"{args.before_run} has no epoch-0 evaluation"
        start, after = ({k[5:]: round(v, 4) for k, v in r.items() if k.startswith("eval/")}
                        for r in (first, evals[-1]))
        after["evaluation"] = start["evaluation"] = (
            f"periodic evals (16 records per tag x 2 images) at epoch {first['epoch']} "
            f"{'of ' + Path(args.before_run).name + ' ' if args.before_run else ''}and {evals[-1]['epoch']}")
    else:
        after = geneval(run / "weights.safetensors", Path(args.out) / args.name, args.images_per_prompt, args.compile)
        if args.images_per_prompt != 4:
            after["evaluation"] = start["evaluation"] = (f"the whole eval split at {args.images_per_prompt} image(s) "
                                                         f"per prompt, before = the shipped model alike")
    data = load()
    data[args.name] = {"before": start, "after": after, "train_minutes": round(minutes, 1),
                       "rollouts": trained[-1]["rollouts"], "updates": trained[-1]["updates"],
                       "epochs": trained[-1]["epoch"], "run": str(run), "weights": str(run / "weights.safetensors"),
                       "config": str(run / "config.yaml")}
    save(data)
    print(json.dumps(data[args.name], indent=2))


def cmd_baseline(args) -> None:
    """Continued supervised training of the shipped model for ``--minutes``: the steps are set
    from a timed 20-step probe, then `world train` with init = the shipped weights. A run at
    another ``--t-location`` is kept beside the default one (``supervised_baseline_t1.5``)."""
    from rewardlab.config import load_config
    from rewardlab.train_configs import TrainConfig
    from rewardlab.world.model import WEIGHTS_PATH
    from rewardlab.world.train import train

    name = "supervised_baseline" + (f"_t{args.t_location:g}" if args.t_location else "")
    out = Path(args.out) / name
    over = {"init": str(WEIGHTS_PATH), "lr": args.lr, "warmup": 0, "ema_decay": 0.99, "checkpoint_every": 50,
            "t_location": args.t_location}
    probe = Path(args.out) / "baseline_probe"
    shutil.rmtree(probe, ignore_errors=True)
    t0 = time.perf_counter()
    train(load_config(TrainConfig, None, {**over, "steps": 20}), probe)
    per_step = (time.perf_counter() - t0) / 20
    steps = max(20, int(args.minutes * 60 / per_step))
    t0 = time.perf_counter()
    weights = train(load_config(TrainConfig, None, {**over, "steps": steps}), out)
    minutes = (time.perf_counter() - t0) / 60
    after = geneval(weights, Path(args.out) / f"{name}_eval")
    data = load()  # after the long evaluation: another command may have written meanwhile
    data[name] = {"before": before(), "after": after, "train_minutes": round(minutes, 1), "steps": steps,
                  "images_seen": steps * 64, "settings": over, "weights": str(weights)}
    save(data)
    print(json.dumps(data[name], indent=2))


def demo_grids(weights: Path) -> None:
    """The demo prompts (rows) × 8 seeds, before and after, at the library's sampling defaults."""
    from rewardlab.cli.run import DEMO_PROMPTS
    from rewardlab.generators import load_generator
    from rewardlab.generators.sampling import generate_images
    from rewardlab.images import grid, save_png, to_uint8

    prompts = [p for p in DEMO_PROMPTS for _ in range(8)]
    for name, spec in (("before", "shapeworld"), ("after", f"shapeworld:{weights}")):
        images = generate_images(load_generator(spec), prompts, list(range(len(prompts))))
        save_png(grid(to_uint8(images), 8), RESULTS / f"align_shapeworld_{name}.png", scale=3)


def cmd_table(args) -> None:
    data = load()
    recipes = [k for k in RECIPES if k in data]
    full = [k for k in recipes if "evaluation" not in data[k]["after"]]  # judged on the whole eval split
    best = max(full, key=lambda k: data[k]["after"]["overall"]) if full else None
    data["best"] = best
    if best and args.ship:
        shutil.copyfile(data[best]["weights"], SHIPPED)
        data["best_weights"] = str(SHIPPED.relative_to(Path(__file__).parent.parent))
        demo_grids(SHIPPED)
    save(data)
    tags = ["single_object", "two_object", "counting", "colors", "position", "color_attr", "overall"]
    lines = ["| run | minutes | rollouts | " + " | ".join(tags) + " |", "|---" * (len(tags) + 3) + "|",
             "| shipped model | — | — | " + " | ".join(f"{before()[t]:.3f}" for t in tags) + " |"]
    for k in recipes + sorted(k for k in data if k.startswith("supervised_baseline")):
        d = data[k]
        if "evaluation" in d["after"]:  # a run's own smaller eval: its start beside its end
            lines.append(f"| {k}, before ({d['after']['evaluation']}) | 0 | 0 | "
                         + " | ".join(f"{d['before'][t]:.3f}" for t in tags) + " |")
        lines.append(f"| {k} | {d['train_minutes']} | {d.get('rollouts', d.get('images_seen'))} | "
                     + " | ".join(f"{d['after'][t]:.3f}" for t in tags) + " |")
    text = "\n".join(lines)
    (RESULTS / "align_shapeworld.md").write_text(text + "\n")
    print(text)


def cmd_logs(args) -> None:
    """Copy each run's config.yaml and metrics.jsonl into results/align_shapeworld_runs/NAME and
    print the periodic held-out evaluations of every run kept there side by side: what each
    setting bought."""
    dest = RESULTS / "align_shapeworld_runs"
    for run in map(Path, args.runs):
        (dest / run.name).mkdir(parents=True, exist_ok=True)
        for f in ("config.yaml", "metrics.jsonl"):
            if (run / f).resolve() != (dest / run.name / f).resolve():  # a run already in results/ stays
                shutil.copyfile(run / f, dest / run.name / f)
    lines = ["| run | epoch | rollouts | minutes | single_object | colors | counting | position | color_attr | "
             "overall |", "|---" * 10 + "|"]
    tags = ["single_object", "colors", "counting", "position", "color_attr", "overall"]
    for run in sorted(p for p in dest.iterdir() if (p / "metrics.jsonl").exists()):
        minutes = 0.0
        for r in (json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines() if ln.strip()):
            minutes += r.get("time/epoch", 0) / 60
            if "eval/overall" in r:
                lines.append(f"| {run.name} | {r['epoch']} | {r.get('rollouts', 0)} | {minutes:.0f} | "
                             + " | ".join(f"{r['eval/' + t]:.3f}" for t in tags) + " |")
    text = "\n".join(lines)
    (RESULTS / "align_shapeworld_runs.md").write_text(
        "Periodic held-out evaluations during training (16 eval records per tag x 2 images: noisy, ±0.07 on a "
        "tag)\n\n" + text + "\n")
    print(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("eval", help="judge a run's weights on the whole eval split")
    e.add_argument("name", choices=RECIPES)
    e.add_argument("run")
    e.add_argument("--periodic", action="store_true", help="take the run's last periodic evaluation instead")
    e.add_argument("--before-run", help="--periodic: the shipped model's epoch-0 eval from this run (for a run "
                                        "resumed or started without one)")
    e.add_argument("--images-per-prompt", type=int, default=4, help="fewer images per eval prompt (faster, "
                                                                    "noisier), beside the shipped model's alike")
    e.add_argument("--compile", action="store_true", help="torch.compile the sampler (as eval geneval --compile)")
    b = sub.add_parser("baseline", help="continued supervised training for the same minutes")
    b.add_argument("--minutes", type=float, required=True)
    b.add_argument("--lr", type=float, default=6e-5, help="the shipped run's final learning rate")
    b.add_argument("--t-location", type=float, default=0.0, help="world train's t_location (0: the shipped run's)")
    t = sub.add_parser("table", help="write the table; --ship copies the best weights into results/")
    t.add_argument("--ship", action="store_true")
    g = sub.add_parser("logs", help="copy runs' configs and metrics into results/ and tabulate their evals")
    g.add_argument("runs", nargs="+")
    for p in (e, b):
        p.add_argument("--out", default="outputs/align_shapeworld")
    args = ap.parse_args()
    {"eval": cmd_eval, "baseline": cmd_baseline, "table": cmd_table, "logs": cmd_logs}[args.cmd](args)


if __name__ == "__main__":
    main()
