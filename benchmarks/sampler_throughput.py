"""Sampler throughput of the shipped ShapeWorld model, next to what this CPU can do.

    python benchmarks/sampler_throughput.py [--rounds 2] [--probe-steps 2] [--arch]

The ratio to a matmul measured in the same run holds across machines (and across load,
roughly): images/s alone does not. Reports

1. the network's cost (GFLOP per image per pass, counted by torch's FlopCounterMode) and a
   2048² fp32 matmul's GFLOP/s, measured in every round;
2. images/s and achieved GFLOP/s at 20 ODE steps with CFG (two passes per step) for the
   ways of running it that might help — no_grad (what the pre-issue-9 sampler ran) vs
   inference_mode (``generate_images``), batch size, channels_last, threads, torch.compile
   (``compile_no_grad``, compiled during the warm-up, which is not timed) — each probed
   on 64 images at ``--probe-steps`` steps (cost is linear in steps) in interleaved rounds,
   with a matmul timed just before each, the best ratio kept;
3. the default path (``generate_images``) at the full 20 steps;
4. with ``--arch``: training-step time of UNet variants that differ only in where they
   cross-attend to the text (the DESIGN note's question of what the library classes cost).
Writes benchmarks/results/sampler_throughput.json.
"""

import argparse
import contextlib
import json
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from rewardlab.generators import DEFAULT_GUIDANCE
from rewardlab.generators.compiled import compile_no_grad
from rewardlab.generators.sampling import generate_images, sample
from rewardlab.generators.shapeworld import ShapeWorldGenerator
from rewardlab.world.model import ModelConfig, ShapeWorldModel

RESULTS = Path(__file__).parent / "results"
PROMPT = "a photo of a red circle left of a blue square"


