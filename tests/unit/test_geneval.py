import json

import numpy as np
import pytest

from rewardlab.eval.geneval import (first_per_tag, format_summary, load_results, run_geneval,
                                    summarize)
from rewardlab.world.prompts import build_prompt_sets
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
    def fn(prompts, seeds):
        return np.stack([render_record(records_by_prompt[p], s) for p, s in zip(prompts, seeds)])
    return fn


def test_run_geneval_writes_geneval_layout(tmp_path):
    records = first_per_tag(build_prompt_sets()["eval"], 2)
    by_prompt = {r["prompt"]: r for r in records}
    results = run_geneval(perfect(by_prompt), records, 2, tmp_path, batch_size=5)
    assert len(results) == len(records) * 2
    assert json.loads((tmp_path / "00003" / "metadata.jsonl").read_text()) == records[3]
    assert (tmp_path / "00003" / "samples" / "0001.png").exists()
    lines = load_results(tmp_path / "results.jsonl")
    assert all(isinstance(r["metadata"], str) and r["correct"] for r in lines)
    assert {"filename", "tag", "correct", "prompt", "metadata"} <= set(lines[0])
    assert summarize(lines)["overall"] == 1.0


def test_blank_generator_scores_zero(tmp_path):
    records = first_per_tag(build_prompt_sets()["eval"], 1)
    blank = lambda prompts, seeds: np.full((len(prompts), 32, 32, 3), 240, np.uint8)
    assert summarize(run_geneval(blank, records, 1, tmp_path))["overall"] == 0.0


def test_load_results_errors_name_the_line(tmp_path):
    p = tmp_path / "r.jsonl"
    p.write_text('{"tag": "x", "correct": true, "metadata": "{}"}\n{"tag": "y"}\n')
    with pytest.raises(ValueError, match="r.jsonl:2: missing"):
        load_results(p)
