import pytest
import torch

from rewardlab.generators.diffusers_sd import StableDiffusionGenerator
from rewardlab.generators.loading import WeightsNotFound
from tests.helpers.tiny_pipelines import tiny_sd

PROMPTS = ["a red cat", "a blue dog"]


@pytest.fixture(scope="module")
def pipe():
    return tiny_sd()


def test_recomputed_log_probs_equal_sampled_ones(pipe):
    gen = StableDiffusionGenerator(pipe, eta=1.0)
    traj = gen.sample(PROMPTS, seeds=[0, 1], steps=4, guidance=5.0)
    assert traj.latents.shape == (2, 5, 4, 8, 8) and traj.images.shape == (2, 3, 16, 16)
    with torch.no_grad():
        again = gen.log_prob(traj, range(4))
    assert (again - traj.log_probs).exp().sub(1).abs().max() <= 1e-5


def test_eta_zero_matches_the_pipeline_call(pipe):
    from diffusers import DDIMScheduler

    gen = StableDiffusionGenerator(pipe, eta=0.0)
    noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    ours = gen.sample(PROMPTS, noise=noise, seeds=[0, 1], steps=3, guidance=4.0, stochastic=False).images
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    theirs = pipe(PROMPTS, num_inference_steps=3, guidance_scale=4.0, latents=noise, height=16, width=16,
                  eta=0.0, output_type="pt").images
    assert torch.allclose(ours, theirs, atol=1e-4)


def test_loads_from_a_saved_folder(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "sd")
    gen = StableDiffusionGenerator(str(tmp_path / "sd"))
    assert gen.sample(["a cat"], seeds=[0], steps=1).images.shape == (1, 3, 16, 16)


def test_missing_weights_say_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsNotFound, match="download it first"):
        StableDiffusionGenerator("someone/not-a-model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightsNotFound, match="not a complete save_pretrained"):
        StableDiffusionGenerator(str(tmp_path / "empty"))


def test_bad_sizes_and_inputs(pipe):
    gen = StableDiffusionGenerator(pipe)
    with pytest.raises(ValueError, match="divisible by the VAE factor"):
        gen.sample(PROMPTS, seeds=[0, 1], steps=1, height=15)
    with pytest.raises(ValueError, match="no prompts"):
        gen.sample([], steps=1)
    with pytest.raises(ValueError, match="steps"):
        gen.sample(PROMPTS, steps=0)
