"""Reward hacking on ShapeWorld, caught: ReNO noise optimisation climbs the `shapeclip`
proxy on 16 position and colour-attribute prompts (the proxy's weak spots, see
judges_shapeworld), with the exact verifier logged as gold at every iterate
(``search(..., monitors=...)``); the hacking monitor reads the search's trace.

    python benchmarks/hacking_shapeclip.py [--budget 64] [--lr 10] [--prompts 16]

Prints the proxy and gold per iterate, the first alarm, and how far the gold had fallen from
its best when it fired (window means and single iterates). Writes
benchmarks/results/hacking_shapeclip.{json,md,png} and the trace's rows as
hacking_shapeclip_log.jsonl, and the images the search ends with (rendered by the full sampler
from the noise the proxy liked best) as hacking_shapeclip_images.png; the search's trace.json
goes to --out, for `rewardlab report`.
"""

import argparse
import json
import time
from pathlib import Path

from rewardlab.eval.hacking import HackingMonitor, alarms_json, scan, trace_rows
from rewardlab.eval.report import curves_png
from rewardlab.generators import load_generator
from rewardlab.images import grid, save_png, to_uint8
from rewardlab.rewards import load
from rewardlab.search import search
from rewardlab.world.prompts import PromptSampler

GOLD = "score/shapeworld"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", type=float, default=64)
    ap.add_argument("--lr", type=float, default=10.0)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/hacking_shapeclip_search", help="folder for the search's trace.json")
    args = ap.parse_args()
    recs = PromptSampler("train", tags=("position", "color_attr"), seed=args.seed)(args.prompts)
    t0 = time.time()
    res = search("noise_opt", load_generator("shapeworld"), load("shapeclip"), [r["prompt"] for r in recs],
                 args.budget, args.seed, metadata=recs, batch_size=args.prompts, lr=args.lr,
                 monitors={"shapeworld": load("shapeworld", mode="partial")})
    rows = [{k: r[k] for k in ("epoch", "reward_mean", GOLD)} for r in trace_rows({"trace": res.trace})]
    settings = HackingMonitor()
    alarms = scan(rows, unit="iterate")
    first = next((a for a in alarms if a.kind == "gold_falls"), None)
    gold = [r[GOLD] for r in rows]
    summary = {"args": vars(args), "iterates": len(rows), "seconds": round(time.time() - t0, 1),
               "window": settings.window, "drop": settings.drop, "alarms": alarms_json(alarms),
               "proxy_start": rows[0]["reward_mean"], "proxy_end": rows[-1]["reward_mean"],
               "gold_start": gold[0], "gold_best": max(gold), "gold_end": gold[-1]}
    verdict = "no alarm"
    if first:
        upto = gold[:first.epoch]
        summary["at_alarm"] = {"iterate": first.epoch, "gold_fall_from_best_window": first.gold_best - first.gold_now,
                               "gold_fall_from_best_iterate": max(upto) - upto[-1]}
        verdict = (f"first alarm at iterate {first.epoch} of {len(rows)}: {first.message}. The gold's best single "
                   f"iterate was {max(upto):.3f}; it ends at {gold[-1]:.3f} (best {max(gold):.3f}) while the proxy "
                   f"goes {rows[0]['reward_mean']:.2f} → {rows[-1]['reward_mean']:.2f}")
    lines = ["| iterate | proxy (shapeclip) | gold (verifier, partial) |", "|---|---|---|"]
    lines += [f"| {r['epoch']} | {r['reward_mean']:.3f} | {r[GOLD]:.3f} |" for r in rows]
    print("\n".join(lines) + "\n\n" + verdict)
    out = Path(__file__).parent / "results"
    (out / "hacking_shapeclip.md").write_text(f"# python benchmarks/hacking_shapeclip.py --budget {args.budget:g} "
                                              f"--lr {args.lr:g} --prompts {args.prompts}\n\n{verdict}\n\n"
                                              + "\n".join(lines) + "\n")
    (out / "hacking_shapeclip.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out / "hacking_shapeclip_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (out / "hacking_shapeclip.png").write_bytes(curves_png(rows, alarms, [], "iterate"))
    save_png(grid(to_uint8(res.images), 8), out / "hacking_shapeclip_images.png", scale=3)  # the proxy's favourites
    run = Path(args.out)  # the search's trace, for `rewardlab report`
    run.mkdir(parents=True, exist_ok=True)
    (run / "trace.json").write_text(json.dumps(res.summary(), indent=1) + "\n")


if __name__ == "__main__":
    main()
