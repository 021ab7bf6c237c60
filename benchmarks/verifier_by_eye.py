"""Fresh samples of the shipped model beside the verifier's verdicts, for a by-eye check.

    python benchmarks/verifier_by_eye.py [--n 48] [--seed 2026]

Draws ``n`` eval-split records, samples one image each (seeds never used by the eval
benchmark), verifies them and writes benchmarks/results/verifier_by_eye.png (a grid: the
image, and under it the verdict — green = correct, red = wrong — and its index) and
verifier_by_eye.json (prompt, verdict, reason per index). A person then looks at each
image against its prompt and records disagreements in the JSON's ``by_eye`` field.
"""

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from rewardlab.generators import load_generator
from rewardlab.generators.sampling import generate_images
from rewardlab.images import to_uint8
from rewardlab.world.prompts import PROMPT_DIR
from rewardlab.world.records import load_records
from rewardlab.world.verify import verify


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=48)
    ap.add_argument("--seed", type=int, default=2026)
    args = ap.parse_args()
    records = load_records(PROMPT_DIR / "eval.jsonl")
    picked = [records[i] for i in np.random.default_rng(args.seed).choice(len(records), args.n, replace=False)]
    seeds = [args.seed * 1000 + i for i in range(args.n)]
    images = to_uint8(generate_images(load_generator("shapeworld"), [r["prompt"] for r in picked], seeds))
    rows, tiles = [], []
    for i, (img, rec) in enumerate(zip(images, picked)):
        v = verify(img, rec)
        rows.append({"index": i, "prompt": rec["prompt"], "seed": seeds[i], "correct": v.correct, "reason": v.reason})
        tile = Image.new("RGB", (128, 146), "white")
        tile.paste(Image.fromarray(img).resize((128, 128), Image.NEAREST), (0, 0))
        ImageDraw.Draw(tile).text((3, 131), f"{i}: {'correct' if v.correct else 'wrong'}",
                                  fill=(0, 140, 0) if v.correct else (200, 0, 0))
        tiles.append(tile)
    cols = 8
    grid = Image.new("RGB", (cols * 130, -(-len(tiles) // cols) * 148), "white")
    for i, tile in enumerate(tiles):
        grid.paste(tile, ((i % cols) * 130, (i // cols) * 148))
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    grid.save(out / "verifier_by_eye.png")
    (out / "verifier_by_eye.json").write_text(json.dumps({"samples": rows}, indent=1) + "\n")
    for r in rows:
        print(f"{r['index']:2d} {'OK   ' if r['correct'] else 'WRONG'} {r['prompt']}  {r['reason']}")


if __name__ == "__main__":
    main()
