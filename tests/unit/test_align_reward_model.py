"""The rm recipe (align/reward_model.py) on a tiny ShapeCLIP and a handful of pairs: the loss by
hand, logs and exports, bit-exact resume after a crash and after kill -9, NaN guards, errors
before any work, and the CLI (``train rm`` and the moved ``rm train``)."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from typer.testing import CliRunner

from rewardlab.align import recipe_config, recipe_train
from rewardlab.align.losses import bt_loss
from rewardlab.cli import app
from rewardlab.config import ConfigError, load_config
from rewardlab.data.preferences import make_shapeworld_preferences, png_bytes, save_preferences
from rewardlab.rewards import load

REPO = __import__("pathlib").Path(__file__).resolve().parents[2]
runner = CliRunner()


@pytest.fixture(scope="module")
def prefs(tmp_path_factory):
    path = tmp_path_factory.mktemp("prefs") / "p.parquet"
    save_preferences(make_shapeworld_preferences(12, tie_fraction=0.25, seed=1), path)
    return path


def settings(prefs, weights, *overrides):
    return [f"data.train={prefs}", f"data.eval={prefs}", f"model.weights={weights}", "train.steps=4",
            "train.batch_size=4", "train.checkpoint_every=2", "eval.every=2", *overrides]


def tiny(prefs, weights, *overrides):
    return load_config(recipe_config("rm"), None, settings(prefs, weights, *overrides))


def metrics(path):
    rows = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]


def test_bt_loss_by_hand():
    one, zero = torch.tensor([1.0]), torch.tensor([0.0])
    assert bt_loss(one, zero, torch.tensor([1.0])).item() == pytest.approx(math.log(1 + math.exp(-1)))
    assert bt_loss(one, zero, torch.tensor([0.0])).item() == pytest.approx(math.log(1 + math.exp(1)))
    tie = 0.5 * (math.log(1 + math.exp(-1)) + math.log(1 + math.exp(1)))
    assert bt_loss(one, zero, torch.tensor([0.5])).item() == pytest.approx(tie)
    s = torch.tensor([0.0, 2.0], requires_grad=True)  # a tie pulls the scores together
    bt_loss(s[:1], s[1:], torch.tensor([0.5])).backward()
    assert s.grad[0] < 0 < s.grad[1]


def test_rm_trains_logs_and_exports_a_pairwise_reward(tmp_path, prefs, tiny_clip_weights):
    weights = recipe_train("rm")(tiny(prefs, tiny_clip_weights), tmp_path)
    assert weights == tmp_path / "weights.safetensors"
    rows = metrics(tmp_path)
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 4]
    assert set(rows[0]) == {"step", "eval/loss", "eval/accuracy"}  # before training
    for key in ("loss", "accuracy", "grad_norm", "skipped_updates", "eval/loss", "eval/accuracy"):
        assert key in rows[2] and key in rows[4], key
    assert "eval/loss" not in rows[3]
    assert (tmp_path / "config.yaml").exists() and any((tmp_path / "tb").iterdir())
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["step"] == 4
    reward = load("preference", weights=weights)
    assert reward.pairwise and reward.differentiable
    a = torch.rand(2, 3, 32, 32).requires_grad_(True)
    p = reward.compare(a, torch.rand(2, 3, 32, 32), ["a photo of a circle"] * 2)
    assert ((p >= 0) & (p <= 1)).all()
    reward(a, ["a photo of a circle"] * 2).scores.sum().backward()
    assert a.grad.abs().sum() > 0


def test_resume_after_a_crash_is_bit_exact(tmp_path, prefs, tiny_clip_weights):
    straight, crashed = tmp_path / "straight", tmp_path / "crashed"
    recipe_train("rm")(tiny(prefs, tiny_clip_weights, "train.steps=5"), straight)

    def crash(step, _):
        if step == 3:  # after step 3 is logged, before its work is checkpointed (every 2 steps)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        recipe_train("rm")(tiny(prefs, tiny_clip_weights, "train.steps=5"), crashed, crash)
    assert torch.load(crashed / "checkpoint.pt", weights_only=True)["step"] == 2
    recipe_train("rm")(tiny(prefs, tiny_clip_weights, "train.steps=5"), crashed)  # resumes at 2, redoes 3
    a = torch.load(straight / "checkpoint.pt", weights_only=True)
    b = torch.load(crashed / "checkpoint.pt", weights_only=True)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert metrics(straight) == metrics(crashed)
    assert (straight / "weights.safetensors").read_bytes() == (crashed / "weights.safetensors").read_bytes()


def test_kill_9_then_resume_matches_an_uninterrupted_run(tmp_path, prefs, tiny_clip_weights):
    args = settings(prefs, tiny_clip_weights, "train.steps=16", "eval.every=0", "data.eval=none")
    recipe_train("rm")(load_config(recipe_config("rm"), None, args), tmp_path / "straight")
    cmd = [sys.executable, "-m", "rewardlab.cli", "train", "rm", "-o", str(tmp_path / "killed"), *args]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckpt, deadline = tmp_path / "killed" / "checkpoint.pt", time.time() + 120
    while time.time() < deadline:  # kill once a checkpoint is on disk, mid-run
        if ckpt.exists() and torch.load(ckpt, weights_only=True)["step"] >= 2:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert torch.load(ckpt, weights_only=True)["step"] < 16, "the run finished before it could be killed"
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "resuming from" in done.stdout
    assert ((tmp_path / "straight" / "weights.safetensors").read_bytes()
            == (tmp_path / "killed" / "weights.safetensors").read_bytes())
    assert metrics(tmp_path / "straight") == metrics(tmp_path / "killed")


def test_non_finite_losses_skip_updates(tmp_path, prefs, tiny_clip_weights, monkeypatch):
    import rewardlab.align.reward_model as rm

    calls = []

    def flaky(s_a, s_b, label):  # the second training step's loss is NaN
        calls.append(1)
        loss = bt_loss(s_a, s_b, label)
        return loss * float("nan") if len(calls) == 2 else loss

    monkeypatch.setattr(rm, "bt_loss", flaky)
    with pytest.warns(RuntimeWarning, match="update skipped"):
        recipe_train("rm")(tiny(prefs, tiny_clip_weights, "data.eval=none"), tmp_path)
    rows = metrics(tmp_path)
    assert rows[1]["loss"] is None and [r["skipped_updates"] for r in rows] == [0, 1, 1, 1]


@pytest.mark.parametrize("options, message", [
    (["data.train=none"], "data.train is required"),
    (["data.train=/nonexistent.parquet"], "data.train: /nonexistent.parquet: not a readable parquet"),
    (["model.weights=/nonexistent.safetensors"], "weights not found"),
])
def test_bad_settings_fail_before_any_work(tmp_path, prefs, tiny_clip_weights, options, message):
    with pytest.raises((ConfigError, FileNotFoundError), match=message):
        recipe_train("rm")(tiny(prefs, tiny_clip_weights, *options), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_bad_data_is_refused_before_any_work(tmp_path, prefs, tiny_clip_weights):
    import numpy as np

    rows = make_shapeworld_preferences(3, seed=0)  # (unknown words: test_cli_errors)
    rows["image_b"][2] = png_bytes(np.zeros((16, 24, 3), np.uint8))
    save_preferences(rows, tmp_path / "mixed.parquet")
    with pytest.raises(ConfigError, match=r"data.eval: .*mixed.parquet: the images differ in size \(24x16, 32x32\)"):
        recipe_train("rm")(tiny(prefs, tiny_clip_weights, f"data.eval={tmp_path / 'mixed.parquet'}"), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_changed_settings_are_refused_and_resumable_ones_allowed(tmp_path, prefs, tiny_clip_weights):
    recipe_train("rm")(tiny(prefs, tiny_clip_weights, "train.steps=2"), tmp_path)
    from rewardlab.utils import CheckpointError

    with pytest.raises(CheckpointError, match="train.lr 0.001 → 0.002"):
        recipe_train("rm")(tiny(prefs, tiny_clip_weights, "train.steps=3", "train.lr=2e-3"), tmp_path)
    recipe_train("rm")(tiny(prefs, tiny_clip_weights, "train.steps=3", "eval.every=3", "data.eval=none"), tmp_path)
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["step"] == 3


# ---- the CLI ----
def test_train_rm_cli_prints_config_and_refuses_unknown_keys(tmp_path):
    r = runner.invoke(app, ["train", "rm", "--config", str(REPO / "configs" / "rm_shapeworld.yaml"), "--print-config",
                            "train.lr=5e-4"])
    assert r.exit_code == 0, r.output
    import yaml

    cfg = yaml.safe_load(r.output)
    assert cfg["train.steps"] == 2000 and cfg["train.lr"] == 5e-4 and cfg["data.train"] == "runs/prefs.parquet"
    r = runner.invoke(app, ["train", "rm", "-o", str(tmp_path / "run"), "train.lrr=1"])
    assert r.exit_code == 2 and "unknown setting 'train.lrr' (did you mean train.lr?)" in r.output
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("setting, words", [
    ("train.batch_size=0", "must be ≥ 1"), ("train.checkpoint_every=0", "must be ≥ 1"),
    ("train.lr=nan", "must be a finite number"), ("train.lr=-1", "must be positive"),
    ("train.max_grad_norm=0", "must be positive"), ("eval.every=-1", "must be ≥ 0"), ("train.seed=-1", "must be ≥ 0"),
])
def test_nonsense_values_are_refused(tmp_path, setting, words):
    r = runner.invoke(app, ["train", "rm", "-o", str(tmp_path / "run"), setting])
    key = setting.partition("=")[0]
    assert r.exit_code == 2 and f"error: {key}=" in r.output and words in r.output, r.output
    assert not (tmp_path / "run").exists()


def test_shipped_preset_is_the_shipped_run():
    """configs/rm_shapeworld.yaml: the README's run of the shipped preference reward (2000 steps)."""
    from rewardlab.config import settings as keys

    assert all(s.help for s in keys(recipe_config("rm")))
    cfg = load_config(recipe_config("rm"), REPO / "configs" / "rm_shapeworld.yaml")
    assert (cfg.train.steps, cfg.train.batch_size, cfg.train.lr, cfg.train.seed) == (2000, 64, 1e-3, 0)
    assert cfg.model.weights is None  # random initial weights


def test_old_rm_train_says_where_it_moved(prefs):
    r = runner.invoke(app, ["rm", "train", str(prefs), "--steps", "2"])
    assert r.exit_code == 2 and f"rewardlab train rm --config configs/rm_shapeworld.yaml -o RUN data.train={prefs}" \
        in " ".join(r.output.split())


def test_a_setting_newer_than_the_checkpoint_resumes_at_its_default(tmp_path, prefs, tiny_clip_weights):
    from rewardlab.utils import CheckpointError

    recipe_train("rm")(tiny(prefs, tiny_clip_weights, "train.steps=2"), tmp_path)
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    del ckpt["config"]["train.weight_decay"]  # as a version before the setting existed wrote it
    torch.save(ckpt, tmp_path / "checkpoint.pt")
    with pytest.raises(CheckpointError, match=r"train.weight_decay 0.01 → 0.5"):  # set otherwise: refused
        recipe_train("rm")(tiny(prefs, tiny_clip_weights, "train.steps=4", "train.weight_decay=0.5"), tmp_path)
    recipe_train("rm")(tiny(prefs, tiny_clip_weights, "train.steps=4"), tmp_path)
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["step"] == 4
