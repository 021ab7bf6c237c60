import numpy as np
import pytest
import torch
from PIL import Image

from rewardlab.images import HUES, ImageError, grid, hue_fractions, hue_histogram, load_image, to_tensor, to_uint8


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "P", "L", "LA", "CMYK", "I;16"])
def test_odd_modes_convert_to_rgb(tmp_path, mode):
    path = tmp_path / f"im.{'tiff' if mode in ('CMYK', 'I;16') else 'png'}"
    Image.new("RGB", (5, 4), (200, 30, 30)).convert(mode).save(path)
    arr = load_image(path)
    assert arr.shape == (4, 5, 3) and arr.dtype == np.uint8


def test_bad_files_give_clear_errors(tmp_path):
    good = tmp_path / "good.png"
    Image.new("RGB", (8, 8)).save(good)
    trunc = tmp_path / "trunc.png"
    trunc.write_bytes(good.read_bytes()[:20])
    with pytest.raises(ImageError, match="trunc.png"):
        load_image(trunc)
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "missing.png")
    (tmp_path / "text.png").write_text("hello")
    with pytest.raises(ImageError, match="text.png: not a readable image"):
        load_image(tmp_path / "text.png")


def test_tensor_round_trip_and_size_check():
    arr = np.random.default_rng(0).integers(0, 256, (2, 6, 6, 3), dtype=np.uint8)
    t = to_tensor(list(arr))
    assert t.shape == (2, 3, 6, 6) and t.dtype == torch.float32 and t.max() <= 1
    assert np.array_equal(to_uint8(t), arr)
    with pytest.raises(ImageError, match="differ in size"):
        to_tensor([arr[0], arr[0, :5]])


def test_grid_tiles_images():
    g = grid(np.zeros((3, 4, 4, 3), np.uint8), cols=2)
    assert g.shape == (12, 12, 3)


def test_hue_histogram_shares_pixels_between_the_nearest_bins_by_hand():
    pixels = [(1, 0, 0), (1, 0, 0.1),  # red 0°; 354°: 0.8 red, 0.2 rose (across 0°)
              (1, 0.25, 0), (1, 1, 0), (0, 1, 0), (0, 0, 1),  # 15°: half red, half orange; 60°; 120°; 240°
              (0.5, 0.5, 0.5), (1, 1, 1), (0, 0, 0),  # greys, white, black: no hue
              (0.1, 0, 0), (1, 0.8, 0.8)]  # too dark (value 0.1), too pale (saturation 0.2)
    images = torch.tensor(pixels, dtype=torch.float32).T.reshape(1, 3, 1, len(pixels))
    counts = hue_histogram(images)
    expect = {"red": 1 + 0.8 + 0.5, "orange": 0.5, "yellow": 1, "green": 1, "blue": 1, "rose": 0.2}
    assert counts.tolist() == pytest.approx([expect.get(h, 0) for h in HUES], abs=1e-6)
    assert hue_fractions(counts) == pytest.approx([round(expect.get(h, 0) / 6, 4) for h in HUES], abs=1e-4)
    assert hue_fractions(hue_histogram(torch.full((2, 3, 4, 4), 0.5))) is None  # nothing coloured


def test_a_slight_tint_moves_the_histogram_slightly():
    """No bin edge to jump: turning every hue by 2° moves at most 2/30 of the counts, wherever
    the colours sit (hard bins would move a whole colour sitting on an edge)."""
    import colorsys

    def batch(shift):
        rgb = [colorsys.hsv_to_rgb(((h + shift) % 360) / 360, 0.8, 0.9) for h in range(0, 360, 7)]
        return torch.tensor(rgb, dtype=torch.float32).T.reshape(1, 3, 1, -1)

    a, b = hue_histogram(batch(0)), hue_histogram(batch(2))
    assert 0 < 0.5 * (a / a.sum() - b / b.sum()).abs().sum() <= 2 / 30 + 1e-6
    one = torch.tensor(colorsys.hsv_to_rgb(225.9 / 360, 0.8, 0.8)).view(1, 3, 1, 1)  # ShapeWorld's blue
    assert hue_histogram(one)[HUES.index("blue")] == pytest.approx(0.53, abs=0.01)  # beside azure, not over an edge