def matmul_gflops(n=2048, repeats=5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def gflop_per_pass(gen) -> float:
    cond = gen.condition([PROMPT])
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        gen.denoise(torch.randn(1, *gen.latent_shape()), torch.tensor(0.5), cond)
    return counter.get_total_flops() / 1e9


def run(gen, n, steps, batch, mode):
    """``mode``: "inference" = generate_images (inference_mode); "no_grad" = sample() under
    no_grad in batches, what world/sample.py ran before issue 9 (same images)."""
    prompts, seeds = [PROMPT] * n, list(range(n))
    if mode == "inference":
        return generate_images(gen, prompts, seeds, steps=steps, batch_size=batch)
    with torch.no_grad():
        for b in range(0, n, batch):
            sample(gen, prompts[b:b + batch], seeds=seeds[b:b + batch], steps=steps, guidance=DEFAULT_GUIDANCE,
                   stochastic=False)


VARIANTS = {  # name: (batch, mode, channels_last, threads, torch.compile)
    "before: no_grad, batch 64": (64, "no_grad", False, None, False),
    "inference_mode, batch 64": (64, "inference", False, None, False),
    "inference_mode, batch 16": (16, "inference", False, None, False),
    "inference_mode, batch 32": (32, "inference", False, None, False),
    "inference_mode, batch 128": (128, "inference", False, None, False),
    "inference_mode, batch 64, channels_last": (64, "inference", True, None, False),
    "inference_mode, batch 64, 1 thread": (64, "inference", False, 1, False),
    "inference_mode, batch 16, torch.compile": (16, "inference", False, None, True),
}


@contextlib.contextmanager
def setting(gen, channels_last, threads):
    old = torch.get_num_threads()
    if channels_last:
        gen.model.unet.to(memory_format=torch.channels_last)
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        gen.model.unet.to(memory_format=torch.contiguous_format)
        torch.set_num_threads(old)


def probe(gen, args, gflop):
    """Each variant in interleaved rounds, a matmul timed just before each, so a load spike
    from other processes hits both; per variant the round with the best ratio is kept."""
    n = 64
    best = {}
    compiled = compile_no_grad(ShapeWorldGenerator(ShapeWorldModel.load(), step_type="ode").denoiser)
    for r in range(args.rounds):
        for name, (batch, mode, cl, threads, comp) in VARIANTS.items():
            gen.model.unet, eager = (compiled if comp else gen.model.unet), gen.model.unet
            with setting(gen, cl, threads):
                if r == 0:
                    run(gen, min(batch, n), 1, batch, mode)  # warm-up
                ref = matmul_gflops()
                secs = _timed(lambda: run(gen, n, args.probe_steps, batch, mode))
            gen.model.unet = eager
            ips = n / secs * args.probe_steps / 20  # 20-step equivalent
            row = {"variant": name, "images_per_second": round(ips, 2), "gflops": round(ips * 40 * gflop, 1),
                   "matmul_gflops": round(ref, 1), "vs_matmul": round(ips * 40 * gflop / ref, 3)}
            if name not in best or row["vs_matmul"] > best[name]["vs_matmul"]:
                best[name] = row
            print(f"  round {r + 1}: {name}: {ips:.2f} images/s, {row['vs_matmul']:.2f} x matmul", flush=True)
    return list(best.values())


def train_step_time(attn_levels, channels=(32, 64, 128)):
    model = ShapeWorldModel(ModelConfig(channels=channels, attn_levels=attn_levels)).train()
    opt = torch.optim.AdamW(model.parameters(), 1e-4)
    x, t = torch.randn(64, 3, 32, 32), torch.rand(64)
    prompts = ["a photo of a red circle"] * 64

    def step():
        loss = model.velocity(x, t, model.encode(prompts)).pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()

    step()
    return min(_timed(step) for _ in range(3)), model.num_parameters()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--probe-steps", type=int, default=2)
    ap.add_argument("--arch", action="store_true", help="also time the UNet architecture variants")
    args = ap.parse_args()
    gen = ShapeWorldGenerator(ShapeWorldModel.load(), step_type="ode")
    gflop = gflop_per_pass(gen)
    print(f"network: {gflop:.3f} GFLOP per image per pass; torch threads: {torch.get_num_threads()}")
    rows = probe(gen, args, gflop)
    print("\n| variant (ShapeWorld ODE, 20 steps, CFG) | images/s | GFLOP/s | matmul GFLOP/s | / matmul |\n"
          "|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['images_per_second']:.2f} | {r['gflops']:.0f} | {r['matmul_gflops']:.0f} "
              f"| {r['vs_matmul']:.2f} |")
    n = 64
    ref_after = matmul_gflops()
    secs = _timed(lambda: run(gen, n, 20, 16, "inference"))
    ips = n / secs
    final = {"images_per_second": round(ips, 2), "gflops": round(ips * 40 * gflop, 1),
             "matmul_gflops": round(ref_after, 1), "vs_matmul": round(ips * 40 * gflop / ref_after, 3)}
    print(f"\ngenerate_images (default path), 64 images x 20 steps: {ips:.2f} images/s, "
          f"{final['gflops']:.0f} GFLOP/s = {final['vs_matmul']:.2f} x matmul ({ref_after:.0f} GFLOP/s)")
    path = RESULTS / "sampler_throughput.json"
    out = json.loads(path.read_text()) if path.exists() else {}
    out.update({"gflop_per_image_per_pass": round(gflop, 4), "steps": 20, "cfg": True,
                "torch_threads": torch.get_num_threads(),
                "variants_probe_steps": args.probe_steps, "variants": rows, "default_path_20_steps": final})
    out.pop("images_per_second", None)
    out.pop("batch", None)
    if args.arch:
        out["train_step_variants"] = []
        for name, levels in (("text attention in the mid block only", 0), ("cross-attn at 8x8 (shipped)", 1),
                             ("cross-attn at 16x16 and 8x8", 2)):
            secs_step, params = train_step_time(levels)
            out["train_step_variants"].append({"variant": name, "params": params,
                                               "seconds_per_step": round(secs_step, 3)})
            print(f"| {name} | {params / 1e6:.2f}M | {secs_step:.2f} |")
    RESULTS.mkdir(exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
