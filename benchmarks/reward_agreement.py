"""How often a learned ShapeWorld reward (shapeclip, preference) agrees with the exact
verifier on pairs.

    python benchmarks/reward_agreement.py [--reward shapeclip] [--pairs 100] [--weights PATH]

For each eval record R (held-out compositions included), render a correct image of R and
one of a near-miss record (one edit: class, count, colour, relation or swapped colours);
the reward agrees with the verifier when it scores the correct image higher for caption R.
Writes benchmarks/results/reward_agreement_<reward>.json.
"""

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from rewardlab.images import to_tensor
from rewardlab.rewards import load
from rewardlab.world.prompts import is_held_out, near_miss, prompt_set_path
from rewardlab.world.records import load_records
from rewardlab.world.render import render_record


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reward", default="shapeclip", help="a registered reward: shapeclip or preference")
    ap.add_argument("--pairs", type=int, default=100, help="pairs per tag")
    ap.add_argument("--weights", default=None)
    args = ap.parse_args()
    reward = load(args.reward, weights=args.weights)
    rng = np.random.default_rng(0)
    by_tag, held = defaultdict(list), {True: [], False: []}
    records = load_records(prompt_set_path("eval"))
    for tag in dict.fromkeys(r["tag"] for r in records):
        pool = [r for r in records if r["tag"] == tag]
        for k in range(args.pairs):
            rec = pool[k % len(pool)]
            good = render_record(rec, 10_000 + k)
            bad = render_record(near_miss(rec, rng), 20_000 + k)
            with torch.no_grad():
                s = reward(to_tensor([good, bad]), [rec["prompt"]] * 2).scores
            ok = bool(s[0] > s[1])
            by_tag[tag].append(ok)
            if tag in ("position", "color_attr"):
                held[is_held_out(rec)].append(ok)
    print("| tag | pairs | agreement |\n|---|---|---|")
    for tag, v in by_tag.items():
        print(f"| {tag} | {len(v)} | {np.mean(v):.3f} |")
    overall = float(np.mean([x for v in by_tag.values() for x in v]))
    print(f"| **all** | {sum(map(len, by_tag.values()))} | **{overall:.3f}** |")
    for flag, name in ((False, "seen"), (True, "held-out")):
        if held[flag]:
            print(f"position + color_attr, {name} compositions: {np.mean(held[flag]):.3f} ({len(held[flag])} pairs)")
    out = {"overall": overall, "per_tag": {t: float(np.mean(v)) for t, v in by_tag.items()},
           "held_out": float(np.mean(held[True])) if held[True] else None,
           "seen": float(np.mean(held[False])) if held[False] else None, "pairs_per_tag": args.pairs}
    (Path(__file__).parent / "results").mkdir(exist_ok=True)
    path = Path(__file__).parent / "results" / f"reward_agreement_{args.reward}.json"
    path.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
