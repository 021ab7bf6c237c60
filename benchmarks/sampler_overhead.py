"""Cost of recording a trajectory: rewardlab's sampler vs the diffusers pipeline's __call__.

    python benchmarks/sampler_overhead.py [--steps 20] [--batch 8] [--repeats 5]

Same tiny random-weight SD, SD3 and FLUX pipelines (built in code, as in the tests), same
steps, batch, size and guidance; timings interleaved and the median taken, in one run.
rewardlab records latents, log-probs and x0-predictions at every step and uses its own
stochastic step (DDIM η=1 / Flow-GRPO SDE); the pipeline runs DDIM η=1 / Euler.
Writes benchmarks/results/sampler_overhead.json with ``worst_ratio``.
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rewardlab.generators.diffusers_flow import FluxGenerator, SD3Generator  # noqa: E402
from rewardlab.generators.diffusers_sd import StableDiffusionGenerator  # noqa: E402
from tests.helpers.tiny_pipelines import tiny_flux, tiny_sd, tiny_sd3  # noqa: E402


def timed(fn):
    t0 = time.perf_counter()
    with torch.no_grad():
        fn()
    return time.perf_counter() - t0


def compare(name, pipe, gen, args, guidance=4.0, **call_kw):
    """``guidance``: rewardlab's CFG scale; FLUX gets 1 (its 4.0 is the distilled guidance input,
    the pipeline's ``guidance_scale``), so both sides run one network pass per step."""
    prompts = [f"a photo of a cat number {i}" for i in range(args.batch)]
    size = dict(height=args.size, width=args.size)
    ours = lambda: gen.sample(prompts, seeds=list(range(args.batch)), steps=args.steps, guidance=guidance, **size)
    theirs = lambda: pipe(prompts, num_inference_steps=args.steps, guidance_scale=4.0, output_type="pt",
                          **size, **call_kw)
    ours(), theirs()  # warm-up
    t_ours, t_theirs = [], []
    for _ in range(args.repeats):
        t_ours.append(timed(ours))
        t_theirs.append(timed(theirs))
    a, b = statistics.median(t_ours), statistics.median(t_theirs)
    print(f"| {name} | {args.batch} | {args.steps} | {b:.3f} | {a:.3f} | {a / b:.3f} |")
    return {"pipeline": name, "diffusers_s": round(b, 4), "rewardlab_s": round(a, 4), "ratio": round(a / b, 4)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    print("| pipeline | batch | steps | diffusers __call__ s | rewardlab sample s | ratio |\n|---|---|---|---|---|---|")
    sd, sd3, flux = tiny_sd(), tiny_sd3(), tiny_flux()
    for pipe in (sd, sd3, flux):
        pipe.set_progress_bar_config(disable=True)
    rows = [compare("tiny SD (DDIM η=1)", sd, StableDiffusionGenerator(sd, eta=1.0), args, eta=1.0),
            compare("tiny SD3 (flow)", sd3, SD3Generator(sd3, max_sequence_length=32), args,
                    max_sequence_length=32),
            compare("tiny FLUX (flow)", flux, FluxGenerator(flux, max_sequence_length=32, height=args.size,
                                                            width=args.size, distilled_guidance=4.0), args,
                    guidance=1.0, max_sequence_length=32)]
    out = {"worst_ratio": max(r["ratio"] for r in rows), "rows": rows, "settings": vars(args)}
    (Path(__file__).parent / "results").mkdir(exist_ok=True)
    (Path(__file__).parent / "results" / "sampler_overhead.json").write_text(json.dumps(out, indent=2) + "\n")
    print(f"worst ratio: {out['worst_ratio']:.3f} (target <= 1.10)")


if __name__ == "__main__":
    main()
