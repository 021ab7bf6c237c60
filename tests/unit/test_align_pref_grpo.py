"""Pref-GRPO: grpo rewarded by in-group win rates of a pairwise judge (the shipped preference
model), on a tiny random ShapeWorld model."""

import pytest
import torch

from rewardlab.align import recipe_config, recipe_train
from rewardlab.align.rollouts import Rewarder
from rewardlab.config import ConfigError, load_config

from .test_align_harness import metrics, tiny_settings


def pref(weights, *overrides):
    base = [o for o in tiny_settings("grpo", weights) if not o.startswith("reward.")]
    return load_config(recipe_config("pref_grpo"), None, base + ["reward.monitors=[shapeworld]", *overrides])


def test_pref_grpo_trains_on_win_rates(tmp_path, tiny_shapeworld_weights):
    cfg = pref(tiny_shapeworld_weights)
    assert cfg.reward.names == ["preference"] and cfg.reward.aggregate == "win_rate"
    recipe_train("pref_grpo")(cfg, tmp_path)
    rows = metrics(tmp_path)
    for r in rows[1:]:
        # every ordered pair's P(a beats b) + P(b beats a) = 1: a group's win rates average ½
        assert r["reward_mean"] == pytest.approx(0.5, abs=1e-6)
        assert 0 < r["reward_std"] <= 0.5 and "score/preference" in r and "score/shapeworld" in r
    assert rows[-1]["updates"] == 4


def test_win_rates_are_mean_pairwise_probabilities(tiny_shapeworld_weights):
    rewarder = Rewarder(pref(tiny_shapeworld_weights).reward)
    images = torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    prompts = ["a photo of a red circle"] * 5
    groups = torch.tensor([0, 0, 0, 1, 1])
    s = rewarder.judge(images, prompts).scores
    by_hand = [torch.sigmoid(s[i] - s[[j for j in g if j != i]]).mean() for g in ([0, 1, 2], [3, 4]) for i in g]
    assert torch.allclose(rewarder.win_rates(images, prompts, groups), torch.stack(by_hand), atol=1e-6)


def test_win_rate_needs_one_pairwise_reward(tmp_path, tiny_shapeworld_weights):
    for names in ("[jpeg_compressibility]", "[preference,jpeg_compressibility]"):
        with pytest.raises(ConfigError, match="exactly one pairwise reward"):
            recipe_train("pref_grpo")(pref(tiny_shapeworld_weights, f"reward.names={names}"), tmp_path)
    assert not (tmp_path / "metrics.jsonl").exists()
