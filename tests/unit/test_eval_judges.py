"""Judge benchmarks: PickScore-style scoring by hand, every reader on a file of its format,
missing images and malformed rows counted, the ShapeWorld judge set's labels."""

import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from rewardlab.cli import app
from rewardlab.data.pref_formats import read_preference_set as read_judge_set
from rewardlab.eval.judges import choose_tau, evaluate_judge, predict, score_items, spearman, tie_accuracy
from rewardlab.rewards.base import Reward, RewardOutput


class Brightness(Reward):
    """Mean pixel value: the judge whose verdicts we can work out by hand."""

    name = "brightness"

    def score(self, images, prompts, metadata):
        return RewardOutput(images.mean(dim=(1, 2, 3)))


def png(v: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), v, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_tie_accuracy_and_tau_by_hand():
    assert [tie_accuracy(p, y) for p, y in [(1, 1), (0, 0), (0.5, 0.5), (1, 0), (0.5, 1), (0, 0.5)]] == \
        [1, 1, 1, 0, 0.5, 0.5]
    assert predict(0.3, 0.1) == 1 and predict(0.1, 0.3) == 0 and predict(0.3, 0.25, tau=0.05) == 0.5
    # diffs 0.01 (a tie label), 0.02 (tie), 0.5 (first wins), -0.4 (second wins): τ = 0.02 makes all four right
    assert choose_tau(np.array([0.01, 0.02, 0.5, -0.4]), np.array([0.5, 0.5, 1, 0])) == pytest.approx(0.02)
    assert choose_tau(np.array([0.3, -0.2]), np.array([1, 0])) == 0.0
    assert spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1) and spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1)


def test_mjbench_parquet_with_categories_ties_and_a_missing_image(tmp_path):
    (tmp_path / "dark.png").write_bytes(png(10))
    struct = lambda b=None, p=None: {"bytes": b, "path": p}  # noqa: E731  (Hugging Face's image struct)
    rows = {"caption": ["p"] * 5,
            "image0": [struct(png(200)), struct(png(10)), struct(png(90)), struct(p="dark.png"),
                       struct(p="missing.png")],
            "image1": [png(100), png(100), png(90), png(50), png(1)],
            "label": [0, 0, 0.5, 1, 0],  # 0: image0 preferred
            "category": ["a", "a", "b", "b", "b"], "subcategory": ["x", "y", "", "", ""]}
    pq.write_table(pa.table(rows), tmp_path / "mj.parquet")
    data = read_judge_set(tmp_path / "mj.parquet")
    assert data.format == "mjbench" and [i.label for i in data.items] == [1, 1, 0.5, 0, 1]
    r = evaluate_judge(Brightness(), data)
    cats = r["categories"]
    # pair 1 right, pair 2 wrong; pair 3 a tie predicted for a tie (1); pair 4 right; pair 5 skipped
    assert cats["a"]["accuracy"] == 0.5 and cats["a/x"]["accuracy"] == 1 and cats["a/y"]["accuracy"] == 0
    assert cats["b"] == {"pairs": 2, "tie_labels": 1, "accuracy": 1.0, "accuracy_no_ties": 1.0}
    assert cats["overall"]["pairs"] == 4 and cats["overall"]["accuracy"] == 0.75
    assert r["skipped"] == {"missing or unreadable image": 1} and r["scored"] == 4
    small = score_items(Brightness(), read_judge_set(tmp_path / "mj.parquet"), chunk=2)  # images read 2 at a time
    assert small == score_items(Brightness(), read_judge_set(tmp_path / "mj.parquet")) and small[4] is None


def test_pickapic_preference_and_malformed_rows(tmp_path):
    pq.write_table(pa.table({"caption": ["p", "q", "r"], "jpg_0": [png(50), png(50), png(50)],
                             "jpg_1": [png(60), png(60), png(60)], "label_0": [0.0, 0.5, 0.7],
                             "label_1": [1.0, 0.5, 0.3]}), tmp_path / "pick.parquet")
    data = read_judge_set(tmp_path / "pick.parquet")
    assert data.format == "pickapic" and [i.label for i in data.items] == [0, 0.5]
    assert sum(data.skipped.values()) == 1  # label 0.7 is no verdict
    r = evaluate_judge(Brightness(), data)
    assert r["categories"]["overall"]["accuracy"] == 0.75  # right, then a tie label with a decided prediction
    pq.write_table(pa.table({"prompt": ["p"], "image_a": [png(9)], "image_b": [png(99)], "label": [0.0]}),
                   tmp_path / "pref.parquet")
    assert evaluate_judge(Brightness(), read_judge_set(tmp_path / "pref.parquet"))["categories"]["overall"][
        "accuracy"] == 1


