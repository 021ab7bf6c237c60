import numpy as np
import pytest

from rewardlab.world.prompts import compositions
from rewardlab.world.records import TAGS
from rewardlab.world.render import Shape, corrupt, relative_position, render, render_record
from rewardlab.world.verify import verify


@pytest.mark.parametrize("tag", TAGS)
def test_every_composition_renders_correctly(tag):
    for i, rec in enumerate(compositions(tag, colored_counting=True)):
        for size in (32, 64):
            v = verify(render_record(rec, seed=i, size=size), rec)
            assert v.correct, (rec["prompt"], size, v.reason)
            assert v.score == 1.0


def test_render_is_seed_deterministic():
    rec = compositions("color_attr")[5]
    a, b = render_record(rec, 3), render_record(rec, 3)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, render_record(rec, 4))
    assert a.shape == (32, 32, 3) and a.dtype == np.uint8


def test_relative_position_follows_geneval():
    left, right = (0, 10, 10, 20), (20, 10, 30, 20)
    assert relative_position(left, right)[0] == {"left of"}
    assert relative_position(right, left)[0] == {"right of"}
    assert relative_position((10, 0, 20, 10), (10, 20, 20, 30))[0] == {"above"}
    # overlapping boxes within the 0.1 threshold: no relation
    assert relative_position((10, 10, 20, 20), (11, 10, 21, 20))[0] == set()
    # diagonal: both relations
    assert relative_position((0, 0, 10, 10), (30, 30, 40, 40))[0] == {"left of", "above"}


def test_corruption_changes_pixels_but_keeps_shape():
    img = render([Shape("circle", "red", 0.5, 0.5, 0.2)], 32)
    bad = corrupt(img, np.random.default_rng(0))
    assert bad.shape == img.shape and not np.array_equal(bad, img)
