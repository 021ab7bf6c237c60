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


# --- a clean scene, or nothing: the verifier cannot be fooled --------------------------

import numpy as np  # noqa: E402

from rewardlab.world.adversarial import KINDS, scenes  # noqa: E402
from rewardlab.world.records import TAGS  # noqa: E402
from rewardlab.world.verify import analyse  # noqa: E402


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_adversarial_kinds_are_rejected_with_zero_credit(kind):
    # on correct layouts for every tag: only the cleanliness rules stand in the way
    for tag in TAGS:
        for img, rec in scenes(kind, tag, 4, seed=3):
            v = verify(img, rec)
            assert not v.correct, (kind, rec["prompt"])
            if analyse(img).flaw:  # not a scene at all: no partial credit to farm
                assert v.score == 0.0 and v.reason


@pytest.mark.parametrize("size", [32, 64])
def test_clean_and_corrupted_renders_still_pass(size):
    for kind in ("clean", "corrupted"):
        results = [verify(img, rec).correct for tag in TAGS for img, rec in scenes(kind, tag, 10, size, seed=5)]
        assert sum(results) >= len(results) - (1 if kind == "corrupted" else 0), kind


def test_uniform_noise_says_why():
    img = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    v = verify(img, parse_prompt("a photo of a circle and a square"))
    assert not v.correct and v.score == 0.0 and v.checks and set(v.checks.values()) == {0.0}
    assert "background" in v.reason or "no clean object" in v.reason or "clutter" in v.reason


def test_clutter_beside_a_correct_scene_is_rejected():
    img = scene(("circle", "red", *LEFT, 0.18))
    img[2:30, 26:29] = (45, 85, 215)  # a thick blue bar: no clean object explains it
    v = verify(img, parse_prompt("a photo of a circle"))
    assert not v.correct and v.reason.startswith(("clutter", "no clean object"))
    img[2:30, 26:29] = (120, 120, 120)  # a grey bar is no object at all, but still clutter
    v = verify(img, parse_prompt("a photo of a circle"))
    assert not v.correct and v.reason.startswith("clutter") and v.score == 0.0


def test_hollow_and_cut_shapes_do_not_count():
    ring = scene(("circle", "green", 0.5, 0.5, 0.25))
    ring[12:20, 12:20] = 242  # punch a hole: filling holes must not make it solid
    assert "not solid" in analyse(ring).rejected[0].flaw
    assert not verify(ring, parse_prompt("a photo of a circle")).correct
    half = scene(("square", "blue", 0.5, 0.5, 0.25))
    half[:, 16:] = 242  # a 1:2 rectangle is not a square
    assert not verify(half, parse_prompt("a photo of a square")).correct


def test_blurred_and_fused_shapes_are_flawed():
    from scipy import ndimage

    img = scene(("circle", "red", 0.5, 0.5, 0.22)).astype(float)
    blurred = ndimage.gaussian_filter(img, (2.5, 2.5, 0), mode="nearest").round().astype(np.uint8)
    assert not verify(blurred, parse_prompt("a photo of a circle")).correct
    fused = scene(("circle", "red", 0.4, 0.4, 0.2), ("circle", "red", 0.6, 0.6, 0.2))
    sc = analyse(fused)
    assert not verify(fused, parse_prompt("a photo of a circle")).correct
    assert sc.rejected and sc.flaw
