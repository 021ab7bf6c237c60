"""Does the ShapeWorld model read relation words at all? Why no recipe moves `position`.

Every alignment recipe left the eval's position score at the shipped model's ~0.29 (two
objects placed, the relation at chance). This script measures where the relation is lost:

1. **Text encoder** — distance between the token states of prompts that differ only in the
   relation word, against prompts that differ in an object word.
2. **Denoiser** — the model as a diffusion classifier (Li et al. 2023): on ideal renders of
   position prompts, the flow-matching error under the right prompt against the prompt with
   the relation flipped, the objects swapped, or no prompt, with the same (t, ε). ``acc`` is
   how often the right prompt has the lower error (0.5 = the words make no difference).
3. **Guidance** — position accuracy (eval prompts, one image each, 10 steps) with the
   flipped-relation prompt as the negative prompt: contrastive guidance amplifies whatever
   relation signal the velocity carries.
4. ``--finetune N`` — N steps of a direct, symmetric discriminative objective on renders:
   flow matching on (x, c) and on the objects-swapped render (x', c') plus a logistic loss
   that the right prompt explain each image better than the flipped one. Unlike "raise the
   error under the wrong prompt" alone (which the model games by degrading every output),
   this cannot be met without reading the relation; the printed accuracy says whether N
   steps taught it.
5. ``--supervised N`` — the strongest signal there is: N steps of continued supervised flow
   matching (``world train``'s loss, batches of 64) on ideal renders of *position prompts
   only*, then the eval split's position prompts generated again (2 images each, 10 steps,
   the default guidance), each image's relation read off the detected boxes: the asked one,
   the flipped one (right axis, wrong order), the other axis, or none/an object missing.
   Four axis-aligned relations at random give 0.25 correct. (Objects come from ``detect``, without
   the verifier's clean-scene check, so "asked" can exceed the verifier's position score.)
   ``--t-location M`` draws the noise levels from logit-normal(M, 1) instead of (0, 1): at
   M = 1.5 half the draws fall above t = 0.8, where the layout is decided, and that taught the
   relation's axis (runs at different M are kept side by side; a rerun at the same M replaces
   the earlier one).

    python benchmarks/relation_probe.py [--weights W] [--finetune 120] [--supervised 300 --supervised-lr 5e-4]
    python benchmarks/relation_probe.py --sections supervised --supervised 500 --supervised-lr 5e-4 --t-location 1.5

Writes benchmarks/results/relation_probe.{json,md}.
"""

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from rewardlab.images import to_uint8
from rewardlab.world.model import ShapeWorldModel
from rewardlab.world.prompts import compositions, prompt_set_path
from rewardlab.world.records import load_records, make_record
from rewardlab.world.render import render, sample_scene

RESULTS = Path(__file__).parent / "results"
FLIP = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
SECTIONS = ("text", "classifier", "guidance", "finetune", "supervised")
BANDS = ((0.97, 1.0), (0.9, 0.97), (0.8, 0.9), (0.6, 0.8), (0.3, 0.6))


def variant(rec: dict, flip: bool = False, swap: bool = False) -> str:
    a, b = rec["include"][0]["class"], rec["include"][1]["class"]
    rel = rec["include"][1]["position"][0]
    return make_record("position", [b, a] if swap else [a, b], relation=FLIP[rel] if flip else rel)["prompt"]


def to_x(imgs) -> torch.Tensor:
    return torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float() / 127.5 - 1


def render_pairs(recs, rng):
    """Ideal renders of ``recs`` and of the same scenes with the two objects' places swapped
    (which shows the flipped relation), rendered with the same colour jitter."""
    xs, xf = [], []
    for r in recs:
        a, b = sample_scene(r, rng)
        seed = int(rng.integers(2**31))
        xs.append(render([a, b], 32, np.random.default_rng(seed)))
        swapped = [dataclasses.replace(a, cx=b.cx, cy=b.cy), dataclasses.replace(b, cx=a.cx, cy=a.cy)]
        xf.append(render(swapped, 32, np.random.default_rng(seed)))
    return to_x(xs), to_x(xf)


