"""Test-time search on ShapeWorld at equal budgets: gold (verifier) accuracy per method,
searching with the verifier itself and with the hackable ``shapeclip`` proxy.

    python benchmarks/search_shapeworld.py run [--per-tag 16] [--methods ...] [--rewards ...]
    python benchmarks/search_shapeworld.py table

``run`` searches the first ``--per-tag`` records of each tag of the held-out eval split at
budgets 2, 4, 8, 16 single-sample equivalents (20 steps with guidance 3 = one) and saves
each row as soon as it is done (rerunning skips finished rows, so a killed run continues).
Every row judges the chosen images with both the verifier (binary: the gold accuracy,
GenEval's overall = mean of tag means) and shapeclip, so a proxy that rises while gold does
not is visible. ``best_of_n``'s rows at 2, 4 and 8 are read off its 16-candidate run: its
candidates are seeds 0..N-1 for every N, so best-of-N is exactly the best of the first N
(its seconds are those of the 16-candidate run scaled by N/16). ``best_of_n+stop`` is
best-of-N with the verifier's maximum as its target: a prompt stops at its first verified
candidate (rejection sampling) — the images best-of-N picks, for the NFEs actually spent.

``table`` writes benchmarks/results/search_shapeworld.{json,md} with
``best_nfe_fraction_to_match_best_of_16``: the smallest fraction of best-of-16's NFEs at
which some method reaches its gold accuracy (per search reward; the verifier's is the
headline).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections import defaultdict
from pathlib import Path

import torch

from rewardlab.generators import load_generator
from rewardlab.rewards import registry
from rewardlab.search import search
from rewardlab.world.prompts import prompt_set_path
from rewardlab.world.records import first_per_tag, load_records

RESULTS = Path(__file__).parent / "results"
RAW = RESULTS / "search_shapeworld_rows.json"
BUDGETS = (2, 4, 8, 16)
SEARCH_REWARDS = {"verifier": ("shapeworld", {"mode": "partial"}), "shapeclip": ("shapeclip", {})}
# row name -> (method, options, search rewards it runs with; None = all)
ROWS = {
    "best_of_n": ("best_of_n", {}, None),
    "best_of_n+stop": ("best_of_n", {"target": 1.0}, ("verifier",)),  # rejection sampling: 1 = verified
    "prune": ("prune", {"checks": (0.3,), "keep": 0.25}, None),
    "evolutionary": ("evolutionary", {}, None),
    "smc": ("smc", {}, None),
    "noise_opt": ("noise_opt", {}, ("shapeclip",)),  # the verifier has no gradient (a test checks the error)
    "prompt_search": ("prompt_search", {}, None),
}


def judge(images, records, verifier, proxy) -> dict:
    correct = verifier(images, [r["prompt"] for r in records], records).sub_scores["correct"]
    tags = defaultdict(list)
    for r, c in zip(records, correct.tolist()):
        tags[r["tag"]].append(c)
    per_tag = {t: sum(v) / len(v) for t, v in sorted(tags.items())}
    return {"gold": sum(per_tag.values()) / len(per_tag), "per_tag": per_tag,
            "proxy": proxy(images, [r["prompt"] for r in records]).scores.mean().item()}


def load_rows() -> dict:
    return json.loads(RAW.read_text()) if RAW.exists() else {}


def save_row(key: str, row: dict) -> None:
    rows = load_rows()  # re-read: only this process writes, but keep whatever is there
    rows[key] = row
    RAW.write_text(json.dumps(rows, indent=1) + "\n")


def cmd_run(args) -> None:
    torch.manual_seed(0)
    records = first_per_tag(load_records(prompt_set_path("eval")), args.per_tag)
    prompts = [r["prompt"] for r in records]
    gen = load_generator("shapeworld")
    verifier, proxy = registry.load("shapeworld"), registry.load("shapeclip")
    rewards = {name: registry.load(n, **o) for name, (n, o) in SEARCH_REWARDS.items()}
    done = load_rows()
    if "base" not in done:
        t = time.perf_counter()
        res = search("best_of_n", gen, rewards["verifier"], prompts, 1, seed=0, metadata=records)
        save_row("base", {"method": "sample", "reward": "-", "budget": 1, "nfe": res.nfe, "reward_calls": 0,
                          "seconds": round(time.perf_counter() - t, 1), **judge(res.images, records, verifier, proxy)})
    jobs = [(b, name, rname) for b in sorted(args.budgets) for name in args.methods for rname in args.rewards
            if (ROWS[name][2] is None or rname in ROWS[name][2]) and (name != "best_of_n" or b == 16)]
    for b, name, rname in jobs:  # small budgets of every method first: a cut-short run still has whole columns
        method, options, _ = ROWS[name]
        reward = rewards[rname]
        key = f"{name}/{rname}/{b}"
        if key in done and not args.redo:
            continue
        t = time.perf_counter()
        res = search(method, gen, reward, prompts, b, seed=0, metadata=records,
                     keep_candidates=name == "best_of_n", **options)
        secs = time.perf_counter() - t
        row = {"method": name, "reward": rname, "budget": b, "nfe": res.nfe, "budget_nfe": res.budget_nfe,
               "reward_calls": res.reward_calls, "seconds": round(secs, 1),
               **judge(res.images, records, verifier, proxy)}
        save_row(key, row)
        print(f"{key}: gold {row['gold']:.3f} proxy {row['proxy']:.2f} nfe {res.nfe} "
              f"reward calls {res.reward_calls} {secs:.0f}s", flush=True)
        if name == "best_of_n":
            nested_best_of_n(res, rname, reward, records, verifier, proxy, secs)


def nested_best_of_n(res, rname, reward, records, verifier, proxy, secs) -> None:
    """Best-of-2/4/8 from the 16-candidate run: the best of each prompt's first N candidates."""
    for n in BUDGETS[:-1]:
        best = [int(torch.tensor(c[:n]).argmax()) for c in res.candidates]
        images = torch.stack([imgs[k] for imgs, k in zip(res.candidate_images, best)])
        save_row(f"best_of_n/{rname}/{n}", {
            "method": "best_of_n", "reward": rname, "budget": n, "nfe": res.nfe * n // 16,
            "budget_nfe": res.budget_nfe * n // 16, "reward_calls": res.reward_calls * n // 16,
            "seconds": round(secs * n / 16, 1), "nested": True, **judge(images, records, verifier, proxy)})


