"""Sampler throughput of the ShapeWorld model, and what the architecture choice costs.

    python benchmarks/sampler_throughput.py

1. images/s at 20 Euler steps with CFG (two network passes per step), batch 64;
2. training-step time (batch 64, forward + backward) of tiny diffusers UNets that
   differ only in where they cross-attend to the text: the DESIGN note asks what
   building on the library classes costs on a CPU.
Writes benchmarks/results/sampler_throughput.json.
"""

import json
import time
from pathlib import Path

import torch

from rewardlab.world.model import ModelConfig, ShapeWorldModel
from rewardlab.world.sample import sample

RESULTS = Path(__file__).parent / "results"


def best_of(fn, repeats=3):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def throughput(batch=64, steps=20, guidance=3.0):
    model = ShapeWorldModel.load()
    prompts = ["a photo of a red circle left of a blue square"] * batch
    t = best_of(lambda: sample(model, prompts, list(range(batch)), steps=steps, guidance=guidance), 2)
    return batch / t, t


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

    return best_of(step), model.num_parameters()


def main():
    ips, secs = throughput()
    print("| sampler | batch | steps | CFG | seconds/batch | images/s |\n|---|---|---|---|---|---|")
    print(f"| ShapeWorld Euler ODE | 64 | 20 | yes | {secs:.2f} | {ips:.1f} |\n")
    print("| UNet variant (diffusers UNet2DConditionModel) | params | s / train step (batch 64) |\n|---|---|---|")
    rows = []
    for name, levels in (("text attention in the mid block only", 0), ("cross-attn at 8x8 (shipped)", 1),
                         ("cross-attn at 16x16 and 8x8", 2)):
        secs_step, params = train_step_time(levels)
        rows.append({"variant": name, "params": params, "seconds_per_step": round(secs_step, 3)})
        print(f"| {name} | {params / 1e6:.2f}M | {secs_step:.2f} |")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "sampler_throughput.json").write_text(json.dumps({
        "images_per_second": round(ips, 2), "batch": 64, "steps": 20, "cfg": True,
        "torch_threads": torch.get_num_threads(), "train_step_variants": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
