import math

import pytest
import torch

from rewardlab.data.preferences import (decode_png, load_preferences, make_shapeworld_preferences,
                                        save_preferences)
from rewardlab.rewards import load
from rewardlab.rewards.preference import RMTrainConfig, bt_loss, train_rm
from rewardlab.world.clip import ClipConfig
from rewardlab.world.records import parse_prompt
from rewardlab.world.verify import verify


def test_bt_loss_by_hand():
    one, zero = torch.tensor([1.0]), torch.tensor([0.0])
    assert bt_loss(one, zero, torch.tensor([1.0])).item() == pytest.approx(math.log(1 + math.exp(-1)))
    assert bt_loss(one, zero, torch.tensor([0.0])).item() == pytest.approx(math.log(1 + math.exp(1)))
    tie = 0.5 * (math.log(1 + math.exp(-1)) + math.log(1 + math.exp(1)))
    assert bt_loss(one, zero, torch.tensor([0.5])).item() == pytest.approx(tie)


def test_noiseless_labels_agree_with_the_verifier():
    rows = make_shapeworld_preferences(40, label_noise=0.0, tie_fraction=0.2, seed=3)
    for p, a, b, y in zip(rows["prompt"], rows["image_a"], rows["image_b"], rows["label"]):
        rec = parse_prompt(p)
        ok_a, ok_b = verify(decode_png(a), rec).correct, verify(decode_png(b), rec).correct
        assert (ok_a, ok_b) == {1.0: (True, False), 0.0: (False, True), 0.5: (True, True)}[y]
    assert 0.5 in rows["label"]


def test_label_noise_flips_about_that_fraction():
    clean = make_shapeworld_preferences(300, 0.0, 0.0, seed=5)["label"]
    noisy = make_shapeworld_preferences(300, 0.3, 0.0, seed=5)["label"]
    flipped = sum(a != b for a, b in zip(clean, noisy)) / 300
    assert 0.2 < flipped < 0.4


def test_parquet_round_trip_and_errors(tmp_path):
    rows = make_shapeworld_preferences(5, seed=0)
    save_preferences(rows, tmp_path / "p.parquet")
    assert load_preferences(tmp_path / "p.parquet") == rows
    rows["label"][2] = 0.7
    save_preferences(rows, tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match="row 2"):
        load_preferences(tmp_path / "bad.parquet")
    (tmp_path / "junk.parquet").write_text("nope")
    with pytest.raises(ValueError, match="not a readable parquet"):
        load_preferences(tmp_path / "junk.parquet")


def test_training_resumes_and_the_reward_is_pairwise(tmp_path):
    rows = make_shapeworld_preferences(16, seed=1)
    tiny = ClipConfig(width=16, layers=1, embed=8)
    train_rm(rows, RMTrainConfig(steps=1, batch_size=4, checkpoint_every=1), tmp_path, model_config=tiny)
    weights = train_rm(rows, RMTrainConfig(steps=2, batch_size=4, checkpoint_every=1), tmp_path, model_config=tiny)
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["step"] == 2
    reward = load("preference", weights=weights)
    assert reward.pairwise and reward.differentiable
    a = torch.rand(2, 3, 32, 32).requires_grad_(True)
    p = reward.compare(a, torch.rand(2, 3, 32, 32), ["a photo of a circle"] * 2)
    assert ((p >= 0) & (p <= 1)).all()
    reward(a, ["a photo of a circle"] * 2).scores.sum().backward()
    assert a.grad.abs().sum() > 0


def test_shipped_preference_model_loads():
    reward = load("preference")
    out = reward(torch.rand(2, 3, 32, 32), ["a photo of a circle", "a photo of a red square"])
    assert out.valid.all() and out.scores.shape == (2,)
