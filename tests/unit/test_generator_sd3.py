import pytest
import torch

from rewardlab.generators.diffusers_flow import SD3Generator
from tests.helpers.tiny_pipelines import tiny_sd3

PROMPTS = ["a red cat", "a blue dog"]


@pytest.fixture(scope="module")
def pipe():
    return tiny_sd3()


@pytest.mark.parametrize("step_type", ["flow_sde", "dance_sde", "cps"])
def test_recomputed_log_probs_equal_sampled_ones(pipe, step_type):
    gen = SD3Generator(pipe, step_type=step_type, max_sequence_length=32)
    traj = gen.sample(PROMPTS, seeds=[0, 1], steps=3, guidance=4.0)
    assert traj.latents.shape == (2, 4, 4, 8, 8) and traj.images.shape == (2, 3, 16, 16)
    with torch.no_grad():
        again = gen.log_prob(traj, range(3))
    assert (again - traj.log_probs).exp().sub(1).abs().max() <= 1e-5


def test_ode_matches_the_pipeline_call(pipe):
    gen = SD3Generator(pipe, step_type="ode", max_sequence_length=32)
    noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    ours = gen.sample(PROMPTS, noise=noise, seeds=[0, 1], steps=3, guidance=4.0).images
    theirs = pipe(PROMPTS, num_inference_steps=3, guidance_scale=4.0, latents=noise, height=16, width=16,
                  output_type="pt", max_sequence_length=32).images
    assert torch.allclose(ours, theirs, atol=1e-4)


def test_batch_invariance(pipe):
    gen = SD3Generator(pipe, max_sequence_length=32)
    full = gen.sample(PROMPTS, seeds=[5, 6], steps=2, guidance=3.0)
    alone = gen.sample(PROMPTS[1:], seeds=[6], steps=2, guidance=3.0)
    assert torch.allclose(full.images[1], alone.images[0], atol=1e-5)


def test_bad_input(pipe):
    gen = SD3Generator(pipe, max_sequence_length=32)
    with pytest.raises(ValueError, match="divisible"):
        gen.sample(PROMPTS, steps=1, width=15)
    with pytest.raises(ValueError, match="unknown step type"):
        SD3Generator(pipe, step_type="ddpm")
