import json

import pytest

from rewardlab.world.prompts import build_prompt_sets, compositions, is_held_out
from rewardlab.world.records import (TAGS, RecordError, load_records, make_record, parse_prompt,
                                     prompt_for, validate)

GENEVAL_EXAMPLES = {
    "a photo of a circle": ("single_object", [{"class": "circle", "count": 1}]),
    "a photo of a circle and a square": ("two_object", [{"class": "circle", "count": 1},
                                                        {"class": "square", "count": 1}]),
    "a photo of three triangles": ("counting", [{"class": "triangle", "count": 3}]),
    "a photo of a red square": ("colors", [{"class": "square", "count": 1, "color": "red"}]),
    "a photo of a circle left of a triangle": (
        "position", [{"class": "triangle", "count": 1},
                     {"class": "circle", "count": 1, "position": ["left of", 0]}]),
    "a photo of a red circle and a blue square": (
        "color_attr", [{"class": "circle", "count": 1, "color": "red"},
                       {"class": "square", "count": 1, "color": "blue"}]),
}


@pytest.mark.parametrize("prompt", GENEVAL_EXAMPLES)
def test_geneval_templates_parse_to_geneval_records(prompt):
    rec = parse_prompt(prompt)
    tag, include = GENEVAL_EXAMPLES[prompt]
    assert rec["tag"] == tag and rec["include"] == include and rec["prompt"] == prompt


def test_counting_carries_geneval_exclude():
    rec = parse_prompt("a photo of three triangles")
    assert rec["exclude"] == [{"class": "triangle", "count": 4}]


def test_every_composition_round_trips_through_its_prompt():
    for tag in TAGS:
        for rec in compositions(tag, colored_counting=True):
            assert parse_prompt(rec["prompt"]) == rec
            assert prompt_for(rec) == rec["prompt"]


def test_coloured_counting_phrasing():
    rec = parse_prompt("a photo of two red circles")
    assert rec["include"] == [{"class": "circle", "count": 2, "color": "red"}]


def test_unknown_class_is_named():
    with pytest.raises(RecordError, match="bench"):
        parse_prompt("a photo of a bench")
    with pytest.raises(RecordError, match="unknown class 'bench'"):
        validate({"tag": "single_object", "include": [{"class": "bench", "count": 1}],
                  "prompt": "a photo of a bench"})


@pytest.mark.parametrize("record, message", [
    ({"tag": "juggling", "include": [{"class": "circle"}]}, "unknown tag"),
    ({"tag": "colors", "include": [{"class": "circle", "color": "mauve"}]}, "unknown color 'mauve'"),
    ({"tag": "position", "include": [{"class": "circle"}, {"class": "square", "position": ["inside", 0]}]},
     "bad position"),
    ({"tag": "position", "include": [{"class": "circle", "position": ["above", 0]}]}, "bad position"),
    ({"tag": "counting", "include": [{"class": "circle", "count": 9}]}, "outside"),
    ({"tag": "two_object", "include": []}, "no 'include'"),
    ({"tag": "colors", "include": [{"class": "circle"}], "prompt": "  "}, "empty prompt"),
])
def test_invalid_records_are_rejected_with_reason(record, message):
    with pytest.raises(RecordError, match=message):
        validate(record)


def test_empty_and_overlong_prompts():
    with pytest.raises(RecordError, match="empty"):
        parse_prompt("")
    with pytest.raises(RecordError, match="at most"):
        parse_prompt("a photo of " + "red " * 40 + "circle")


def test_load_records_names_file_and_line(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps(make_record("single_object", ["circle"])) + "\n{not json\n")
    with pytest.raises(RecordError, match=r"m.jsonl:2"):
        load_records(path)


def test_held_out_compositions_never_in_train_but_in_eval():
    sets = build_prompt_sets()
    assert not any(is_held_out(r) for r in sets["train"])
    held = [r for r in sets["eval"] if is_held_out(r)]
    assert {r["tag"] for r in held} == {"position", "color_attr"}
    for tag in TAGS:
        assert sum(r["tag"] == tag for r in sets["eval"]) >= 100


def test_shipped_prompt_sets_match_the_generator():
    from rewardlab.world.prompts import prompt_set_path

    sets = build_prompt_sets()
    for name in ("train", "eval"):
        assert load_records(prompt_set_path(name)) == sets[name]


def test_known_words_in_an_unknown_order_get_a_template_hint():
    with pytest.raises(RecordError, match="none of GenEval's templates"):
        parse_prompt("a photo of a red circle left of a square")
