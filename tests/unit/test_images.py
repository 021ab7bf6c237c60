import numpy as np
import pytest
import torch
from PIL import Image

from rewardlab.images import ImageError, grid, load_image, to_tensor, to_uint8


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
