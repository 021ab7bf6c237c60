import pytest
import torch

from rewardlab.generators.sampling import generate_images
from rewardlab.generators.shapeworld import ShapeWorldGenerator
from rewardlab.world.model import ModelConfig, ShapeWorldModel
from rewardlab.world.train import TrainConfig, flow_loss, lr_at, make_batch, train
from rewardlab.world.prompts import PromptSampler

TINY = ModelConfig(channels=(8, 16), text_dim=16, text_layers=1)


def sample(model, prompts, seeds, steps):
    """What users run: the model's deterministic images through the Generator layer."""
    return generate_images(ShapeWorldGenerator(model), prompts, seeds, steps=steps)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return ShapeWorldModel(TINY).eval()


def test_tokenizer_pads_and_marks_unknown_words(tiny):
    ids, mask = tiny.tokenizer(["a photo of a red circle", "", "a purple circle"])
    assert ids[0, 0] == 1 and ids[0, 7] == 2 and mask[0].sum() == 8
    assert ids[1, :2].tolist() == [1, 2] and mask[1].sum() == 2
    assert 3 in ids[2].tolist()  # <unk> for "purple"


def test_sampling_is_seed_deterministic_and_batch_invariant(tiny):
    prompts = ["a photo of a circle", "a photo of two red squares", "a photo of a triangle"]
    full = sample(tiny, prompts, [5, 6, 7], steps=3)
    again = sample(tiny, prompts, [5, 6, 7], steps=3)
    alone = sample(tiny, prompts[1:2], [6], steps=3)
    assert torch.equal(full, again)
    assert torch.allclose(full[1:2], alone, atol=1e-5)
    assert not torch.allclose(full[0], sample(tiny, prompts[:1], [8], steps=3)[0])
    assert full.shape == (3, 3, 32, 32) and full.min() >= 0 and full.max() <= 1


def test_sample_rejects_bad_arguments(tiny):
    with pytest.raises(ValueError, match="no prompts"):
        sample(tiny, [], [], steps=2)
    with pytest.raises(ValueError, match="steps"):
        sample(tiny, ["a photo of a circle"], [0], steps=0)
    with pytest.raises(ValueError, match="seeds"):
        sample(tiny, ["a photo of a circle"], [0, 1], steps=2)


def test_save_load_round_trip(tiny, tmp_path):
    path = tmp_path / "w.safetensors"
    tiny.save(path, dtype=torch.float32)
    loaded = ShapeWorldModel.load(path)
    assert loaded.config == tiny.config
    a = sample(tiny, ["a photo of a circle"], [1], steps=2)
    assert torch.equal(a, sample(loaded, ["a photo of a circle"], [1], steps=2))


def test_missing_weights_say_how_to_get_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="rewardlab world train"):
        ShapeWorldModel.load(tmp_path / "nope.safetensors")


def test_shipped_model_is_small():
    model = ShapeWorldModel(ModelConfig())
    assert model.num_parameters() <= 5_000_000


def test_flow_loss_is_finite_and_trains(tiny):
    cfg = TrainConfig(batch_size=4)
    prompts, x0 = make_batch(0, cfg, PromptSampler("train"))
    assert x0.shape == (4, 3, 32, 32) and x0.min() >= -1 and x0.max() <= 1
    model = ShapeWorldModel(TINY).train()
    loss = flow_loss(model, prompts, x0, torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss) and any(p.grad is not None and p.grad.abs().sum() > 0
                                        for p in model.unet.parameters())


def test_flow_loss_t_location_shifts_the_noise_levels(tiny, monkeypatch):
    levels = []
    monkeypatch.setattr(tiny, "velocity", lambda x_t, t, cond: levels.append(t) or torch.zeros_like(x_t))
    x0 = torch.zeros(256, 3, 8, 8)
    for loc in (0.0, 1.5):
        flow_loss(tiny, [""] * 256, x0, torch.Generator().manual_seed(0), t_location=loc)
    high = [float((t > 0.8).float().mean()) for t in levels]
    assert 0.03 < high[0] < 0.15 and 0.45 < high[1] < 0.65  # P(t > 0.8): 8% and 54% in theory


def test_train_passes_t_location(tmp_path, monkeypatch):
    import rewardlab.world.train as world_train

    seen = []
    real = world_train.flow_loss
    monkeypatch.setattr(world_train, "flow_loss", lambda *a: seen.append(a[-1]) or real(*a))
    train(TrainConfig(steps=1, batch_size=2, t_location=1.5), tmp_path)
    assert seen == [1.5]


def test_lr_schedule_warms_up_then_decays():
    cfg = TrainConfig(steps=100, warmup=10, lr=1.0)
    assert lr_at(0, cfg) == pytest.approx(0.1)
    assert lr_at(10, cfg) == pytest.approx(1.0)
    assert lr_at(100, cfg) == pytest.approx(0.1)


def test_unknown_config_keys_are_rejected():
    from rewardlab.config import load_config

    with pytest.raises(ValueError, match="unknown setting 'stepz'"):
        load_config(TrainConfig, None, {"stepz": 3})


def test_training_resumes_from_checkpoint_exactly(tmp_path, monkeypatch):
    import rewardlab.world.train as T

    monkeypatch.setattr(T, "ModelConfig", lambda resolution: ModelConfig(resolution, (8, 16), 1, 16, 1))
    cfg = dict(batch_size=2, checkpoint_every=2, warmup=1)
    # interrupted after 2 steps, then resumed to 4
    train(TrainConfig(steps=2, **cfg), tmp_path / "a")
    train(TrainConfig(steps=4, **cfg), tmp_path / "a")
    # uninterrupted 4 steps
    train(TrainConfig(steps=4, **cfg), tmp_path / "b")
    a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    assert a["step"] == b["step"] == 4
    for k in a["model"]:
        assert torch.allclose(a["model"][k], b["model"][k], atol=1e-6), k
    assert ShapeWorldModel.load(tmp_path / "a" / "shapeworld.safetensors").config.channels == (8, 16)


def test_resume_refuses_different_settings(tmp_path, monkeypatch):
    import rewardlab.world.train as T

    monkeypatch.setattr(T, "ModelConfig", lambda resolution: ModelConfig(resolution, (8, 16), 1, 16, 1))
    train(TrainConfig(steps=1, batch_size=2, checkpoint_every=1), tmp_path)
    with pytest.raises(ValueError, match="different settings"):
        train(TrainConfig(steps=2, batch_size=2, checkpoint_every=1, lr=1.0), tmp_path)


def test_a_setting_newer_than_the_checkpoint_resumes_at_its_default(tmp_path, monkeypatch):
    import rewardlab.world.train as T
    from rewardlab.training import checkpoint_step

    monkeypatch.setattr(T, "ModelConfig", lambda resolution: ModelConfig(resolution, (8, 16), 1, 16, 1))
    train(TrainConfig(steps=1, batch_size=2, checkpoint_every=1), tmp_path)
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    del ckpt["config"]["cfg_dropout"]  # as a version before the setting existed wrote it
    torch.save(ckpt, tmp_path / "checkpoint.pt")
    with pytest.raises(ValueError, match="cfg_dropout 0.1 → 0.2"):  # set otherwise: refused, the default named
        train(TrainConfig(steps=3, batch_size=2, checkpoint_every=1, cfg_dropout=0.2), tmp_path)
    assert checkpoint_step(tmp_path / "checkpoint.pt", TrainConfig(steps=2, batch_size=2)) == 1  # what the CLI checks
    train(TrainConfig(steps=2, batch_size=2, checkpoint_every=1), tmp_path)
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["step"] == 2
