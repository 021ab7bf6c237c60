"""Side-by-side speed of TRL's DDPOTrainer and rewardlab's ``grpo`` recipe in DDPO mode.

Both stacks train LoRA (rank 4, alpha 4, on to_q/to_k/to_v/to_out.0) on ONE tiny random-weight
Stable Diffusion pipeline (64x64 images, 8x8 latents; built once under ``--out``) with DDPO's
settings: DDIM eta 1 for ``--steps`` steps, guidance 5 in sampling and training, every step
stochastic and trained on, per-prompt running advantage statistics (buffer 32, min count 16),
advantages clipped at 5, PPO clip 1e-4, AdamW lr 3e-4, fp32, the JPEG-compressibility reward
(minus the JPEG size in kB at quality 95), the same samples per epoch (prompts x group size) and
the same optimiser steps per epoch (``--minibatches``), gradients through both halves of
guidance (rewardlab's ``train_uncond=true``, as TRL does), and the same thread count.

TRL 0.23.1 needs transformers 4.x, so it runs in its own venv ``.venv-trl`` (created here if
missing, torch 2.13.0 CPU first) through benchmarks/peer_trl_ddpo_trl.py; rewardlab runs as
``.venv/bin/python -m rewardlab.cli train grpo``. Runs alternate TRL, rewardlab, TRL, ... for
``--rounds`` rounds of ``--epochs`` epochs each; an epoch is sampling + reward + training, timed
without model loading (TRL: around ``DDPOTrainer.step``; rewardlab: ``time/epoch`` in
metrics.jsonl, which excludes evaluation). With more than one epoch the first of each run is
dropped as warm-up. rewardlab runs twice per round: with ``model.compile=true`` (as the
ShapeWorld presets run: its gradient-free passes — the rollouts — go through torch.compile,
whose one-off compilation falls in the dropped first epoch and is reported as
``rewardlab_first_epoch_s``; after the first round inductor's on-disk cache shortens it) and
eager (``ratio_eager``). Prints the median seconds per sample of each and, last, the ratio
rewardlab (compiled) / TRL (below 1: rewardlab is faster); writes
benchmarks/results/peer_trl_ddpo.json.

    .venv/bin/python benchmarks/peer_trl_ddpo.py                       # 3 rounds x 2 epochs
    .venv/bin/python benchmarks/peer_trl_ddpo.py --rounds 1 --epochs 1  # smoke test
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRL_VENV = ROOT / ".venv-trl"
TRL_PY = TRL_VENV / "bin" / "python"
RL_PY = ROOT / ".venv" / "bin" / "python"
HELPER = Path(__file__).with_name("peer_trl_ddpo_trl.py")
TRL_INSTALLS = [["torch==2.13.0"], ["trl==0.23.1", "transformers<5", "diffusers", "peft", "accelerate"]]
PACKAGES = ["torch", "transformers", "diffusers", "peft", "accelerate", "trl"]
PROMPTS = ["a photo of a cat", "a photo of a dog", "a red apple", "a blue car", "a green tree", "a small house",
           "a yellow bird", "a white boat"]


def run(cmd: list, log: Path, env: dict | None = None) -> str:
    """Run ``cmd`` with stderr to ``log``; return stdout, or stop with the log's tail."""
    with open(log, "w") as err:
        proc = subprocess.run([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=err, text=True, env=env, cwd=ROOT)
    if proc.returncode:
        tail = log.read_text()[-3000:]
        sys.exit(f"failed ({proc.returncode}): {' '.join(map(str, cmd))}\n{tail}")
    return proc.stdout


def ensure_trl_venv(out: Path) -> None:
    """Create .venv-trl with torch 2.13.0 (CPU), then trl 0.23.1 and transformers 4.x."""
    if TRL_PY.exists() and subprocess.run([TRL_PY, "-c", "import trl"], capture_output=True).returncode == 0:
        return
    print(f"creating {TRL_VENV} (pip log: {out / 'pip.log'})", flush=True)
    run(["python3", "-m", "venv", TRL_VENV], out / "pip.log")
    for pkgs in TRL_INSTALLS:
        run([TRL_PY, "-m", "pip", "install", "-q", *pkgs], out / "pip.log")


def versions(python: Path, out: Path) -> dict:
    """The benchmarked packages' versions in the venv of ``python``."""
    code = ("import importlib.metadata as m, json\nv = {}\n"
            f"for p in {PACKAGES!r}:\n    try: v[p] = m.version(p)\n    except m.PackageNotFoundError: pass\n"
            "print(json.dumps(v))")
    return json.loads(run([python, "-c", code], out / "versions.log"))


def settings(a) -> dict:
    """Shared settings and each stack's batch arithmetic; samples and optimiser steps per epoch match."""
    samples = a.prompts_per_epoch * a.group_size
    if samples % (a.batch_size * a.minibatches):
        sys.exit(f"prompts x group size ({samples}) must be a multiple of batch size x minibatches")
    return {"samples_per_epoch": samples, "optimiser_steps_per_epoch": a.minibatches, "steps": a.steps,
            "guidance": a.guidance, "lr": a.lr, "threads": a.threads, "epochs": a.epochs, "rounds": a.rounds,
            "trl": {"sample_batch_size": a.batch_size, "sample_num_batches_per_epoch": samples // a.batch_size,
                    "train_batch_size": a.batch_size,
                    "train_gradient_accumulation_steps": samples // (a.batch_size * a.minibatches)},
            "rewardlab": {"prompts_per_epoch": a.prompts_per_epoch, "group_size": a.group_size,
                          "batch_size": a.batch_size, "minibatches": a.minibatches}}


def thread_env(threads: int) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def trl_epochs(a, s: dict, folder: Path, prompts: Path, tag: str) -> list[float]:
    t = s["trl"]
    out = a.out / tag
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    cmd = [TRL_PY, HELPER, "train", folder, prompts, "--out", out, "--epochs", a.epochs, "--steps", a.steps,
           "--guidance", a.guidance, "--batch-size", t["sample_batch_size"],
           "--batches", t["sample_num_batches_per_epoch"], "--grad-accum", t["train_gradient_accumulation_steps"],
           "--lr", a.lr, "--threads", a.threads]
    return json.loads(run(cmd, a.out / f"{tag}.log", thread_env(a.threads)).strip().splitlines()[-1])["epoch_s"]


def rewardlab_epochs(a, folder: Path, prompts: Path, tag: str, compile: bool) -> list[float]:
    out = a.out / tag
    shutil.rmtree(out, ignore_errors=True)  # the CLI resumes from an existing run folder
    cmd = [RL_PY, "-m", "rewardlab.cli", "train", "grpo", "-o", out, f"model.generator=sd:{folder}",
           "model.lora_rank=4", "model.lora_alpha=4", "model.eta=1.0", "model.device=cpu",
           f"sample.prompts={prompts}", f"sample.steps={a.steps}", f"sample.guidance={a.guidance}",
           f"sample.group_size={a.group_size}", f"sample.prompts_per_epoch={a.prompts_per_epoch}",
           f"sample.batch_size={a.batch_size}", "reward.names=[jpeg_compressibility]", "reward.options=[]",
           f"train.epochs={a.epochs}", f"train.lr={a.lr}", f"train.minibatches={a.minibatches}",
           "advantage=running", "clip_range=1e-4", "adv_clip=5", "window=0", "train_uncond=true", "eval.every=0",
           "eval.per_tag=1", "eval.images_per_prompt=1", "eval.steps=2", f"eval.prompts={prompts}",
           f"model.compile={str(compile).lower()}"]
    run(cmd, a.out / f"{tag}.log", thread_env(a.threads))
    rows = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    return [r["time/epoch"] for r in rows if "time/epoch" in r]


def per_sample(epoch_s: list[float], samples: int) -> float:
    """Mean seconds per sample over the epochs after the first (all of them if there is one)."""
    kept = epoch_s[1:] or epoch_s
    return sum(kept) / len(kept) / samples


def load() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3, help="TRL run + rewardlab run pairs")
    ap.add_argument("--epochs", type=int, default=2, help="epochs per run (the first is dropped when > 1)")
    ap.add_argument("--threads", type=int, default=2, help="OMP/torch threads of both")
    ap.add_argument("--prompts-per-epoch", type=int, default=16)
    ap.add_argument("--group-size", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=8, help="sampling and training batch of both")
    ap.add_argument("--minibatches", type=int, default=4, help="optimiser steps per epoch")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--guidance", type=float, default=5.0)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--out", type=Path, default=ROOT / "outputs" / "peer_trl_ddpo")
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "peer_trl_ddpo.json")
    a = ap.parse_args()
    s = settings(a)
    a.out.mkdir(parents=True, exist_ok=True)
    ensure_trl_venv(a.out)
    folder, prompts = a.out / "tiny_sd", a.out / "prompts.txt"
    if not (folder / "model_index.json").exists():
        run([TRL_PY, HELPER, "build", folder], a.out / "build.log")
    prompts.write_text("\n".join(PROMPTS) + "\n")
    load_before, rounds = load(), []
    for i in range(a.rounds):
        trl = trl_epochs(a, s, folder, prompts, f"trl_{i}")
        rl = rewardlab_epochs(a, folder, prompts, f"rewardlab_{i}", compile=True)
        eager = rewardlab_epochs(a, folder, prompts, f"rewardlab_eager_{i}", compile=False)
        n = s["samples_per_epoch"]
        rounds.append({"trl_epoch_s": trl, "rewardlab_epoch_s": rl, "rewardlab_eager_epoch_s": eager,
                       "trl_s_per_sample": per_sample(trl, n), "rewardlab_s_per_sample": per_sample(rl, n),
                       "rewardlab_eager_s_per_sample": per_sample(eager, n)})
        print(f"round {i}: trl {rounds[-1]['trl_s_per_sample']:.4f} s/sample, rewardlab "
              f"{rounds[-1]['rewardlab_s_per_sample']:.4f} (eager {rounds[-1]['rewardlab_eager_s_per_sample']:.4f})",
              flush=True)
    med = lambda key: statistics.median(r[key] for r in rounds)  # noqa: E731
    trl_s, rl_s, eager_s = med("trl_s_per_sample"), med("rewardlab_s_per_sample"), med("rewardlab_eager_s_per_sample")
    result = {"ratio": rl_s / trl_s, "trl_s_per_sample": trl_s, "rewardlab_s_per_sample": rl_s,
              "ratio_eager": eager_s / trl_s, "rewardlab_eager_s_per_sample": eager_s,
              "rewardlab_first_epoch_s": statistics.median(r["rewardlab_epoch_s"][0] for r in rounds),
              "rewardlab_eager_first_epoch_s": statistics.median(r["rewardlab_eager_epoch_s"][0] for r in rounds),
              "settings": s,
              "versions": {"trl_venv": versions(TRL_PY, a.out), "rewardlab_venv": versions(RL_PY, a.out)},
              "rounds": rounds, "uptime_before": load_before, "uptime_after": load()}
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"median s/sample: trl {trl_s:.4f}, rewardlab {rl_s:.4f}, rewardlab eager {eager_s:.4f}  ({a.json})")
    print(f"ratio rewardlab/trl: {rl_s / trl_s:.2f}")


if __name__ == "__main__":
    main()
