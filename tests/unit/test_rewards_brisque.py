import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from rewardlab.images import to_tensor
from rewardlab.rewards import RewardError, load
from rewardlab.rewards.brisque import aggd_fit


def scene(noise=0.0):
    """A smooth colour scene (96×128), optionally with Gaussian noise of std ``noise`` (0-255)."""
    yy, xx = np.mgrid[0:96, 0:128]
    img = np.stack([np.sin(xx / 7) + np.cos(yy / 11), np.cos(xx / 5 + yy / 9), np.sin((xx + yy) / 13)], -1)
    img = (img - img.min()) / (img.max() - img.min()) * 255
    if noise:
        img = np.clip(img + np.random.default_rng(0).normal(0, noise, img.shape), 0, 255)
    return img.astype(np.uint8)


def test_brisque_matches_the_reference_package():
    # brisque 0.2.0 (libsvm 3.x, features flattened for numpy 2.4) scored these two images
    # 83.10886762981542 and 38.40463519499369; see benchmarks/brisque_reference.py
    reward = load("brisque")
    out = reward(to_tensor([scene(), scene(20)]).double(), ["", ""])
    assert out.sub_scores["brisque"].tolist() == pytest.approx([83.10886762981542, 38.40463519499369], abs=1e-4)
    assert torch.equal(out.scores, -out.sub_scores["brisque"])  # higher reward = better quality


def test_more_blur_scores_worse_and_batch_mates_do_not_matter():
    noisy = Image.fromarray(scene(20))
    blurred = [noisy.filter(ImageFilter.GaussianBlur(r)) for r in (1, 2, 4)]
    reward = load("brisque")
    q = reward(to_tensor(blurred), ["", "", ""]).sub_scores["brisque"]
    assert q[0] < q[1] < q[2]
    alone = reward(to_tensor([blurred[1]]), [""]).sub_scores["brisque"]
    assert torch.allclose(alone, q[1:2], atol=1e-6)


def test_aggd_fit_recovers_known_shapes():
    g = torch.Generator().manual_seed(0)
    gauss = torch.randn(1, 200_000, generator=g, dtype=torch.float64)
    laplace = torch.distributions.Laplace(0.0, 1.0).sample((1, 200_000)).double()
    for x, alpha in ((gauss, 2.0), (laplace, 1.0)):
        a, mean, left, right = aggd_fit(x)
        assert a.item() == pytest.approx(alpha, rel=0.03)
        assert left.item() == pytest.approx(right.item(), rel=0.03) and abs(mean.item()) < 0.02
    # skew: twice the spread on the right of 0 than on the left
    a, mean, left, right = aggd_fit(torch.where(gauss < 0, gauss, 2 * gauss))
    assert right.item() / left.item() == pytest.approx(4.0, rel=0.03) and mean.item() > 0


def test_brisque_bad_input():
    reward = load("brisque")
    assert not reward.differentiable
    out = reward(torch.full((2, 3, 32, 32), 0.5), ["", ""])  # flat: no statistics to fit
    assert not out.valid.any()
    with pytest.raises(RewardError, match="at least 16"):
        reward(torch.rand(1, 3, 8, 64), [""])
    with pytest.raises(FileNotFoundError, match="convert_brisque_model"):
        load("brisque", model="/nonexistent/brisque.safetensors")