def match_fraction(rows: dict, rname: str) -> tuple[float, str | None]:
    """Smallest NFE fraction of best-of-16 at which a method reaches best-of-16's gold."""
    ref = rows.get(f"best_of_n/{rname}/16")
    if ref is None:
        return float("nan"), None
    hits = [(r["nfe"] / ref["nfe"], k) for k, r in rows.items()
            if r.get("reward") == rname and r["gold"] >= ref["gold"] - 1e-9 and k != f"best_of_n/{rname}/16"]
    return min(hits) if hits else (1.0, None)


# Rows whose seconds were measured while other jobs shared the two cores (the unit tests, the
# best_of_n+stop rows beside the main run): their NFEs are exact, their seconds inflated.
SHARED = {"prune/verifier/4", "prune/verifier/8", "prune/verifier/16", "prune/shapeclip/2", "prune/shapeclip/4",
          "prune/shapeclip/8", "prune/shapeclip/16", "best_of_n+stop/verifier/2", "best_of_n+stop/verifier/4",
          "best_of_n+stop/verifier/8", "best_of_n+stop/verifier/16", "smc/verifier/8", "smc/shapeclip/8",
          "noise_opt/shapeclip/8", "prompt_search/verifier/8", "prompt_search/shapeclip/8",
          "evolutionary/verifier/16"}


def cmd_table(args) -> None:
    rows = load_rows()
    tags = list(rows["base"]["per_tag"])
    head = ("| method | search reward | budget | NFEs | reward calls | seconds | gold overall | proxy (shapeclip) | "
            + " | ".join(tags) + " |")
    lines = [head, "|" + "---|" * (7 + len(tags))]
    order = {m: i for i, m in enumerate(["sample", *ROWS])}
    for k, r in sorted(rows.items(), key=lambda kv: (kv[1]["reward"], order[kv[1]["method"]], kv[1]["budget"])):
        name = r["method"] + (" (nested)" if r.get("nested") else "")
        secs = f"{r['seconds']}{'*' if k in SHARED else ''}"
        lines.append(f"| {name} | {r['reward']} | {r['budget']} | {r['nfe']} | {r['reward_calls']} | {secs} | "
                     f"{r['gold']:.3f} | {r['proxy']:.2f} | "
                     + " | ".join(f"{r['per_tag'][t]:.2f}" for t in tags) + " |")
    pivot = ["| method | search reward | " + " | ".join(f"budget {b}" for b in BUDGETS) + " |",
             "|---|---|" + "---|" * len(BUDGETS)]
    for rn in SEARCH_REWARDS:
        for name in ROWS:
            cells = [rows.get(f"{name}/{rn}/{b}") for b in BUDGETS]
            if any(cells):
                pivot.append(f"| {name} | {rn} | " + " | ".join("not run" if c is None else f"{c['gold']:.3f}"
                                                             for c in cells) + " |")
    frac = {rn: match_fraction(rows, rn) for rn in SEARCH_REWARDS}
    out = {"best_nfe_fraction_to_match_best_of_16": frac["verifier"][0],
           "by_search_reward": {rn: {"fraction": f, "row": k} for rn, (f, k) in frac.items()},
           "methods": {k: {**r, "seconds_on_shared_cpu": k in SHARED} for k, r in rows.items()},
           "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
           "records": len(first_per_tag(load_records(prompt_set_path("eval")), args.per_tag))}
    matched = "\n".join(f"searching with {rn}: best-of-16's gold reached at {f:.2f} of its NFEs ({k})"
                        for rn, (f, k) in frac.items())
    text = (f"Gold (verifier) overall:\n\n{chr(10).join(pivot)}\n\nAll rows:\n\n{chr(10).join(lines)}\n\n"
            f"* seconds measured while other jobs shared the 2 cores (NFEs exact).\n\n{matched}")
    print(text)
    (RESULTS / "search_shapeworld.json").write_text(json.dumps(out, indent=1) + "\n")
    (RESULTS / "search_shapeworld.md").write_text("# python benchmarks/search_shapeworld.py table\n\n" + text + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--methods", nargs="+", default=list(ROWS), choices=list(ROWS))
    r.add_argument("--rewards", nargs="+", default=list(SEARCH_REWARDS), choices=list(SEARCH_REWARDS))
    r.add_argument("--budgets", nargs="+", type=int, default=list(BUDGETS))
    r.add_argument("--redo", action="store_true", help="search rows again even if saved")
    for p in (r, sub.add_parser("table")):
        p.add_argument("--per-tag", type=int, default=16)
    args = ap.parse_args()
    {"run": cmd_run, "table": cmd_table}[args.cmd](args)


if __name__ == "__main__":
    main()
