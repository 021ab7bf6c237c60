import json

import numpy as np
import pytest
import torch

from rewardlab.eval.geneval import format_summary, judge_folder, load_results, run_geneval, summarize
from rewardlab.images import to_tensor
from rewardlab.rewards import load
from rewardlab.rewards.base import RewardError
from rewardlab.world.prompts import build_prompt_sets
from rewardlab.world.records import first_per_tag
from rewardlab.world.render import render_record


def rows(spec):
    """spec: list of (tag, metadata-id, correct)."""
    return [{"tag": t, "metadata": json.dumps({"id": m}), "correct": c} for t, m, c in spec]


def test_summary_matches_hand_computed_geneval_arithmetic():
    res = rows([("single_object", 1, True), ("single_object", 1, False),
                ("single_object", 2, False), ("single_object", 2, False),
                ("counting", 3, True), ("counting", 3, True),
                ("counting", 4, True), ("counting", 4, False),
                ("position", 5, False), ("position", 5, False)])
    s = summarize(res)
    assert s["images"] == 10 and s["prompts"] == 5
    assert s["correct_images"] == pytest.approx(0.4)
    assert s["correct_prompts"] == pytest.approx(3 / 5)  # prompts 1, 3, 4
    assert list(s["tags"]) == ["single_object", "counting", "position"]  # first-seen order
    assert s["overall"] == pytest.approx((0.25 + 0.75 + 0.0) / 3)
    text = format_summary(s)
    assert "counting         = 75.00% (3 / 4)" in text
    assert text.splitlines()[-1] == "Overall score (avg. over tasks): 0.33333"


def perfect(records_by_prompt):
    """A sampler in the library's one image format: renders that are correct by construction."""
    def fn(prompts, seeds):
        return to_tensor([render_record(records_by_prompt[p], s) for p, s in zip(prompts, seeds)])
    return fn


def blank(prompts, seeds):
    return torch.full((len(prompts), 3, 32, 32), 240 / 255)


def test_run_geneval_writes_geneval_layout(tmp_path):
    records = first_per_tag(build_prompt_sets()["eval"], 2)
    by_prompt = {r["prompt"]: r for r in records}
    results = run_geneval(perfect(by_prompt), None, records, 2, tmp_path, batch_size=5)
    assert len(results) == len(records) * 2
    assert all(r["score"] == 1.0 and r["reason"] == "" for r in results)  # the verifier's partial credit
    assert json.loads((tmp_path / "00003" / "metadata.jsonl").read_text()) == records[3]
    assert (tmp_path / "00003" / "samples" / "0001.png").exists()
    lines = load_results(tmp_path / "results.jsonl")
    assert all(isinstance(r["metadata"], str) and r["correct"] for r in lines)
    assert {"filename", "tag", "correct", "prompt", "metadata"} <= set(lines[0])
    assert summarize(lines)["overall"] == 1.0


def test_judge_folder_rejudges_saved_images_without_generating(tmp_path):
    records = first_per_tag(build_prompt_sets()["eval"], 1)
    by_prompt = {r["prompt"]: r for r in records}
    first = run_geneval(perfect(by_prompt), None, records, 2, tmp_path)
    (tmp_path / "00000" / "samples" / "0001.png").write_bytes((tmp_path / "00001" / "samples" / "0000.png").read_bytes())
    again = judge_folder(tmp_path)  # one image now shows another record's scene
    assert [r["filename"] for r in again] == [r["filename"] for r in first]
    assert [r["correct"] for r in again] == [i != 1 for i in range(len(first))]
    assert load_results(tmp_path / "results.jsonl") == again
    with pytest.raises(ValueError, match="no GenEval samples"):
        judge_folder(tmp_path / "00000")


def test_blank_generator_scores_zero_and_the_verifier_says_why(tmp_path):
    records = first_per_tag(build_prompt_sets()["eval"], 1)
    results = run_geneval(blank, None, records, 1, tmp_path)
    assert summarize(results)["overall"] == 0.0
    assert results[0]["reason"].startswith("expected") and results[0]["score"] == 0.0


def test_any_reward_judges_with_a_threshold(tmp_path):
    """A judge without a binary verdict: correct = score ≥ threshold (here the JPEG size in kB)."""
    records = first_per_tag(build_prompt_sets()["eval"], 1)
    by_prompt = {r["prompt"]: r for r in records}
    judge = load("jpeg_incompressibility")
    images = perfect(by_prompt)([r["prompt"] for r in records], range(len(records)))  # seed of image i: i
    kb = judge(images, ["x"] * len(records)).scores
    cut = float(kb.median())
    results = run_geneval(perfect(by_prompt), judge, records, 1, tmp_path, threshold=cut)
    assert [r["correct"] for r in results] == [bool(k >= cut) for k in kb]
    assert [r["score"] for r in results] == pytest.approx(kb.tolist())
    assert all(r["reason"] == "" for r in results) and load_results(tmp_path / "results.jsonl")
    assert not any(r["correct"] for r in run_geneval(blank, judge, records, 1, tmp_path, threshold=cut))


def test_shapeclip_judges_geneval(tmp_path):
    records = first_per_tag(build_prompt_sets()["eval"], 1)
    results = run_geneval(perfect({r["prompt"]: r for r in records}), load("shapeclip"), records, 1, tmp_path,
                          threshold=0.0)
    assert all(isinstance(r["score"], float) and r["correct"] == (r["score"] >= 0.0) for r in results)


def test_a_sampler_must_return_the_one_image_format(tmp_path):
    records = first_per_tag(build_prompt_sets()["eval"], 1)
    uint8 = lambda prompts, seeds: np.full((len(prompts), 32, 32, 3), 240, np.uint8)
    with pytest.raises(RewardError, match=r"\[B, 3, H, W\]"):
        run_geneval(uint8, None, records, 1, tmp_path)


def test_load_results_errors_name_the_line(tmp_path):
    p = tmp_path / "r.jsonl"
    p.write_text('{"tag": "x", "correct": true, "metadata": "{}"}\n{"tag": "y"}\n')
    with pytest.raises(ValueError, match="r.jsonl:2: missing"):
        load_results(p)
