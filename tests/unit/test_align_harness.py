"""The training harness under both recipes, on a tiny random ShapeWorld model: logs,
exports, bit-exact resume (also after kill -9), NaN guards and errors before any work."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from rewardlab.align import recipe_config, recipe_train
from rewardlab.config import ConfigError, load_config

TIMING = ("time/", "samples_per_s")


def tiny_settings(recipe, weights, *overrides):
    base = [f"model.weights={weights}", "sample.prompts_per_epoch=2", "sample.group_size=4", "sample.steps=4",
            "sample.batch_size=4", "train.epochs=2", "train.checkpoint_every=1", "eval.every=1", "eval.per_tag=1",
            "eval.images_per_prompt=1", "eval.steps=3",
            # a random tiny model draws no shapes: a reward that varies, the verifier as a monitor
            "reward.names=[jpeg_compressibility]", "reward.options=[shapeworld.mode=partial]",
            "reward.monitors=[shapeworld]"]
    if recipe == "grpo":
        base += ["clip_range=0.01", "window=2"]
    if recipe == "online_dpo":
        base += ["ref_every=2", "pairs=rank"]  # the reference moves once in three epochs
    return base + list(overrides)


def tiny(recipe, weights, *overrides):
    return load_config(recipe_config(recipe), None, tiny_settings(recipe, weights, *overrides))


def metrics(path):
    rows = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith(TIMING)} for r in rows]


def test_nft_trains_logs_and_exports(tmp_path, tiny_shapeworld_weights):
    from rewardlab.world.model import ShapeWorldModel

    out = recipe_train("nft")(tiny("nft", tiny_shapeworld_weights), tmp_path)
    rows = metrics(tmp_path)
    assert [r["epoch"] for r in rows] == [0, 1, 2]
    assert any(k.startswith("reward/") for k in rows[-1])  # per tag of the epoch's prompts
    for key in ("reward_mean", "reward_std", "score/jpeg_compressibility", "score/shapeworld",
                "loss", "grad_norm", "diversity", "eval/overall",
                "eval/position"):
        assert key in rows[-1], key
    assert rows[-1]["updates"] == 4  # 2 epochs × 2 minibatches
    assert len(rows[-1]["palette"]) == 12 and sum(rows[-1]["palette"]) == pytest.approx(1, abs=1e-3)
    assert all(len(r["eval_palette"]) == 12 for r in (rows[0], rows[-1]))  # the evaluations' own
    timing = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"time/sampling", "time/reward", "time/training", "samples_per_s"} <= set(timing)
    assert (tmp_path / "grids" / "epoch_00002.png").exists() and any((tmp_path / "tb").iterdir())
    before, after = load_file(str(tiny_shapeworld_weights)), load_file(str(out))
    assert set(before) == set(after)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    ShapeWorldModel.load(out)  # what eval geneval --weights reads


@pytest.mark.parametrize("recipe", ["nft", "grpo", "online_dpo"])
def test_resume_is_bit_exact(tmp_path, tiny_shapeworld_weights, recipe):
    straight, split = tmp_path / "straight", tmp_path / "split"
    recipe_train(recipe)(tiny(recipe, tiny_shapeworld_weights, "train.epochs=3"), straight)
    recipe_train(recipe)(tiny(recipe, tiny_shapeworld_weights, "train.epochs=2"), split)
    recipe_train(recipe)(tiny(recipe, tiny_shapeworld_weights, "train.epochs=3"), split)  # resumes at 2
    a = torch.load(straight / "checkpoint.pt", weights_only=True)
    b = torch.load(split / "checkpoint.pt", weights_only=True)
    for x, y in zip(a["model"]["params"], b["model"]["params"]):
        assert torch.equal(x, y)
    assert metrics(straight) == metrics(split)
    assert (straight / "weights.safetensors").read_bytes() == (split / "weights.safetensors").read_bytes()


def test_kill_9_then_resume_matches_an_uninterrupted_run(tmp_path, tiny_shapeworld_weights):
    cfg = tiny("nft", tiny_shapeworld_weights, "train.epochs=5", "eval.every=0")
    recipe_train("nft")(cfg, tmp_path / "straight")
    args = [sys.executable, "-m", "rewardlab.cli", "train", "nft", "-o", str(tmp_path / "killed"),
            *tiny_settings("nft", tiny_shapeworld_weights, "train.epochs=5", "eval.every=0")]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckpt, deadline = tmp_path / "killed" / "checkpoint.pt", time.time() + 120
    while time.time() < deadline:  # kill once a checkpoint past epoch 1 is on disk, mid-run
        if ckpt.exists() and torch.load(ckpt, weights_only=True)["step"] >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert torch.load(ckpt, weights_only=True)["step"] < 5, "the run finished before it could be killed"
    done = subprocess.run(args, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "resuming from" in done.stdout
    a = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=True)
    b = torch.load(ckpt, weights_only=True)
    assert all(torch.equal(x, y) for x, y in zip(a["model"]["params"], b["model"]["params"]))
    assert metrics(tmp_path / "straight") == metrics(tmp_path / "killed")


@pytest.mark.parametrize("options", [
    ["window=0", "kl=0.1", "advantage=running"],
    ["window=2", "window_start=1", "ratio_norm=true", "train_guidance=false", "advantage=global"],
    ["model.step_type=dance_sde", "model.eta=0.5", "step_fraction=0.5", "train.inner_epochs=2"],
    ["model.step_type=cps", "model.lora_rank=2"],
])
def test_grpo_variants_run(tmp_path, tiny_shapeworld_weights, options):
    recipe_train("grpo")(tiny("grpo", tiny_shapeworld_weights, "train.epochs=1", "eval.every=0", *options), tmp_path)
    row = metrics(tmp_path)[-1]
    assert row["updates"] == 2 * (2 if "train.inner_epochs=2" in options else 1)
    assert all(row[k] is not None for k in ("loss", "clip_frac", "ratio_mean", "grad_norm"))
    if "kl=0.1" in options:
        assert row["kl"] >= 0


def test_grpo_first_step_is_on_policy(tmp_path, tiny_shapeworld_weights):
    """Before any update the recomputed log-probs equal the sampler's: every ratio is 1."""
    cfg = tiny("grpo", tiny_shapeworld_weights, "train.epochs=1", "train.minibatches=1", "eval.every=0", "window=0")
    recipe_train("grpo")(cfg, tmp_path)
    row = metrics(tmp_path)[-1]
    assert abs(row["ratio_min"] - 1) < 1e-4 and abs(row["ratio_max"] - 1) < 1e-4


