import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from rewardlab.images import to_tensor
from rewardlab.rewards import load
from rewardlab.rewards.detectors import levenshtein, ocr_score, quoted_text


def test_edit_distance_and_score_by_hand():
    assert levenshtein("kitten", "sitting") == 3 and levenshtein("", "abc") == 3
    assert ocr_score("Hello World 2024!", "hello world") == 1.0
    assert ocr_score("HELO", "hello") == pytest.approx(1 - 1 / 5)
    assert ocr_score("", "hello") == 0.0
    assert quoted_text('a sign that says "Open 24h"') == "Open 24h" and quoted_text("no quotes") is None


def text_image(text):
    img = Image.new("RGB", (320, 96), "white")
    ImageDraw.Draw(img).text((10, 20), text, fill="black", font=ImageFont.load_default(size=32))
    return np.asarray(img)


def test_ocr_reads_rendered_text():
    reward = load("ocr")
    images = to_tensor([text_image("HELLO WORLD"), np.full((96, 320, 3), 255, np.uint8)])
    out = reward(images, ['a sign saying "hello world"', 'a sign saying "hello world"'])
    assert out.scores.tolist() == [1.0, 0.0] and out.valid.all()
    assert not reward(images[:1], ["no quoted text"]).valid.any()
