"""Online DPO (D3PO / RankDPO-style) on a tiny random ShapeWorld model, and the RankDPO loss by hand."""

import math

import pytest
import torch
from safetensors.torch import load_file

from rewardlab.align import recipe_config, recipe_train
from rewardlab.align.losses import diffusion_dpo_loss, rank_dpo_loss
from rewardlab.config import load_config

from .test_align_harness import metrics, tiny_settings


def online(weights, *overrides):
    return load_config(recipe_config("online_dpo"), None, tiny_settings("online_dpo", weights, *overrides))


def test_rank_dpo_loss_by_hand():
    excess = torch.tensor([0.1, -0.2, 0.0])  # e − e_ref per member; the model ranks 1, 2, 0
    scores = torch.tensor([1.0, 0.0, 0.5])  # the judge ranks 0, 2, 1
    loss, stats = rank_dpo_loss(excess, scores, beta=2.0)
    tau = {0: 3, 1: 1, 2: 2}  # rank under −excess
    gain = {i: 2 ** float(scores[i]) - 1 for i in range(3)}
    terms = []
    for i, j in [(0, 1), (0, 2), (2, 1)]:  # ψ_i > ψ_j
        w = abs(gain[i] - gain[j]) * abs(1 / math.log2(1 + tau[i]) - 1 / math.log2(1 + tau[j]))
        terms.append((w, -math.log(1 / (1 + math.exp(excess[i] - excess[j])))))  # −log σ(−β/2·Δ), β/2 = 1
    assert loss.item() == pytest.approx(sum(w * x for w, x in terms) / sum(w for w, _ in terms), rel=1e-6)
    assert stats["implicit_acc"] == 0  # the model's order disagrees with the judge's on every pair
    assert rank_dpo_loss(-excess, scores, beta=2.0)[1]["implicit_acc"] == 1
    # two members, unweighted: exactly Diffusion-DPO on (winner, loser)
    pair, _ = rank_dpo_loss(torch.tensor([0.3, 0.1]), torch.tensor([0.0, 1.0]), beta=5.0, dcg=False)
    dpo, _ = diffusion_dpo_loss(torch.tensor([0.1]), torch.tensor([0.3]), torch.zeros(1), torch.zeros(1), 5.0)
    assert pair.item() == pytest.approx(dpo.item())
    tie, _ = rank_dpo_loss(torch.tensor([0.3, 0.1], requires_grad=True), torch.tensor([1.0, 1.0]), beta=5.0)
    assert tie.item() == 0 and tie.requires_grad  # no decided pair: no signal, still a graph


@pytest.mark.parametrize("pairs", ["best_worst", "rank"])
def test_online_dpo_trains_logs_and_exports(tmp_path, tiny_shapeworld_weights, pairs):
    out = recipe_train("online_dpo")(online(tiny_shapeworld_weights, f"pairs={pairs}", "ref_every=1",
                                                     "train.minibatches=1"), tmp_path)
    rows = metrics(tmp_path)
    assert [r["epoch"] for r in rows] == [0, 1, 2]
    for key in ("reward_mean", "score/shapeworld", "loss", "implicit_acc", "mse", "ref_mse", "live_groups"):
        assert key in rows[-1], key
    assert rows[1]["margin"] == pytest.approx(0, abs=1e-6)  # one step per epoch, the reference moved to the policy after each: no margin before the step
    before, after = load_file(str(tiny_shapeworld_weights)), load_file(str(out))
    assert any(not torch.equal(before[k], after[k]) for k in before)

