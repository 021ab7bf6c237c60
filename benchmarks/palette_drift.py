"""How far does the batch palette move — from the prompt draw alone, and after fine-tuning?

Calibrates the hacking monitor's ``palette_drift`` alarm (``eval/hacking.py``): rollouts as
``configs/nft_shapeworld.yaml`` draws them (16 train-split prompts by its tag weights × 8
seeds, 10 guided ODE steps), 5 epochs' worth per window — what one window of the monitor
sees. Rows:

* the shipped model, epochs 1000–1004 against 1005–1009: the noise floor (other prompts);
* each named weights file against the shipped model on the same prompts and seeds.

With ``--eval``, the palette of the harness's periodic evaluation instead (the preset's 16
eval-split records per tag × 2 images, 20 steps, fixed seeds) — the ``eval_palette`` signal,
held pair for pair against the first evaluation, so no noise-floor row.

    python benchmarks/palette_drift.py [--eval] [NAME=WEIGHTS ...]

e.g. ``kl1=benchmarks/results/align_shapeworld_best.safetensors long=runs/nft_long/weights.safetensors``.
Writes benchmarks/results/palette_drift.{json,md} (palette_drift_eval.* with --eval).
"""

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from rewardlab.align.config import NFTConfig
from rewardlab.align.rollouts import epoch_prompts
from rewardlab.config import load_config
from rewardlab.eval.hacking import total_variation
from rewardlab.generators import load_generator
from rewardlab.generators.sampling import sample
from rewardlab.images import HUES, hue_fractions, hue_histogram

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results"
WINDOW = 5


def window_palette(weights: str | None, first_epoch: int) -> np.ndarray:
    """The mean of ``WINDOW`` epochs' hue fractions, from ``first_epoch`` on (as the monitor
    averages its window's rows)."""
    cfg = load_config(NFTConfig, ROOT / "configs" / "nft_shapeworld.yaml").sample
    gen = load_generator("shapeworld", **({"weights": weights} if weights else {}))
    rows = []
    for epoch in range(first_epoch, first_epoch + WINDOW):
        prompts = [p for p, _ in epoch_prompts(cfg, 0, epoch) for _ in range(cfg.group_size)]
        seeds = [epoch * 1000 + i for i in range(len(prompts))]
        with torch.no_grad():
            traj = sample(gen, gen.condition(prompts), seeds=seeds, steps=cfg.steps, guidance=cfg.guidance,
                          stochastic=False)
        rows.append(hue_fractions(hue_histogram(traj.images)))
    return np.mean(rows, axis=0)


def eval_palette(weights: str | None) -> np.ndarray:
    """The periodic evaluation's hue fractions, as the harness computes them."""
    from rewardlab.align.common import shapeworld_eval_set
    from rewardlab.generators.sampling import generate_images
    from rewardlab.images import to_tensor, to_uint8

    e = load_config(NFTConfig, ROOT / "configs" / "nft_shapeworld.yaml").eval
    recs, seeds = shapeworld_eval_set(e.per_tag, e.images_per_prompt)
    gen = load_generator("shapeworld", **({"weights": weights} if weights else {}))
    images = to_tensor(to_uint8(generate_images(gen, [r["prompt"] for r in recs], seeds, steps=e.steps,
                                                guidance=e.guidance)))
    return np.asarray(hue_fractions(hue_histogram(images)))


def main(named: dict[str, str], on_eval: bool) -> dict:
    t0 = time.time()
    palette_of = eval_palette if on_eval else lambda w: window_palette(w, 1000)
    shipped = palette_of(None)
    rows = [] if on_eval else [{"weights": "shipped, other prompts", "palette": None,
                                "tv": total_variation(shipped, window_palette(None, 1005))}]
    for name, path in named.items():
        p = palette_of(path)
        rows.append({"weights": f"{name} ({path})", "tv": total_variation(shipped, p), "palette": p.round(3).tolist()})
        print(rows[-1]["weights"], round(rows[-1]["tv"], 3), flush=True)
    return {"on": "evaluation set" if on_eval else "rollout windows", "hues": list(HUES),
            "shipped_palette": shipped.round(3).tolist(), "rows": rows, "seconds": round(time.time() - t0)}


def markdown(res: dict) -> str:
    main_hues = [i for i, v in enumerate(res["shipped_palette"]) if v >= 0.02]
    head = ["weights", "total variation from the shipped model"] + [res["hues"][i] for i in main_hues]
    if res.get("on") == "evaluation set":
        title, what = ("the periodic evaluation's images: 16 eval-split records per tag × 2, 20 steps, fixed seeds",
                       "Every row draws the same prompts and seeds")
    else:
        title, what = ("5-epoch windows of nft_shapeworld.yaml rollouts, 640 images each",
                       "The second row draws other prompts (the noise floor); the rest draw the same prompts "
                       "and seeds as the first")
    lines = [f"# Palette drift ({title})", "",
             "Total variation between mean hue fractions; hues holding at least 0.02 of the shipped model's "
             f"coloured pixels. {what} ({res['seconds']} s in all).", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head),
             "| shipped | 0 | " + " | ".join(f"{res['shipped_palette'][i]:.3f}" for i in main_hues) + " |"]
    for r in res["rows"]:
        cells = [f"{r['palette'][i]:.3f}" if r["palette"] else "—" for i in main_hues]  # — : other prompts
        lines.append(f"| {r['weights']} | {r['tv']:.3f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    torch.set_num_threads(2)
    on_eval = "--eval" in sys.argv[1:]
    named = dict(arg.split("=", 1) for arg in sys.argv[1:] if arg != "--eval")
    res = main(named, on_eval)
    stem = "palette_drift_eval" if on_eval else "palette_drift"
    (OUT / f"{stem}.json").write_text(json.dumps(res, indent=1) + "\n")
    (OUT / f"{stem}.md").write_text(markdown(res))
    print(markdown(res))
