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


def test_laion_aesthetic_head_from_a_pth_state_dict(clip_dir, tmp_path):
    from torch import nn

    torch.manual_seed(0)
    # the improved-aesthetic-predictor layout, sized for the tiny CLIP's 16-d embedding
    mlp = nn.Sequential(nn.Linear(16, 32), nn.Dropout(0.2), nn.Linear(32, 8), nn.Dropout(0.2), nn.Linear(8, 8),
                        nn.Dropout(0.1), nn.Linear(8, 4), nn.Linear(4, 1)).eval()
    head = tmp_path / "head.pth"
    torch.save({f"layers.{k}": v for k, v in mlp.state_dict().items()}, head)
    reward = load("laion_aesthetic", head=str(head), model=clip_dir)
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
    out = reward(images, ["", ""])
    emb = torch.nn.functional.normalize(
        reward.model.get_image_features(pixel_values=(images.detach() - torch.tensor(
            [0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)) / torch.tensor(
            [0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)).pooler_output, dim=-1)
    assert torch.allclose(out.scores, mlp(emb).squeeze(-1), atol=1e-5)
    out.scores.sum().backward()
    assert images.grad.abs().sum() > 0


def test_laion_aesthetic_without_head_says_what_to_pass(clip_dir):
    with pytest.raises(FileNotFoundError, match="head=PATH"):
        load("laion_aesthetic", model=clip_dir)
