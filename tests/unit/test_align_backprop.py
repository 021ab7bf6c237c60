"""Reward backpropagation on a tiny random ShapeWorld model: each mode trains, logs and
raises a differentiable reward's gradient where it should; the graph reaches only the steps
the mode keeps; checkpointing changes memory, not the update; non-differentiable rewards are
refused before any work."""

import json

import pytest
import torch
from safetensors.torch import load_file

from rewardlab.align import recipe_config, recipe_train
from rewardlab.align.backprop import differentiable_sample
from rewardlab.align.common import start
from rewardlab.config import ConfigError, load_config


def tiny(weights, *overrides):
    base = [f"model.weights={weights}", "sample.prompts_per_epoch=2", "sample.group_size=2", "sample.steps=4",
            "sample.batch_size=4", "train.epochs=2", "train.checkpoint_every=1", "train.minibatches=2",
            "eval.every=0", "eval.per_tag=1", "eval.images_per_prompt=1", "eval.steps=3", "train.lr=1e-3",
            "reward.names=[shapeclip]", "reward.options=[shapeworld.mode=partial]", "reward.monitors=[shapeworld]"]
    return load_config(recipe_config("backprop"), None, base + list(overrides))


@pytest.mark.parametrize("mode", [["mode=draft", "k=2"], ["mode=draft", "k=4", "checkpoint=true"],
                                  ["mode=draft_lv", "lv_samples=2"], ["mode=refl"]])
def test_every_mode_trains_and_logs(tmp_path, tiny_shapeworld_weights, mode):
    out = recipe_train("backprop")(tiny(tiny_shapeworld_weights, *mode), tmp_path)
    rows = [json.loads(ln) for ln in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    last = rows[-1]
    for key in ("reward_mean", "score/shapeclip", "score/shapeworld", "loss", "grad_norm", "palette"):
        assert key in last and last[key] is not None, key
    assert last["updates"] == 4 and last["loss"] == pytest.approx(-last["reward_mean"], rel=1e-4)
    before, after = load_file(str(tiny_shapeworld_weights)), load_file(str(out))
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_the_graph_reaches_only_the_kept_steps(tmp_path, tiny_shapeworld_weights):
    """DRaFT-K's gradient is the gradient through the last K steps of the same chain: with
    K = steps it equals AlignProp's checkpointed one, which recomputes each step's network
    passes in the backward pass; with K = 1 it differs."""
    def grads(*overrides):
        run = start(tiny(tiny_shapeworld_weights, *overrides), tmp_path / "_".join(overrides), "backprop")
        calls, inner = [0], run.gen.denoise
        run.gen.denoise = lambda *a: (calls.__setitem__(0, calls[0] + 1), inner(*a))[1]
        images = differentiable_sample(run, run.cfg, ["a photo of a red circle"] * 2, [3, 4], 0, 0, [0, 1])
        forward = calls[0]
        images.mean().backward()
        assert not any(p.grad is not None for p in run.gen.model.text_encoder.parameters())  # frozen
        return torch.cat([p.grad.flatten() for p in run.params if p.grad is not None]), forward, calls[0] - forward

    full, fwd, rerun = grads("k=4")
    full_ckpt, fwd_ckpt, rerun_ckpt = grads("k=4", "checkpoint=true")
    last, *_ = grads("k=1")
    assert rerun == 0 and rerun_ckpt == fwd_ckpt == fwd  # checkpointing reruns every differentiated step's passes
    assert torch.allclose(full, full_ckpt, rtol=1e-4, atol=1e-7)
    assert full.norm() > 0 and last.norm() > 0 and not torch.allclose(full, last)


def test_resume_is_bit_exact(tmp_path, tiny_shapeworld_weights):
    for mode in (["mode=draft_lv"], ["mode=refl"]):
        straight, split = tmp_path / f"straight_{mode[0]}", tmp_path / f"split_{mode[0]}"
        recipe_train("backprop")(tiny(tiny_shapeworld_weights, "train.epochs=3", *mode), straight)
        recipe_train("backprop")(tiny(tiny_shapeworld_weights, "train.epochs=2", *mode), split)
        recipe_train("backprop")(tiny(tiny_shapeworld_weights, "train.epochs=3", *mode), split)  # resumes at 2
        a = torch.load(straight / "checkpoint.pt", weights_only=True)
        b = torch.load(split / "checkpoint.pt", weights_only=True)
        assert all(torch.equal(x, y) for x, y in zip(a["model"]["params"], b["model"]["params"]))


def test_non_differentiable_rewards_are_refused_before_any_work(tmp_path, tiny_shapeworld_weights):
    with pytest.raises(ConfigError, match="backprop needs differentiable rewards; shapeworld is not"):
        recipe_train("backprop")(tiny(tiny_shapeworld_weights, "reward.names=[shapeworld]",
                                      "reward.monitors=[]"), tmp_path)
    assert not (tmp_path / "checkpoint.pt").exists()
    with pytest.raises(ConfigError, match="refl_range"):
        recipe_train("backprop")(tiny(tiny_shapeworld_weights, "mode=refl", "refl_range=[0.9,0.2]"), tmp_path)