@pytest.mark.parametrize("fmt", ["hpdv2", "imagereward"])
def test_rankings_give_every_pair_and_spearman(tmp_path, fmt):
    for v in (10, 20, 30, 40):
        (tmp_path / f"{v}.png").write_bytes(png(v))
    files, ranks = ["40.png", "30.png", "20.png", "10.png"], [1, 2, 3, 4]  # brighter ranked better
    rows = [{"prompt": "p", "image_path": files, "rank": ranks} if fmt == "hpdv2" else
            {"prompt": "p", "generations": files, "ranking": ranks},
            {"prompt": "q"}]  # malformed
    (tmp_path / "test.json").write_text(json.dumps(rows))
    data = read_judge_set(tmp_path / "test.json")
    assert data.format == fmt and len(data.items) == 1 and sum(data.skipped.values()) == 1
    r = evaluate_judge(Brightness(), data)
    assert r["categories"]["overall"]["pairs"] == 6 and r["categories"]["overall"]["accuracy"] == 1
    assert r["spearman"] == pytest.approx(1.0)


def test_tau_is_chosen_on_the_validation_set(tmp_path):
    # validation: near-equal images are ties; the test set's near-equal pair is then predicted a tie
    for v in (50, 100, 101, 103, 120, 122, 200):
        (tmp_path / f"{v}.png").write_bytes(png(v))
    val = [{"caption": "p", "image0": f"{a}.png", "image1": f"{b}.png", "label": y}
           for a, b, y in [(100, 101, "tie"), (100, 103, "tie"), (200, 50, 0)]]
    (tmp_path / "val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in val))
    (tmp_path / "test.jsonl").write_text(json.dumps({"caption": "p", "image0": "120.png", "image1": "122.png",
                                                     "label": "tie"}) + "\n")
    test = read_judge_set(tmp_path / "test.jsonl")
    r = evaluate_judge(Brightness(), test, val=read_judge_set(tmp_path / "val.jsonl"))
    assert r["tau"] == pytest.approx(3 / 255, abs=1e-6) and r["categories"]["overall"]["accuracy"] == 1
    assert evaluate_judge(Brightness(), test)["categories"]["overall"]["accuracy"] == 0.5


def test_shapeworld_judge_set_and_cli(tmp_path):
    runner = CliRunner()
    out = tmp_path / "judges.parquet"
    r = runner.invoke(app, ["eval", "make-judge-set", str(out), "--per-subcategory", "4"])
    assert r.exit_code == 0, r.output
    data = read_judge_set(out)
    cats = {(i.category, i.subcategory) for i in data.items}
    assert ("quality", "jpeg") in cats and ("near_miss", "position") in cats and ("alignment", "binding") in cats
    r = runner.invoke(app, ["eval", "judge", str(out), "--reward", "shapeworld", "-o", str(tmp_path / "r.json")])
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["categories"]["alignment"]["accuracy"] == 1.0  # the labels are the verifier's by construction
    assert report["categories"]["near_miss"]["accuracy"] == 1.0
    r = runner.invoke(app, ["eval", "judge", str(tmp_path / "nope.json"), "--reward", "shapeclip"])
    assert r.exit_code == 2 and "no such file" in r.output
    r = runner.invoke(app, ["eval", "judge", str(out), "--reward", "shapeclip", "--format", "csv"])
    assert r.exit_code == 2 and "unknown format" in r.output


def test_choose_tau_sweep_matches_trying_every_tau():
    rng = np.random.default_rng(0)
    for _ in range(20):
        diffs = np.round(rng.normal(0, 1, 30), 1)  # rounded: equal |differences| and exact zeros occur
        labels = rng.choice([0, 0.5, 1], 30)

        def acc(tau):
            return np.mean([tie_accuracy(predict(d, 0, tau), y) for d, y in zip(diffs, labels)])

        candidates = np.unique(np.r_[0, np.abs(diffs)])
        best = max(acc(t) for t in candidates)
        assert acc(choose_tau(diffs, labels)) == pytest.approx(best)
        assert choose_tau(diffs, labels) == min(t for t in candidates if acc(t) == pytest.approx(best))
