"""The verifier's accuracy on renders and the share of non-scenes it accepts.

    python benchmarks/verifier_robustness.py [--per-tag 500] [--per-tag-adversarial 100]

Clean renders and corrupted ones (noise σ=0.05 + JPEG q75) must be judged correct
(targets ≥ 0.995 and ≥ 0.98 per tag); every kind in ``world/adversarial.py`` must be
accepted at most 1% of the time per tag. Both at 32 and 64 px, plus the verifier's
speed. Writes benchmarks/results/verifier_robustness.json.
"""

import argparse
import json
import time
from pathlib import Path

from rewardlab.world.adversarial import KINDS, accepted, scenes
from rewardlab.world.records import TAGS
from rewardlab.world.verify import verify


def rates(kind: str, n: int, size: int) -> dict[str, float]:
    return {tag: accepted(kind, tag, n, size, seed=0) for tag in TAGS}


def speed(n: int = 256) -> float:
    pairs = [p for tag in TAGS for p in scenes("clean", tag, n // len(TAGS), 32, seed=1)]
    best = 0.0
    for _ in range(3):
        t0 = time.perf_counter()
        for img, rec in pairs:
            verify(img, rec)
        best = max(best, len(pairs) / (time.perf_counter() - t0))
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-tag", type=int, default=500)
    ap.add_argument("--per-tag-adversarial", type=int, default=100)
    args = ap.parse_args()
    out = {"per_tag": args.per_tag, "per_tag_adversarial": args.per_tag_adversarial, "sizes": {}}
    print("| size | kind | " + " | ".join(TAGS) + " | worst |\n|---|---|" + "---|" * (len(TAGS) + 1))
    for size in (32, 64):
        table = {}
        for kind in ("clean", "corrupted", *KINDS):
            n = args.per_tag if kind in ("clean", "corrupted") else args.per_tag_adversarial
            r = table[kind] = rates(kind, n, size)
            worst = min(r.values()) if kind in ("clean", "corrupted") else max(r.values())
            print(f"| {size} | {kind} | " + " | ".join(f"{v:.3f}" for v in r.values()) + f" | {worst:.3f} |", flush=True)
        out["sizes"][size] = table
    out["images_per_s_32px"] = round(speed(), 1)
    print(f"verifier speed at 32 px: {out['images_per_s_32px']} images/s")
    (Path(__file__).parent / "results").mkdir(exist_ok=True)
    (Path(__file__).parent / "results" / "verifier_robustness.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
