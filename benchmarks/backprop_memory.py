"""Memory and time of one reward-backpropagation step on the shipped ShapeWorld model:
AlignProp (the full chain, each step checkpointed), the full chain kept in memory, DRaFT-K
(K = 1, 4), DRaFT-LV and ReFL — 8 images, 10 steps, guidance 3, the shapeclip reward.

    python benchmarks/backprop_memory.py [--batch 8] [--steps 10] [--repeats 3]

Each configuration runs in a fresh process: memory is the growth of the process's peak
resident set (VmHWM, reset before the step) over what it held before; time is the median
of --repeats steps (sampling, reward, backward, optimiser). Writes
benchmarks/results/backprop_memory.{json,md}.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

CONFIGS = {"AlignProp (k=steps, checkpointed)": ["mode=draft", "k=1000", "checkpoint=true"],
           "full chain, no checkpointing": ["mode=draft", "k=1000"],
           "DRaFT-K, K=4": ["mode=draft", "k=4"], "DRaFT-K, K=1": ["mode=draft", "k=1"],
           "DRaFT-LV (2 copies)": ["mode=draft_lv", "lv_samples=2"], "ReFL": ["mode=refl"]}


def vm(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(field)


def child(overrides: list[str], batch: int, steps: int, repeats: int) -> dict:
    """One configuration: steps of the recipe's own sample → score → update."""
    import tempfile

    import torch

    from rewardlab.align import recipe_config
    from rewardlab.align.backprop import differentiable_sample, score
    from rewardlab.align.common import start
    from rewardlab.config import load_config

    cfg = load_config(recipe_config("backprop"), None, [f"sample.steps={steps}", "sample.guidance=3",
                                                        "reward.names=[shapeclip]", "reward.options=[]",
                                                        "eval.every=0", *overrides])
    cfg.k = min(cfg.k, steps)
    run = start(cfg, tempfile.mkdtemp(), "backprop")
    prompts = ["a photo of a red circle left of a blue square"] * batch
    times, peaks = [], []
    for r in range(repeats + 1):
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current resident set
        base = vm("VmRSS")
        t0 = time.perf_counter()
        images = differentiable_sample(run, cfg, prompts, list(range(batch)), 0, r, list(range(batch)))
        reward, _ = score(run, images, prompts, [None] * batch)
        (-reward.mean()).backward()
        run.optimizer.step()
        run.optimizer.zero_grad(set_to_none=True)
        if r:  # the first step warms up (allocator, optimiser state)
            times.append(time.perf_counter() - t0)
            peaks.append(vm("VmHWM") - base)
    return {"seconds": statistics.median(times), "peak_mb": max(peaks) / 2**20, "threads": torch.get_num_threads()}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--child", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.batch, args.steps, args.repeats)))
        return
    rows = {}
    load = os.getloadavg()[0]
    for name, over in CONFIGS.items():
        cmd = [sys.executable, __file__, "--batch", str(args.batch), "--steps", str(args.steps), "--repeats",
               str(args.repeats), "--child", *over]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        rows[name] = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{name}: {rows[name]}", file=sys.stderr)
    lines = ["| configuration | peak memory of a step (MB) | seconds per step |", "|---|---|---|"]
    lines += [f"| {n} | {r['peak_mb']:.0f} | {r['seconds']:.2f} |" for n, r in rows.items()]
    table = "\n".join(lines)
    print(table)
    res = Path(__file__).parent / "results"
    (res / "backprop_memory.md").write_text(
        f"# python benchmarks/backprop_memory.py --batch {args.batch} --steps {args.steps} (2-core CPU, load "
        f"{load:.1f} at start)\n\nShipped ShapeWorld model, guidance 3 (two network passes a step), shapeclip "
        f"reward, full fine-tune; peak = growth of the process's peak resident set during one step.\n\n{table}\n")
    (res / "backprop_memory.json").write_text(json.dumps({"args": {k: v for k, v in vars(args).items()
                                                                    if k != "child"}, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
