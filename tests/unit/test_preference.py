"""Preference datasets and the shipped preference reward (its training: test_align_reward_model.py)."""

import pytest
import torch

from rewardlab.data.preferences import (decode_png, load_preferences, make_shapeworld_preferences,
                                        save_preferences)
from rewardlab.rewards import load
from rewardlab.world.records import parse_prompt
from rewardlab.world.verify import verify


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


def test_shipped_preference_model_loads():
    reward = load("preference")
    out = reward(torch.rand(2, 3, 32, 32), ["a photo of a circle", "a photo of a red square"])
    assert out.valid.all() and out.scores.shape == (2,)
