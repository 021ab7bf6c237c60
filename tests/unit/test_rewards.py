import pytest
import torch

from rewardlab.images import to_tensor
from rewardlab.rewards import RewardError, available, load
from rewardlab.rewards.combine import (decoupled_advantages, group_normalize, log_tamed, pareto_front,
                                       pairwise_win_rate, uncertainty_penalized, weighted_sum)
from rewardlab.world.records import parse_prompt
from rewardlab.world.render import render_record

PROMPT = "a photo of a red circle and a blue square"


def images_for(prompts, seeds):
    return to_tensor([render_record(parse_prompt(p), s) for p, s in zip(prompts, seeds)])


def test_registry_lists_and_loads():
    names = available()
    assert set(names) == {"shapeworld", "jpeg_compressibility", "jpeg_incompressibility", "face", "ocr", "brisque",
                          "clipscore", "pickscore", "laion_aesthetic", "hpsv2", "hpsv2.1", "imagereward", "vlm_judge",
                          "shapeclip", "preference", "geneval", "remote"}
    assert all(isinstance(d, str) and d for d in names.values())
    with pytest.raises(KeyError, match="unknown reward 'nope'"):
        load("nope")
    for name in names:  # every factory exposes its options, so a typo is caught before anything loads
        with pytest.raises(ValueError, match=f"reward '{name}' has no option colour"):
            load(name, colour="red")


def test_shapeworld_reward_binary_partial_and_batch_invariance():
    good = images_for([PROMPT], [0])
    wrong = images_for(["a photo of a blue circle and a blue square"], [0])
    r = load("shapeworld")
    out = r(torch.cat([good, wrong]), [PROMPT, PROMPT])
    assert out.scores.tolist() == [1.0, 0.0] and out.valid.all()
    partial = load("shapeworld", mode="partial")(torch.cat([good, wrong]), [PROMPT, PROMPT])
    assert partial.scores[0] == 1.0 and 0 < partial.scores[1] < 1
    assert r(wrong, [PROMPT]).scores.item() == out.scores[1].item()


def test_unreadable_prompt_is_marked_invalid_not_used():
    out = load("shapeworld")(images_for([PROMPT, PROMPT], [0, 1]), [PROMPT, "a photo of a bench"])
    assert out.valid.tolist() == [True, False] and out.scores.tolist() == [1.0, 0.0]


def test_jpeg_rewards_prefer_simple_or_busy_images():
    flat = torch.full((1, 3, 32, 32), 0.5)
    noisy = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    imgs = torch.cat([flat, noisy])
    comp = load("jpeg_compressibility")(imgs, ["", ""]).scores
    incomp = load("jpeg_incompressibility")(imgs, ["", ""]).scores
    assert comp[0] > comp[1] and incomp[1] > incomp[0]
    assert torch.allclose(comp, -incomp)


def test_non_differentiable_reward_refuses_gradients_and_bad_input():
    imgs = torch.rand(1, 3, 8, 8, requires_grad=True)
    with pytest.raises(RewardError, match="not differentiable"):
        load("jpeg_compressibility")(imgs, [""])
    with pytest.raises(RewardError, match="2 prompts"):
        load("jpeg_compressibility")(imgs.detach(), ["", ""])
    with pytest.raises(RewardError, match=r"\[B, 3, H, W\]"):
        load("jpeg_compressibility")(torch.rand(3, 8, 8), [""])


def test_nan_scores_are_invalid():
    from rewardlab.rewards import RewardOutput

    out = RewardOutput(torch.tensor([1.0, float("nan"), float("inf")]))
    assert out.valid.tolist() == [True, False, False] and out.scores.tolist() == [1.0, 0.0, 0.0]


def test_aggregations_by_hand():
    s = {"a": torch.tensor([1.0, 2.0, 3.0, 4.0]), "b": torch.tensor([10.0, 0.0, 10.0, 30.0])}
    assert weighted_sum(s, {"a": 2.0}).tolist() == [12.0, 4.0, 16.0, 38.0]
    groups = torch.tensor([0, 0, 1, 1])
    assert torch.allclose(group_normalize(s["a"], groups), torch.tensor([-1.0, 1.0, -1.0, 1.0]), atol=1e-5)
    # b's spread (10 vs 20) does not outweigh a: both normalise to ±1
    assert torch.allclose(decoupled_advantages(s, groups), torch.tensor([0.0, 0.0, -2.0, 2.0]), atol=1e-5)
    assert pareto_front(s).tolist() == [False, False, False, True]
    assert pareto_front({"a": torch.tensor([1.0, 2.0]), "b": torch.tensor([2.0, 1.0])}).tolist() == [True, True]
    ens = torch.tensor([[1.0, 2.0], [3.0, 2.0]])
    assert uncertainty_penalized(ens, 0.5).tolist() == [1.5, 2.0]


def test_log_tamed_tames_only_the_high_variation_reward():
    s = {"a": torch.tensor([1.0, 2.0, 3.0, 4.0]), "b": torch.tensor([10.0, 0.0, 10.0, 30.0])}
    # h = std/mean: a 1.118/2.5 = 0.447, b 10.897/12.5 = 0.872; mean threshold 0.66 tames b only
    expected = s["a"] + torch.log1p(s["b"])
    assert torch.allclose(log_tamed(s), expected)
    assert torch.allclose(log_tamed(s, threshold="median"), expected)
    assert torch.allclose(log_tamed(s, {"b": 0.5}, threshold=0.5), s["a"] + 0.5 * torch.log1p(s["b"]))
    assert torch.allclose(log_tamed(s, threshold=1.0), s["a"] + s["b"])  # nothing above 1.0
    with pytest.raises(ValueError, match="<= -1"):
        log_tamed({"a": torch.tensor([1.0, 1.0]), "b": torch.tensor([-2.0, 9.0])})
    with pytest.raises(ValueError, match="threshold"):
        log_tamed(s, threshold="max")


def test_pairwise_win_rate_by_hand():
    quality = torch.tensor([0.0, 1.0, 2.0, 5.0])
    compare = lambda a, b: (quality[a] > quality[b]).float()
    rates = pairwise_win_rate(compare, torch.tensor([0, 0, 0, 1]))
    assert rates.tolist() == [0.0, 0.5, 1.0, 0.0]
    unreadable = lambda a, b: torch.where((a == 0) & (b == 1), float("nan"), compare(a, b))
    # 0 vs 1 unreadable, a tie: 0 gets (0.5 + 0) / 2, 1 gets (0.5 + 0) / 2; each pair judged once
    calls = []
    counted = lambda a, b: calls.append(len(a)) or unreadable(a, b)
    assert pairwise_win_rate(counted, torch.tensor([0, 0, 0])).tolist() == [0.25, 0.25, 1.0]
    assert calls == [3]