@pytest.mark.parametrize("options", [["loss=awm"], ["kl=0.5", "train_guidance=false", "sample.guidance=1"],
                                     ["model.lora_rank=2", "skip_flat_groups=false"]])
def test_nft_variants_run(tmp_path, tiny_shapeworld_weights, options):
    out = recipe_train("nft")(tiny("nft", tiny_shapeworld_weights, "train.epochs=1", "eval.every=0", *options),
                              tmp_path)
    row = metrics(tmp_path)[-1]
    assert row["loss"] is not None and row["updates"] >= 1
    if "model.lora_rank=2" in options:  # LoRA merged into full weights that --weights loads
        assert set(load_file(str(out))) == set(load_file(str(tiny_shapeworld_weights)))


def test_nan_rewards_and_losses_skip_updates(tmp_path, tiny_shapeworld_weights, monkeypatch):
    from rewardlab.align import nft, rollouts

    real_score = rollouts.Rewarder.score
    monkeypatch.setattr(rollouts.Rewarder, "score", lambda self, *a: {k: v * float("nan") for k, v in
                                                                     real_score(self, *a).items()})
    with pytest.warns(RuntimeWarning, match="non-finite rewards"):
        recipe_train("nft")(tiny("nft", tiny_shapeworld_weights, "train.epochs=1", "eval.every=0"), tmp_path / "a")
    row = metrics(tmp_path / "a")[-1]
    assert row["skipped_updates"] == 1 and row["updates"] == 0
    monkeypatch.setattr(rollouts.Rewarder, "score", real_score)
    real_loss = nft.minibatch_loss

    def nan_loss(*a, **k):
        loss, stats = real_loss(*a, **k)
        return loss * float("nan"), stats

    monkeypatch.setattr(nft, "minibatch_loss", nan_loss)
    with pytest.warns(RuntimeWarning, match="non-finite loss"):
        out = recipe_train("nft")(tiny("nft", tiny_shapeworld_weights, "train.epochs=1", "eval.every=0"),
                                  tmp_path / "b")
    assert metrics(tmp_path / "b")[-1]["skipped_updates"] == 2
    before, after = load_file(str(tiny_shapeworld_weights)), load_file(str(out))
    assert all(torch.equal(before[k], after[k]) for k in before)  # nothing applied, nothing corrupted


