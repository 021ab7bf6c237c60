"""Data parallelism: two CPU processes under torchrun (gloo) end with identical weights on
both ranks, equal to one process training on the same global batch."""

import json
import os
import subprocess
import sys

import pytest
import torch

ARGS = ["sample.prompts_per_epoch=2", "sample.group_size=4", "sample.steps=4", "sample.batch_size=4",
        "train.epochs=2", "train.checkpoint_every=1", "eval.every=0", "eval.per_tag=1", "eval.images_per_prompt=1",
        "eval.steps=3"]


def _train(out, weights, nproc, recipe, extra=None):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
                "--master_port", str(29500 + os.getpid() % 1000 + nproc)] if nproc > 1 else [sys.executable]
    if extra is None:
        extra = ["window=2", "clip_range=0.01"] if recipe == "grpo" else []
    cmd = launcher + ["-m", "rewardlab.cli", "train", recipe, "-o", str(out), f"model.weights={weights}"] + ARGS + extra
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return torch.load(out / "checkpoint.pt", weights_only=True)


def test_two_ranks_match_one_process(tmp_path, tiny_shapeworld_weights):
    for recipe in ("nft", "grpo"):
        one = _train(tmp_path / f"{recipe}1", tiny_shapeworld_weights, 1, recipe)
        two = _train(tmp_path / f"{recipe}2", tiny_shapeworld_weights, 2, recipe)
        rows = [json.loads(x) for x in (tmp_path / f"{recipe}2" / "metrics.jsonl").read_text().splitlines()]
        assert [r["rank_param_spread"] for r in rows if "rank_param_spread" in r] == [0.0, 0.0]  # ranks agree
        for a, b in zip(one["model"]["params"], two["model"]["params"]):
            assert torch.allclose(a, b, atol=1e-5, rtol=1e-4), recipe
        assert two["updates"] == one["updates"] == 4
        rows1 = [json.loads(x) for x in (tmp_path / f"{recipe}1" / "metrics.jsonl").read_text().splitlines()]
        assert [r["reward_mean"] for r in rows1] == [r["reward_mean"] for r in rows]  # the same rollouts
        palettes = [[r["palette"] for r in rs if "palette" in r] for rs in (rows1, rows)]  # both ranks' pixels
        assert len(palettes[1]) == 2 and palettes[0] == [pytest.approx(p, abs=1e-4) for p in palettes[1]]


def test_groups_spanning_ranks_match_one_process(tmp_path, tiny_shapeworld_weights):
    """One prompt of 8 samples: its group lives on both ranks — Pref-GRPO's win rates and online
    DPO's rankings need the whole group (images gathered), so 2 ranks must equal 1 process."""
    one_group = ["sample.prompts_per_epoch=1", "sample.group_size=8", "train.minibatches=1"]  # (later keys win)
    for recipe, extra in (("pref_grpo", ["window=2", "clip_range=0.01", "reward.monitors=[shapeworld]"]),
                          ("online_dpo", ["pairs=rank", "reward.names=[jpeg_compressibility]", "reward.options=[]"])):
        one = _train(tmp_path / f"{recipe}1", tiny_shapeworld_weights, 1, recipe, one_group + extra)
        two = _train(tmp_path / f"{recipe}2", tiny_shapeworld_weights, 2, recipe, one_group + extra)
        rows = [[json.loads(x) for x in (tmp_path / f"{recipe}{n}" / "metrics.jsonl").read_text().splitlines()]
                for n in (1, 2)]
        assert [r["reward_std"] for r in rows[0]] == pytest.approx([r["reward_std"] for r in rows[1]], rel=1e-4)
        assert all(r["reward_std"] > 0 for r in rows[1])  # the rewards vary within the group: a signal
        # a random tiny model's samples look alike to the judge: win rates within ~1e-3 of ½, whose
        # per-group normalisation turns the samplers' float noise (other batches) into 1e-4 steps
        atol = 1e-3 if recipe == "pref_grpo" else 1e-5
        for a, b in zip(one["model"]["params"], two["model"]["params"]):
            assert torch.allclose(a, b, atol=atol, rtol=1e-4), recipe
