"""Diffusion-DPO: the loss by hand; the recipe on a tiny random ShapeWorld model from a tiny
preference parquet (logs, weights, bit-exact resume, a reference that stays frozen), public
formats (rankings become pairs, other sizes are fitted, unreadable images cost their pair),
unusable data refused before any work, and a preference set of the model's own samples."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from rewardlab.align import recipe_config, recipe_train
from rewardlab.align.common import ParamCopy, start
from rewardlab.align.dpo import pair_loss
from rewardlab.align.losses import diffusion_dpo_loss
from rewardlab.align.pref_data import encode_pairs, epoch_order, fit, load_pairs, make_sample_preferences
from rewardlab.config import ConfigError, load_config
from rewardlab.data.pref_formats import read_preference_set, winner_loser_pairs
from rewardlab.data.preferences import (load_preferences, make_shapeworld_preferences, png_bytes,
                                        save_preferences)

CONFIGS = Path(__file__).parents[2] / "configs"
pytestmark = pytest.mark.filterwarnings("ignore:.*left out 2 ties")  # the fixture's ties, checked once below


@pytest.fixture(scope="module")
def prefs(tmp_path_factory):
    """8 verifier-labelled ShapeWorld pairs, 10% label noise, about a quarter ties."""
    path = tmp_path_factory.mktemp("dpo") / "prefs.parquet"
    save_preferences(make_shapeworld_preferences(8, label_noise=0.1, tie_fraction=0.25, seed=0), path)
    return path


def tiny(weights, data, *overrides):
    """The shipped preset, shrunk."""
    base = [f"model.weights={weights}", f"data={data}", "sample.prompts_per_epoch=4", "sample.batch_size=4",
            "train.epochs=2", "train.checkpoint_every=1", "train.lr=1e-3", "eval.every=1", "eval.per_tag=1",
            "eval.images_per_prompt=1", "eval.steps=3"]
    return load_config(recipe_config("dpo"), CONFIGS / "dpo_shapeworld.yaml", base + list(overrides))


def test_loss_by_hand():
    err_w, err_l = torch.tensor([0.3, 0.5], requires_grad=True), torch.tensor([0.5, 0.4])
    ref_w, ref_l = torch.tensor([0.4, 0.4], requires_grad=True), torch.tensor([0.4, 0.4])
    loss, stats = diffusion_dpo_loss(err_w, err_l, ref_w, ref_l, beta=2.0)
    # inside = −β/2·[(e_w − r_w) − (e_l − r_l)]: −1·[(−0.1) − 0.1] = 0.2 and −1·[0.1 − 0] = −0.1
    assert torch.allclose(loss, torch.tensor([math.log(1 + math.exp(-0.2)), math.log(1 + math.exp(0.1))]))
    assert stats["implicit_acc"] == 0.5 and stats["margin"] == pytest.approx(0.05)
    loss.sum().backward()
    # ∂/∂e_w = β/2·σ(−inside) > 0: a smaller winner error lowers the loss; the reference gets no gradient
    assert torch.allclose(err_w.grad, torch.sigmoid(-torch.tensor([0.2, -0.1])))
    assert ref_w.grad is None
    same, s = diffusion_dpo_loss(torch.ones(3), torch.ones(3), torch.ones(3), torch.ones(3), 5000.0)
    assert torch.allclose(same, torch.full((3,), math.log(2))) and s["implicit_acc"] == 0  # the policy at the reference


def test_rankings_ties_order_and_fit(tmp_path):
    for v in (10, 20, 30):
        (tmp_path / f"{v}.png").write_bytes(png_bytes(np.full((6, 6, 3), v, np.uint8)))
    (tmp_path / "hpd.json").write_text(json.dumps([{"prompt": "p", "image_path": ["10.png", "20.png", "30.png"],
                                                    "rank": [2, 1, 2]}]))
    pairs, ties = winner_loser_pairs(read_preference_set(tmp_path / "hpd.json"))
    assert [(w.name, l.name) for _, w, l in pairs] == [("20.png", "10.png"), ("20.png", "30.png")] and ties == 1
    orders = [epoch_order(5, 3, 0, e) for e in range(5)]  # 15 draws: three passes, each pair once per pass
    assert all(sorted(np.concatenate(orders)[k:k + 5].tolist()) == list(range(5)) for k in (0, 5, 10))
    assert np.array_equal(epoch_order(5, 3, 0, 2), orders[2])
    img = np.zeros((40, 80, 3), np.uint8)
    img[:, 20:60] = 255  # the centre square survives the crop
    out = fit(img, 16, 16)
    assert out.shape == (16, 16, 3) and out[:, 1:-1].min() == 255  # the black sides are cropped away


def test_trains_logs_and_exports(tmp_path, tiny_shapeworld_weights, prefs):
    with pytest.warns(UserWarning, match="left out 2 ties"):
        out = recipe_train("dpo")(tiny(tiny_shapeworld_weights, prefs), tmp_path)
    rows = [json.loads(ln) for ln in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1, 2]
    for key in ("loss", "implicit_acc", "margin", "mse", "ref_mse", "grad_norm", "eval/overall", "data/unreadable"):
        assert rows[-1][key] is not None, key
    assert rows[-1]["data/pairs"] == 6 and rows[-1]["data/ties_skipped"] == 2 and rows[-1]["updates"] == 4
    before, after = load_file(str(tiny_shapeworld_weights)), load_file(str(out))
    assert set(before) == set(after) and any(not torch.equal(before[k], after[k]) for k in before)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)  # the frozen reference: the start
    start_params = ParamCopy([p for p in start(tiny(tiny_shapeworld_weights, prefs), tmp_path / "x", "dpo").params])
    assert all(torch.equal(a, b) for a, b in zip(state["copies"]["ref"], start_params.values))


def test_resume_is_bit_exact(tmp_path, tiny_shapeworld_weights, prefs):
    straight, split = tmp_path / "straight", tmp_path / "split"
    recipe_train("dpo")(tiny(tiny_shapeworld_weights, prefs, "train.epochs=3", "eval.every=0"), straight)
    recipe_train("dpo")(tiny(tiny_shapeworld_weights, prefs, "train.epochs=2", "eval.every=0"), split)
    recipe_train("dpo")(tiny(tiny_shapeworld_weights, prefs, "train.epochs=3", "eval.every=0"), split)
    a = torch.load(straight / "checkpoint.pt", weights_only=True)
    b = torch.load(split / "checkpoint.pt", weights_only=True)
    assert all(torch.equal(x, y) for x, y in zip(a["model"]["params"], b["model"]["params"]))
    skip = ("time/", "samples_per_s", "eval")  # timings; the split run also evaluated at epoch 2 (eval/, eval_palette)
    strip = lambda p: [{k: v for k, v in json.loads(ln).items() if not k.startswith(skip)}  # noqa: E731
                       for ln in (p / "metrics.jsonl").read_text().splitlines()]
    assert strip(straight) == strip(split)


@pytest.mark.parametrize("lora", [0, 2])
def test_the_reference_stays_frozen(tmp_path, tiny_shapeworld_weights, prefs, lora):
    """At the start the policy is the reference (loss log 2, margin 0); after a step the
    policy's errors move and the reference's do not; gradients reach only the policy."""
    cfg = tiny(tiny_shapeworld_weights, prefs, f"model.lora_rank={lora}")
    run = start(cfg, tmp_path, "dpo")
    ref = ParamCopy(run.params) if not lora else None
    pairs = load_pairs(cfg)[0][:4]
    x_w, x_l, ok = encode_pairs(run.gen, pairs, 4)
    args = (run, cfg, [p[0] for p in pairs], x_w, x_l, ok, torch.arange(4), 0, 0, ref)
    loss, stats = pair_loss(*args)
    assert loss.item() == pytest.approx(math.log(2)) and stats["margin"] == 0 and stats["mse"] == stats["ref_mse"]
    loss.backward()
    assert all(p.grad is not None for p in run.params) and any(p.grad.abs().sum() > 0 for p in run.params)
    assert not any(p.grad is not None for p in run.gen.model.text_encoder.parameters())
    run.optimizer.step()
    _, after = pair_loss(*args)
    assert after["ref_mse"] == stats["ref_mse"] and after["mse"] != stats["mse"]


def test_public_format_with_other_sizes_and_a_missing_image(tmp_path, tiny_shapeworld_weights):
    rng = np.random.default_rng(0)
    for k in range(3):
        (tmp_path / f"{k}.png").write_bytes(png_bytes(rng.integers(0, 255, (48, 40, 3), dtype=np.uint8)))
    rows = [{"prompt": "a photo of a red circle", "generations": ["0.png", "1.png", "2.png"], "ranking": [1, 2, 3]},
            {"prompt": "a photo of a square", "generations": ["0.png", "gone.png"], "ranking": [1, 2]}]
    (tmp_path / "ir.json").write_text(json.dumps(rows))
    with pytest.warns(RuntimeWarning, match="gone.png"):
        recipe_train("dpo")(tiny(tiny_shapeworld_weights, tmp_path / "ir.json", "train.epochs=1", "eval.every=0"),
                            tmp_path / "run")
    last = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["data/pairs"] == 4 and last["data/unreadable"] == 1 and last["updates"] == 2


def test_unusable_data_is_refused_before_any_work(tmp_path, tiny_shapeworld_weights, prefs):
    ties = tmp_path / "ties.parquet"
    rows = load_preferences(prefs)
    save_preferences({**rows, "label": [0.5] * len(rows["label"])}, ties)
    (tmp_path / "odd.json").write_text(json.dumps([{"text": "a photo of a circle", "pic": "x.png"}]))
    words = tmp_path / "words.parquet"
    save_preferences({**rows, "prompt": ["a photo of a purple hexagon"] * len(rows["label"])}, words)
    for data, match in [(None, "set data=PATH"), (tmp_path / "none.parquet", "no such file"),
                        (tmp_path / "odd.json", "cannot tell the format"), (ties, "no decided pair"),
                        (words, "hexagon")]:
        with pytest.raises(ConfigError, match=match):
            recipe_train("dpo")(tiny(tiny_shapeworld_weights, data or "null"), tmp_path / "run")
        assert not (tmp_path / "run").exists()


def test_preferences_from_the_models_own_samples(tiny_shapeworld_weights, monkeypatch):
    """A model's own samples judged by a verifier (here one that prefers bright images, so the
    tiny random model's samples differ): the winner of every pair is the better sample, in the
    project's parquet format; label noise flips labels."""
    from rewardlab.data.preferences import decode_png
    from rewardlab.generators import load_generator
    from rewardlab.world import verify

    bright = lambda img, rec: verify.Verdict(bool(img.mean() > 127), float(img.mean()) / 255)  # noqa: E731
    monkeypatch.setattr(verify, "verify", bright)
    gen = load_generator(f"shapeworld:{tiny_shapeworld_weights}", device="cpu")
    rows = make_sample_preferences(gen, 5, label_noise=0.0, samples_per_prompt=3, steps=2, seed=1)
    assert len(rows["label"]) == 5 and set(rows) == {"prompt", "image_a", "image_b", "label"}
    for a, b, y in zip(rows["image_a"], rows["image_b"], rows["label"]):
        assert (decode_png(a).mean() > decode_png(b).mean()) == (y == 1)
    noisy = make_sample_preferences(gen, 5, label_noise=0.5, samples_per_prompt=3, steps=2, seed=1)
    assert noisy["image_a"] == rows["image_a"] and noisy["label"] != rows["label"]
