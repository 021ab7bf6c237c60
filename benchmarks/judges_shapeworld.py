"""Every offline judge on the ShapeWorld judge benchmark (known labels, MJ-Bench's form):
pairwise accuracy per category, PickScore's tie-aware scoring with τ = 0.

    python benchmarks/judges_shapeworld.py [--per-subcategory 100] [--seed 0]

Alignment pairs: a correct render against one of another prompt of the same tag; near
misses: against a prompt one edit away; quality: a render against itself degraded. The
labels are the exact verifier's (a wrong image is kept only if the verifier rejects it), so
the verifier's alignment rows are 1 by construction: it is the reference the others are
ranked against. Writes benchmarks/results/judges_shapeworld.{json,md}.
"""

import argparse
import json
import tempfile
from pathlib import Path

from rewardlab.data.pref_formats import read_preference_set as read_judge_set
from rewardlab.eval.judges import evaluate_judge
from rewardlab.eval.shapeworld_judges import make_shapeworld_judge_set, save_judge_set
from rewardlab.rewards import load

JUDGES = {"shapeworld (verifier, partial)": ("shapeworld", {"mode": "partial"}), "shapeclip": ("shapeclip", {}),
          "preference (BT RM)": ("preference", {}), "brisque": ("brisque", {}),
          "jpeg_compressibility": ("jpeg_compressibility", {})}
COLUMNS = ["alignment", "near_miss", "quality", "overall", "alignment/object", "alignment/colour", "alignment/count",
           "alignment/position", "alignment/binding", "near_miss/position", "near_miss/binding", "quality/noise",
           "quality/blur", "quality/jpeg"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-subcategory", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "judges.parquet"
        save_judge_set(make_shapeworld_judge_set(args.per_subcategory, args.seed), path)
        reports = {name: evaluate_judge(load(reward, **opts), read_judge_set(path))
                   for name, (reward, opts) in JUDGES.items()}
    ranked = sorted(reports, key=lambda n: -reports[n]["categories"]["overall"]["accuracy"])
    pairs = reports[ranked[0]]["categories"]
    lines = ["| judge | " + " | ".join(f"{c} ({pairs[c]['pairs']})" for c in COLUMNS) + " |",
             "|---|" + "---|" * len(COLUMNS)]
    for name in ranked:
        cats = reports[name]["categories"]
        lines.append(f"| {name} | " + " | ".join(f"{cats[c]['accuracy']:.3f}" for c in COLUMNS) + " |")
    table = "\n".join(lines)
    print(table)
    out = Path(__file__).parent / "results"
    (out / "judges_shapeworld.md").write_text(
        f"Pairwise accuracy (PickScore's tie-aware credit, τ = 0; pairs in brackets), "
        f"{args.per_subcategory} pairs per subcategory, seed {args.seed}.\n\n{table}\n")
    (out / "judges_shapeworld.json").write_text(json.dumps({"args": vars(args), "reports": reports}, indent=1) + "\n")


if __name__ == "__main__":
    main()