def text_distances(model) -> dict:
    base = "a photo of a circle left of a square"
    others = {"relation right": "a photo of a circle right of a square",
              "relation above": "a photo of a circle above a square",
              "object triangle": "a photo of a triangle left of a square"}
    with torch.no_grad():
        states, mask = model.encode([base, *others.values()])
    n = int(mask[0].sum())
    d = lambda i: (states[0, :n] - states[i, :n]).norm(dim=-1)
    return {"state_norm": round(float(states[0, :n].norm(dim=-1).mean()), 3),
            **{k: {"max": round(float(d(i + 1).max()), 3), "last_token": round(float(d(i + 1)[n - 1]), 3)}
               for i, k in enumerate(others)}}


@torch.no_grad()
def classifier_table(model, n: int = 256, seed: int = 7) -> list[dict]:
    rng = np.random.default_rng(seed)
    pool = compositions("position", "all")
    recs = [pool[rng.integers(len(pool))] for _ in range(n)]
    x, _ = render_pairs(recs, rng)
    g = torch.Generator().manual_seed(seed)
    eps = torch.randn(x.shape, generator=g)
    prompts = {"right": [r["prompt"] for r in recs], "relation flipped": [variant(r, flip=True) for r in recs],
               "objects swapped": [variant(r, swap=True) for r in recs], "empty": [""] * n}
    rows = []
    for lo, hi in BANDS:
        t = lo + (hi - lo) * torch.rand(n, generator=g)
        tb = t.view(-1, 1, 1, 1)
        xt, target = (1 - tb) * x + tb * eps, eps - x
        err = {k: (model.velocity(xt, t, model.encode(p)) - target).pow(2).mean((1, 2, 3)) for k, p in prompts.items()}
        row = {"t": f"{lo}-{hi}", "error": round(float(err["right"].mean()), 4)}
        for k in ("relation flipped", "objects swapped", "empty"):
            row[f"{k} gap"] = float(f"{float((err[k] - err['right']).mean()):.2e}")
            row[f"{k} acc"] = round(float((err["right"] < err[k]).float().mean()), 3)
        rows.append(row)
    return rows


def guidance_table(model, weights: list[float], n: int = 100) -> dict:
    from rewardlab.generators.sampling import generate_images
    from rewardlab.generators.shapeworld import ShapeWorldGenerator
    from rewardlab.world.verify import verify

    gen = ShapeWorldGenerator(model)
    recs = [r for r in load_records(prompt_set_path("eval")) if r["tag"] == "position"][:n]
    out = {}
    for negative in ("empty", "relation flipped"):
        negs = None if negative == "empty" else [variant(r, flip=True) for r in recs]
        for w in weights:
            imgs = generate_images(gen, [r["prompt"] for r in recs], list(range(len(recs))), steps=10,
                                   guidance=w, negative_prompts=negs)
            arr = to_uint8(imgs)
            out[f"{negative} w={w:g}"] = round(float(np.mean([verify(a, r).correct for a, r in zip(arr, recs)])), 3)
    return out


def finetune(model, steps: int, lr: float = 1e-4, beta: float = 2000, lam: float = 2e-3, batch: int = 16) -> list[dict]:
    """Flow matching on (x, c) and (x', c') plus lam·softplus(beta·(err(x,c) − err(x,c'))) both ways."""
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    pool = compositions("position", "train")
    rng, g = np.random.default_rng(0), torch.Generator().manual_seed(0)
    log, t0 = [], time.time()
    for step in range(steps):
        recs = [pool[rng.integers(len(pool))] for _ in range(batch)]
        xs, xf = render_pairs(recs, rng)
        x, n = torch.cat([xs, xf]), 2 * batch
        right = [r["prompt"] for r in recs] + [variant(r, flip=True) for r in recs]
        wrong = right[batch:] + right[:batch]
        t = 0.3 + 0.7 * torch.rand(n, generator=g)
        eps = torch.randn(x.shape, generator=g)
        xt = (1 - t.view(-1, 1, 1, 1)) * x + t.view(-1, 1, 1, 1) * eps
        v = model.velocity(torch.cat([xt, xt]), torch.cat([t, t]), model.encode(right + wrong))
        err = (v - torch.cat([eps - x] * 2)).pow(2).mean((1, 2, 3))
        d = err[:n] - err[n:]
        loss = err[:n].mean() + lam * F.softplus(beta * d).mean()
        err, d = err.detach(), d.detach()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if (step + 1) % 20 == 0:
            log.append({"step": step + 1, "seconds": round(time.time() - t0), "error": round(float(err[:n].mean()), 4),
                        "acc": round(float((d < 0).float().mean()), 3)})
            print(log[-1], flush=True)
    return log


