import pytest
import torch

from rewardlab.rewards import load
from tests.helpers.tiny_pipelines import tiny_clip_dir


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return str(tiny_clip_dir(tmp_path_factory.mktemp("clip")))


@pytest.mark.parametrize("name", ["clipscore", "pickscore"])
def test_clip_rewards_are_differentiable_and_batch_invariant(clip_dir, name):
    kw = {"model": clip_dir, "tokenizer": clip_dir} if name == "pickscore" else {"model": clip_dir}
    reward = load(name, **kw)
    assert reward.differentiable
    images = torch.rand(3, 3, 48, 40, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    prompts = ["a red cat", "a dog", "a blue square"]
    out = reward(images, prompts)
    assert out.scores.shape == (3,) and out.valid.all()
    # clipscore clamps negative cosines to 0 (no gradient there); the cosine always has one
    (out.scores.sum() + out.sub_scores["cosine"].sum()).backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    alone = reward(images[1:2].detach(), prompts[1:2])
    assert torch.allclose(alone.scores, out.scores[1:2].detach(), atol=1e-5)


def test_clipscore_formula(clip_dir):
    out = load("clipscore", model=clip_dir)(torch.rand(2, 3, 32, 32), ["a cat", "a dog"])
    assert torch.allclose(out.scores, 2.5 * out.sub_scores["cosine"].clamp(min=0))
    assert out.sub_scores["cosine"].abs().max() <= 1


def test_missing_clip_weights_say_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="download them first"):
        load("clipscore", model="someone/no-such-clip")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="not a saved CLIPModel"):
        load("clipscore", model=str(tmp_path / "empty"))
