"""The recipes' losses and advantages against values worked out by hand."""

import math

import pytest
import torch

from rewardlab.align.losses import (PerPromptStats, gaussian_kl, group_advantages, guard_log_ratio,
                                    matching_log_prob, nft_loss, optimality_prob, ppo_clip, ratio_stats)


def test_group_advantages_per_group_and_global():
    r, g = torch.tensor([1.0, 0.0, 1.0, 1.0]), torch.tensor([0, 0, 1, 1])
    assert torch.allclose(group_advantages(r, g, "group"), torch.tensor([1.0, -1.0, 0.0, 0.0]), atol=1e-3)
    std = math.sqrt(0.1875)  # of [1, 0, 1, 1]
    expected = torch.tensor([0.5 / std, -0.5 / std, 0.0, 0.0])
    assert torch.allclose(group_advantages(r, g, "global"), expected, atol=1e-3)
    with pytest.raises(ValueError, match="unknown advantage mode"):
        group_advantages(r, g, "median")


def test_per_prompt_running_stats():
    tracker = PerPromptStats(buffer=4, min_count=2)
    adv = tracker(["a", "a", "b"], torch.tensor([1.0, 3.0, 5.0]))
    # a: its own two rewards (mean 2, std 1); b: too few, so the batch (mean 3, std sqrt(8/3))
    assert torch.allclose(adv, torch.tensor([-1.0, 1.0, 2 / math.sqrt(8 / 3)]), atol=1e-5)
    adv = tracker(["a"], torch.tensor([2.0]))  # buffer a = [1, 3, 2]: mean 2 → advantage 0
    assert abs(adv.item()) < 1e-6
    state = tracker.state_dict()
    fresh = PerPromptStats(buffer=4, min_count=2)
    fresh.load_state_dict(state)
    assert fresh(["a"], torch.tensor([4.0])).item() == tracker(["a"], torch.tensor([4.0])).item()


def test_ppo_clip_by_hand():
    lr = torch.log(torch.tensor([1.5, 1.5, 0.5]))
    adv = torch.tensor([1.0, -1.0, 1.0])
    # ρ=1.5, A=1: max(-1.5, -1.2) = -1.2; A=-1: max(1.5, 1.2) = 1.5; ρ=0.5, A=1: max(-0.5, -0.8) = -0.5
    assert torch.allclose(ppo_clip(lr, adv, 0.2), torch.tensor([-1.2, 1.5, -0.5]))
    stats = ratio_stats(lr, 0.2)
    assert stats["clip_frac"] == 1.0 and stats["ratio_max"] == pytest.approx(1.5)
    assert ratio_stats(torch.zeros(3), 0.2)["clip_frac"] == 0.0


def test_ppo_clip_gradient_stops_outside_the_clip():
    lr = torch.log(torch.tensor([1.5, 1.1])).requires_grad_()
    ppo_clip(lr, torch.tensor([1.0, 1.0]), 0.2).sum().backward()
    assert lr.grad[0] == 0 and lr.grad[1] == pytest.approx(-1.1)


def test_gaussian_kl_and_guard_ratio():
    mean, ref = torch.tensor([[1.0, 2.0]]), torch.zeros(1, 2)
    assert gaussian_kl(mean, ref, 2.0).item() == pytest.approx(2.5 / 8)  # mean(1, 4) / (2·2²)
    lr = guard_log_ratio(torch.tensor([-1.0]), torch.tensor([-2.0]), torch.tensor([[1.0]]), torch.zeros(1, 1), 0.5)
    assert lr.item() == pytest.approx(1 * 0.5 + 1 / (2 * 0.5))


def test_optimality_probability():
    r = optimality_prob(torch.tensor([-10.0, 0.0, 2.5]), 5.0)
    assert torch.allclose(r, torch.tensor([0.0, 0.5, 0.75]))


def test_nft_loss_by_hand():
    x0, x_t, t = torch.zeros(1, 1), torch.ones(1, 1), 0.5
    to_x0 = lambda v: x_t - t * v
    # β = 1, v = v_old = 1: both implicit policies predict x̂0 = 0.5, w = 0.5 → 0.25 / 0.5 = 0.5
    one = torch.ones(1, 1)
    assert nft_loss(one, one, x0, torch.tensor([1.0]), 1.0, to_x0).item() == pytest.approx(0.5)
    assert nft_loss(one, one, x0, torch.tensor([0.0]), 1.0, to_x0).item() == pytest.approx(0.5)
    # β = 0.5, v = 2, v_old = 1, r = 0.25: v⁺ = 1.5 → x̂0 = 0.25 (w 0.25): 0.0625/0.25 = 0.25;
    # v⁻ = 0.5 → x̂0 = 0.75 (w 0.75): 0.5625/0.75 = 0.75; (0.25·0.25 + 0.75·0.75) / 0.5 = 1.25
    v = torch.full((1, 1), 2.0, requires_grad=True)
    v_old = torch.ones(1, 1, requires_grad=True)
    loss = nft_loss(v, v_old, x0, torch.tensor([0.25]), 0.5, to_x0)
    assert loss.item() == pytest.approx(1.25)
    loss.backward()
    # d/dv: [r·2(x̂⁺−x0)/w⁺·(−tβ) + (1−r)·2(x̂⁻−x0)/w⁻·(+tβ)] / β = 0.25·2·(−0.5) + 0.75·2·0.5 = 0.5
    assert v.grad.item() == pytest.approx(0.5)
    assert v_old.grad is None  # the old policy is a constant


def test_nft_positive_pull_and_negative_push():
    """r = 1 pulls v towards the target velocity; r = 0 pushes it away (the implicit negative)."""
    x0, eps = torch.zeros(1, 4), torch.ones(1, 4)
    t = 0.5
    x_t = (1 - t) * x0 + t * eps
    target = eps - x0
    for r, sign in ((1.0, 1), (0.0, -1)):
        v = (target + 0.3).clone().requires_grad_()
        nft_loss(v, target + 0.3, x0, torch.tensor([r]), 1.0, lambda p: x_t - t * p).backward()
        assert sign * v.grad.sum().item() > 0  # a descent step moves v towards (r=1) / away from (r=0) the target


def test_matching_log_prob():
    assert matching_log_prob(torch.tensor([[1.0, 3.0]]), torch.zeros(1, 2)).item() == pytest.approx(-5.0)
