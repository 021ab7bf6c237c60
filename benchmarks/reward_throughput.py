"""Images per second of each offline reward at batch 1 and 32, on this machine.

    python benchmarks/reward_throughput.py [--repeats 3]

Rewards that need downloaded weights (clipscore, pickscore, laion_aesthetic) are not
timed here. Writes benchmarks/results/reward_throughput.json.
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from rewardlab.images import to_tensor
from rewardlab.rewards import load
from rewardlab.world.prompts import PromptSampler
from rewardlab.world.render import render_record

OFFLINE = ["shapeworld", "jpeg_compressibility", "face", "ocr", "brisque", "shapeclip", "preference"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    records = PromptSampler("train", seed=0)(32, np.random.default_rng(0))
    images = to_tensor([render_record(r, i) for i, r in enumerate(records)])
    prompts = [r["prompt"] for r in records]
    rows = []
    print("| reward | batch 1 images/s | batch 32 images/s |\n|---|---|---|")
    for name in OFFLINE:
        reward = load(name)
        speeds = []
        for batch in (1, 32):
            with torch.no_grad():
                reward(images[:batch], prompts[:batch])  # warm-up
                times = []
                for _ in range(args.repeats):
                    t0 = time.perf_counter()
                    reward(images[:batch], prompts[:batch])
                    times.append(time.perf_counter() - t0)
            speeds.append(batch / min(times))
        rows.append({"reward": name, "batch1": round(speeds[0], 1), "batch32": round(speeds[1], 1)})
        print(f"| {name} | {speeds[0]:.1f} | {speeds[1]:.1f} |")
    (Path(__file__).parent / "results").mkdir(exist_ok=True)
    (Path(__file__).parent / "results" / "reward_throughput.json").write_text(
        json.dumps({"rows": rows, "torch_threads": torch.get_num_threads(), "image_size": 32}, indent=2) + "\n")


if __name__ == "__main__":
    main()
