"""The verifier on hand-built scenes, with near-miss negatives for every tag."""

import pytest

from rewardlab.world.records import parse_prompt
from rewardlab.world.render import Shape, render
from rewardlab.world.verify import detect, verify


def scene(*shapes, size=32):
    return render([Shape(*s) for s in shapes], size)


LEFT, RIGHT, TOP, BOTTOM = (0.25, 0.5), (0.75, 0.5), (0.5, 0.25), (0.5, 0.75)


def judge(prompt, *shapes):
    return verify(scene(*shapes), parse_prompt(prompt))


def test_detects_class_colour_and_box():
    objs = detect(scene(("triangle", "yellow", 0.3, 0.3, 0.2), ("square", "blue", 0.7, 0.7, 0.18)))
    assert sorted((o.cls, o.color) for o in objs) == [("square", "blue"), ("triangle", "yellow")]
    tri = next(o for o in objs if o.cls == "triangle")
    assert abs((tri.box[0] + tri.box[2]) / 2 - 0.3 * 32) < 1.5


def test_empty_image_has_no_objects():
    assert detect(scene()) == []
    v = judge("a photo of a circle")
    assert not v.correct and v.score == 0.0


def test_single_object():
    assert judge("a photo of a circle", ("circle", "green", 0.5, 0.5, 0.2)).correct
    assert not judge("a photo of a circle", ("square", "green", 0.5, 0.5, 0.2)).correct
    assert not judge("a photo of a triangle", ("circle", "green", 0.5, 0.5, 0.2)).correct


def test_two_object_needs_both():
    ok = judge("a photo of a circle and a square", ("circle", "red", *LEFT, 0.18), ("square", "blue", *RIGHT, 0.18))
    assert ok.correct
    miss = judge("a photo of a circle and a square", ("circle", "red", *LEFT, 0.18), ("circle", "blue", *RIGHT, 0.18))
    assert not miss.correct and miss.score == pytest.approx(0.5)


def test_counting_exact_with_exclude():
    three = [("triangle", "red", 0.22, 0.25, 0.15), ("triangle", "blue", 0.75, 0.25, 0.15),
             ("triangle", "green", 0.25, 0.75, 0.15)]
    fourth = ("triangle", "yellow", 0.75, 0.75, 0.15)
    assert judge("a photo of three triangles", *three).correct
    too_many = judge("a photo of three triangles", *three, fourth)
    assert not too_many.correct and "expected triangle<4" in too_many.reason
    too_few = judge("a photo of three triangles", *three[:2])
    assert not too_few.correct and too_few.checks["include[0].count"] == pytest.approx(2 / 3)
    # another class does not count, and does not hurt
    assert judge("a photo of two triangles", *three[:2], ("circle", "red", 0.75, 0.75, 0.15)).correct


def test_colors():
    assert judge("a photo of a red square", ("square", "red", 0.5, 0.5, 0.2)).correct
    wrong = judge("a photo of a red square", ("square", "yellow", 0.5, 0.5, 0.2))
    assert not wrong.correct and wrong.checks["include[0].color"] == 0.0


@pytest.mark.parametrize("rel, place_a, place_b", [
    ("left of", LEFT, RIGHT), ("right of", RIGHT, LEFT), ("above", TOP, BOTTOM), ("below", BOTTOM, TOP)])
def test_position_right_and_wrong_side(rel, place_a, place_b):
    prompt = f"a photo of a circle {rel} a square"
    assert judge(prompt, ("circle", "red", *place_a, 0.15), ("square", "blue", *place_b, 0.15)).correct
    wrong = judge(prompt, ("circle", "red", *place_b, 0.15), ("square", "blue", *place_a, 0.15))
    assert not wrong.correct and wrong.checks["include[1].position"] == 0.0


def test_position_too_close_to_call_is_wrong():
    # centres 0.1 apart horizontally, objects 0.3 wide: inside GenEval's threshold
    v = judge("a photo of a circle left of a square", ("circle", "red", 0.45, 0.2, 0.15),
              ("square", "blue", 0.55, 0.75, 0.15))
    assert not v.correct


def test_color_attr_swapped_colours_fail():
    prompt = "a photo of a red circle and a blue square"
    assert judge(prompt, ("circle", "red", *LEFT, 0.18), ("square", "blue", *RIGHT, 0.18)).correct
    swapped = judge(prompt, ("circle", "blue", *LEFT, 0.18), ("square", "red", *RIGHT, 0.18))
    assert not swapped.correct
    assert swapped.checks["include[0].count"] == 1.0 and swapped.checks["include[0].color"] == 0.0


def test_verifier_works_at_64px():
    img = scene(("circle", "blue", *LEFT, 0.15), ("triangle", "yellow", *RIGHT, 0.15), size=64)
    assert verify(img, parse_prompt("a photo of a blue circle and a yellow triangle")).correct


def test_rejects_non_uint8_images():
    import numpy as np

    with pytest.raises(ValueError, match="uint8"):
        detect(np.zeros((32, 32, 3), np.float32))
