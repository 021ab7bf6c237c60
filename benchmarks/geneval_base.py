"""Base GenEval-style table of the shipped ShapeWorld model on the committed eval set.

    python benchmarks/geneval_base.py [--images-per-prompt 4] [--guidance 3.0] [--rejudge]

``--rejudge`` judges the images an earlier run left in ``--out`` again (after a verifier
change) instead of generating them.

Prints GenEval's summary plus seen/held-out accuracy and writes
benchmarks/results/geneval_base.{json,txt}. Takes ~5-10 minutes on 2 CPU cores.
"""

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from rewardlab.eval.geneval import (format_summary, generator_sampler, held_out_split, judge_folder, run_geneval,
                                    summarize)
from rewardlab.generators import DEFAULT_GUIDANCE, DEFAULT_STEPS, load_generator
from rewardlab.world.prompts import prompt_set_path
from rewardlab.world.records import load_records

RESULTS = Path(__file__).parent / "results"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images-per-prompt", type=int, default=4)
    ap.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    ap.add_argument("--guidance", type=float, default=DEFAULT_GUIDANCE)
    ap.add_argument("--out", default="outputs/geneval_base")
    ap.add_argument("--rejudge", action="store_true", help="judge the saved images again, no sampling")
    args = ap.parse_args()
    records = load_records(prompt_set_path("eval"))
    t0 = time.time()
    if args.rejudge:
        results = judge_folder(args.out)  # judge: the verifier
    else:
        fn = generator_sampler(load_generator("shapeworld"), args.steps, args.guidance)
        results = run_geneval(fn, None, records, args.images_per_prompt, args.out)
    summary = summarize(results)
    split = held_out_split(results)
    text = format_summary(summary) + "\n" + "\n".join(
        f"position+color_attr {k}: {acc:.2%} ({n} images)" for k, (acc, n) in split.items())
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "geneval_base.txt").write_text(text + "\n")
    (RESULTS / "geneval_base.json").write_text(json.dumps({
        "summary": summary, "held_out_split": split, "settings": vars(args),
        "seconds": round(time.time() - t0, 1), "machine": f"{platform.machine()}, "
        f"{torch.get_num_threads()} torch threads"}, indent=2) + "\n")


if __name__ == "__main__":
    main()