@pytest.mark.parametrize("recipe, options, message", [
    ("nft", ["reward.names=[no_such_reward]"], "unknown reward"),
    ("nft", ["reward.options=[shapeworld.colour=1]"], "has no option colour"),
    ("nft", ["reward.options=[clipscore.device=cpu]"], "options for rewards that are not used: clipscore"),
    ("grpo", ["model.step_type=ode"], "needs a stochastic step"),
    ("grpo", ["window=9"], "longer than sample.steps"),
    ("nft", ["sample.group_size=3", "train.minibatches=4"], "must divide into 4 minibatches"),
    ("nft", ["sample.prompts=/nonexistent.txt"], "cannot read prompt file"),
    ("nft", [f"sample.tags.{t}=0" for t in ("single_object", "two_object", "counting", "colors", "position",
                                             "color_attr")], "every sample.tags weight is 0"),
    ("nft", ["model.generator=sd3:/nonexistent"], "give sd3 a prompt file"),
])
def test_bad_settings_fail_before_any_work(tmp_path, tiny_shapeworld_weights, recipe, options, message):
    with pytest.raises(ConfigError, match=message):
        recipe_train(recipe)(tiny(recipe, tiny_shapeworld_weights, *options), tmp_path)
    assert not (tmp_path / "metrics.jsonl").exists()


def test_unknown_key_is_a_config_error(tiny_shapeworld_weights):
    with pytest.raises(ConfigError, match="unknown setting 'train.lrr'"):
        tiny("nft", tiny_shapeworld_weights, "train.lrr=1")


def test_nft_trains_at_the_samplers_own_high_noise_levels(tmp_path, tiny_shapeworld_weights, monkeypatch):
    from rewardlab.generators.shapeworld import ShapeWorldGenerator

    seen, real = [], ShapeWorldGenerator.add_noise
    monkeypatch.setattr(ShapeWorldGenerator, "add_noise",
                        lambda self, x0, eps, t: seen.append(t) or real(self, x0, eps, t))
    cfg = tiny("nft", tiny_shapeworld_weights, "train.epochs=1", "eval.every=0", "timesteps=4", "min_level=0.7",
               "skip_flat_groups=false")
    recipe_train("nft")(cfg, tmp_path)
    assert sorted(torch.cat(seen).unique().tolist()) == [0.75, 1.0]  # of the 4-step schedule 1, .75, .5, .25


def test_a_setting_newer_than_the_checkpoint_resumes_at_its_default(tmp_path, tiny_shapeworld_weights):
    from rewardlab.utils import CheckpointError

    recipe_train("nft")(tiny("nft", tiny_shapeworld_weights, "train.epochs=1", "eval.every=0"), tmp_path)
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    del ckpt["config"]["min_level"]  # as written by a version before the setting existed
    torch.save(ckpt, tmp_path / "checkpoint.pt")
    recipe_train("nft")(tiny("nft", tiny_shapeworld_weights, "train.epochs=2", "eval.every=0"), tmp_path)
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["step"] == 2
    with pytest.raises(CheckpointError, match="min_level 0.0 → 0.5"):  # changed: refused
        recipe_train("nft")(tiny("nft", tiny_shapeworld_weights, "train.epochs=3", "eval.every=0",
                                 "min_level=0.5"), tmp_path)
