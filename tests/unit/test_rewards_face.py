import numpy as np
import torch

from rewardlab.images import to_tensor
from rewardlab.rewards import load


def drawn_face(size=240):
    """A simple grey-scale face (eyes, brows, nose bridge, mouth) the Haar cascade finds."""
    import cv2

    img = np.full((size, size), 90, np.uint8)
    cv2.ellipse(img, (120, 125), (70, 90), 0, 0, 360, 200, -1)
    for x in (92, 148):
        cv2.ellipse(img, (x, 105), (14, 7), 0, 0, 360, 40, -1)
        cv2.line(img, (x - 16, 88), (x + 16, 88), 60, 4)
    cv2.line(img, (120, 110), (120, 145), 170, 6)
    cv2.ellipse(img, (120, 170), (25, 8), 0, 0, 360, 70, -1)
    return np.repeat(cv2.GaussianBlur(img, (7, 7), 2)[..., None], 3, axis=-1)


def test_face_found_in_a_face_not_in_a_blank_and_batch_invariant():
    reward = load("face")
    face, blank = drawn_face(), np.full((240, 240, 3), 128, np.uint8)
    out = reward(to_tensor([face, blank]), ["a face", "a face"])
    assert out.scores.tolist() == [1.0, 0.0]
    assert out.sub_scores["count"][0] >= 1 and 0.2 < out.sub_scores["largest_area"][0] < 1
    assert reward(to_tensor([face]), [""]).scores.item() == 1.0


def test_face_reward_is_not_differentiable():
    import pytest

    from rewardlab.rewards import RewardError

    with pytest.raises(RewardError, match="not differentiable"):
        load("face")(torch.rand(1, 3, 64, 64, requires_grad=True), [""])