RELATION_KINDS = ("asked", "flipped", "other axis", "none or missing")


def relation_kind(img: np.ndarray, rec: dict) -> str:
    """How the image's two objects stand: the asked relation, the flipped one, the other axis."""
    from rewardlab.world.render import relative_position
    from rewardlab.world.verify import detect

    objs = detect(img)
    target, mover = (next((o for o in objs if o.cls == r["class"]), None) for r in rec["include"])
    if target is None or mover is None:
        return "none or missing"
    rels, _ = relative_position(mover.box, target.box)
    asked = rec["include"][1]["position"][0]
    return ("asked" if asked in rels else "flipped" if FLIP[asked] in rels
            else "other axis" if rels else "none or missing")


def position_kinds(model, n: int = 100, per_prompt: int = 2) -> dict:
    """Shares of RELATION_KINDS over the first ``n`` eval position prompts."""
    from rewardlab.generators.sampling import generate_images
    from rewardlab.generators.shapeworld import ShapeWorldGenerator

    recs = [r for r in load_records(prompt_set_path("eval")) if r["tag"] == "position"][:n]
    recs = [r for r in recs for _ in range(per_prompt)]
    imgs = generate_images(ShapeWorldGenerator(model.eval()), [r["prompt"] for r in recs], list(range(len(recs))),
                           steps=10)
    arr = to_uint8(imgs)
    kinds = [relation_kind(a, r) for a, r in zip(arr, recs)]
    return {k: round(kinds.count(k) / len(kinds), 3) for k in RELATION_KINDS} | {"images": len(kinds)}


def supervised(model, steps: int, lr: float, t_location: float = 0.0) -> dict:
    """Position-only continued flow matching, as ``world train`` with noise levels drawn from
    logit-normal(``t_location``, 1); the weights measured are an EMA at 0.99 from the first step
    (no warm-up: ~5% of the start remains after 300 steps)."""
    from rewardlab.train_configs import TrainConfig
    from rewardlab.world.prompts import PromptSampler
    from rewardlab.world.train import _ema_update, flow_loss, make_batch

    before = position_kinds(model)
    cfg, sampler = TrainConfig(seed=7), PromptSampler("train", tags=("position",), seed=7)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=cfg.weight_decay)
    ema = {k: v.detach().clone() for k, v in model.state_dict().items()}
    g, t0 = torch.Generator().manual_seed(7), time.time()
    for step in range(steps):
        loss = flow_loss(model, *make_batch(step, cfg, sampler), g, t_location)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        _ema_update(ema, model, 0.99)
        if (step + 1) % 50 == 0:
            print({"step": step + 1, "seconds": round(time.time() - t0), "loss": round(loss.item(), 4)}, flush=True)
    minutes = (time.time() - t0) / 60
    model.load_state_dict(ema)
    return {"steps": steps, "lr": lr, "t_location": t_location, "renders": steps * cfg.batch_size,
            "minutes": round(minutes, 1), "before": before, "after": position_kinds(model)}


def supervised_runs(res: dict) -> list[dict]:
    """The supervised runs kept in ``res`` (a results file from before ``--t-location`` held one)."""
    runs = res.get("supervised") or []
    return [runs | {"t_location": 0.0}] if isinstance(runs, dict) else runs


