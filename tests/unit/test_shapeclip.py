import numpy as np
import pytest
import torch

from rewardlab.rewards import load
from rewardlab.world.clip import ClipConfig, ClipTrainConfig, ShapeCLIP, clip_batch, clip_loss, train_clip
from rewardlab.world.prompts import PromptSampler, compositions, near_miss
from rewardlab.world.records import TAGS
from rewardlab.world.render import render_record
from rewardlab.world.verify import verify

TINY = ClipConfig(width=16, layers=1, embed=8)


@pytest.mark.parametrize("tag", TAGS)
def test_near_miss_is_one_edit_away_and_fails_the_verifier(tag):
    rng = np.random.default_rng(0)
    for i, rec in enumerate(compositions(tag, colored_counting=True)):
        miss = near_miss(rec, rng)
        assert miss["tag"] == tag and miss["prompt"] != rec["prompt"]
        # an image of the near miss is not an image of the original
        assert not verify(render_record(miss, i), rec).correct, (rec["prompt"], miss["prompt"])


def test_eos_is_not_the_legacy_id():
    model = ShapeCLIP(TINY)
    assert model.tokenizer.eos != 2 and model.clip.config.text_config.eos_token_id == model.tokenizer.eos


def test_clip_loss_prefers_matching_pairs_and_gets_gradients():
    torch.manual_seed(0)
    model = ShapeCLIP(TINY)
    images, captions, negatives = clip_batch(0, ClipTrainConfig(batch_size=8), PromptSampler("train"), 32)
    loss = clip_loss(model, images, captions, negatives)
    loss.backward()
    assert torch.isfinite(loss) and model.clip.visual_projection.weight.grad.abs().sum() > 0


def test_training_resumes_and_reward_is_differentiable(tmp_path):
    cfg = dict(batch_size=4, checkpoint_every=1)
    train_clip(ClipTrainConfig(steps=1, **cfg), tmp_path, model_config=TINY)
    weights = train_clip(ClipTrainConfig(steps=2, **cfg), tmp_path, model_config=TINY)
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["step"] == 2
    reward = load("shapeclip", weights=weights)
    images = torch.rand(2, 3, 48, 48).requires_grad_(True)  # resized to 32 inside
    out = reward(images, ["a photo of a circle", "a photo of a red square"])
    out.scores.sum().backward()
    assert images.grad.abs().sum() > 0 and out.valid.all()
    alone = reward(images[1:].detach(), ["a photo of a red square"]).scores
    assert torch.allclose(alone, out.scores[1:].detach(), atol=1e-5)


def test_missing_weights(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-clip"):
        ShapeCLIP.load(tmp_path / "none.safetensors")


def test_shipped_shapeclip_loads_and_scores():
    reward = load("shapeclip")
    imgs = torch.stack([torch.from_numpy(render_record(compositions("colors")[i], 0)).permute(2, 0, 1).float() / 255
                        for i in (0, 1)])
    out = reward(imgs, [compositions("colors")[0]["prompt"]] * 2)
    assert out.valid.all() and torch.isfinite(out.scores).all()