def markdown(res: dict) -> str:
    """The results as markdown; a section not in ``res`` (never run) is left out."""
    lines = [f"# Relation probe ({res['weights']})"]
    if "text" in res:
        lines += ["", "## Text encoder: token-state distance to 'a photo of a circle left of a square'", "",
                  f"mean state norm {res['text']['state_norm']}", "",
                  "| other prompt | max over tokens | last token |", "|---|---|---|"]
        lines += [f"| {k} | {v['max']} | {v['last_token']} |" for k, v in res["text"].items() if k != "state_norm"]
    if "classifier" in res:
        keys = list(res["classifier"][0])
        lines += ["", "## Denoiser as a classifier (256 renders; acc 0.5 = the words make no difference)", "",
                  "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        lines += ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in res["classifier"]]
    if "guidance" in res:
        lines += ["", "## Position accuracy by negative prompt and guidance (100 eval prompts, 10 steps)", "",
                  "| negative, weight | position |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in res["guidance"].items()]
    if res.get("finetune"):
        lines += ["", "## Symmetric discriminative fine-tuning (right prompt must beat flipped, both ways)", "",
                  "| step | seconds | error | acc |", "|---|---|---|---|"]
        lines += [f"| {r['step']} | {r['seconds']} | {r['error']} | {r['acc']} |" for r in res["finetune"]["log"]]
        lines += ["", "after fine-tuning, classifier acc (relation flipped) by band: "
                  + ", ".join(f"{r['t']}: {r['relation flipped acc']}" for r in res["finetune"]["classifier"])]
    if runs := supervised_runs(res):
        lines += ["", "## Position-only supervised fine-tuning (batches of 64 renders, noise levels t ~ "
                  f"logit-normal(location, 1)): how the generated pairs stand ({runs[0]['after']['images']} images)",
                  "", "| weights | " + " | ".join(RELATION_KINDS) + " |", "|---" * (len(RELATION_KINDS) + 1) + "|",
                  "| before | " + " | ".join(str(runs[0]["before"][r]) for r in RELATION_KINDS) + " |"]
        lines += [f"| after {u['steps']} steps, location {u['t_location']:g}, lr {u['lr']:g} ({u['minutes']} min) | "
                  + " | ".join(str(u["after"][r]) for r in RELATION_KINDS) + " |" for u in runs]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--weights", default=None, help="ShapeWorld weights (default: the shipped model)")
    ap.add_argument("--guidance", default="3,8,15", help="guidance weights to try")
    ap.add_argument("--finetune", type=int, default=0, help="steps of the discriminative check (0: skip)")
    ap.add_argument("--supervised", type=int, default=0, help="steps of position-only supervised training (0: skip)")
    ap.add_argument("--supervised-lr", type=float, default=1e-4, help="its learning rate")
    ap.add_argument("--t-location", type=float, default=0.0,
                    help="its noise levels' logit-normal location (a run at another location is kept beside it)")
    ap.add_argument("--sections", default=",".join(SECTIONS),
                    help="sections to run; the others (and finetune/supervised when their steps are 0) are kept "
                         "from the existing results file")
    ap.add_argument("--out", default=str(RESULTS / "relation_probe"), help="results path without suffix")
    args = ap.parse_args()
    sections = set(args.sections.split(","))
    if sections - set(SECTIONS):
        ap.error(f"unknown sections {sorted(sections - set(SECTIONS))}; choose from {', '.join(SECTIONS)}")
    out = Path(args.out)
    res = json.loads(out.with_suffix(".json").read_text()) if out.with_suffix(".json").exists() else {}
    if res.get("weights", args.weights or "shipped") != (args.weights or "shipped"):
        res = {}  # another model's results: nothing to keep
    torch.manual_seed(0)
    model = ShapeWorldModel.load(args.weights).eval()
    res["weights"] = args.weights or "shipped"
    if "text" in sections:
        res["text"] = text_distances(model)
    if "classifier" in sections:
        res["classifier"] = classifier_table(model)
    if "guidance" in sections:
        res["guidance"] = guidance_table(model, [float(w) for w in args.guidance.split(",")])
    if "finetune" in sections and args.finetune:
        log = finetune(model, args.finetune)
        res["finetune"] = {"log": log, "classifier": classifier_table(model.eval())}
        model = ShapeWorldModel.load(args.weights)  # the next section starts from the weights again
    if "supervised" in sections and args.supervised:
        run = supervised(model, args.supervised, args.supervised_lr, args.t_location)
        res["supervised"] = [u for u in supervised_runs(res) if u["t_location"] != args.t_location] + [run]
    out.with_suffix(".json").write_text(json.dumps(res, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
