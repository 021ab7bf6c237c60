import pytest
import torch

from rewardlab.generators.diffusers_flow import FluxGenerator
from tests.helpers.tiny_pipelines import tiny_flux

PROMPTS = ["a red cat", "a blue dog"]
SIZE = dict(height=16, width=16)


@pytest.fixture(scope="module")
def pipe():
    return tiny_flux()


@pytest.mark.parametrize("step_type", ["flow_sde", "dance_sde", "cps"])
def test_recomputed_log_probs_equal_sampled_ones(pipe, step_type):
    gen = FluxGenerator(pipe, step_type=step_type, max_sequence_length=32, **SIZE)
    traj = gen.sample(PROMPTS, seeds=[0, 1], steps=3, guidance=3.5)
    assert traj.latents.shape == (2, 4, 16, 16) and traj.images.shape == (2, 3, 16, 16)
    with torch.no_grad():
        again = gen.log_prob(traj, range(3))
    assert (again - traj.log_probs).exp().sub(1).abs().max() <= 1e-5


def test_ode_matches_the_pipeline_call(pipe):
    gen = FluxGenerator(pipe, step_type="ode", max_sequence_length=32, **SIZE)
    noise = torch.randn(2, 16, 16, generator=torch.Generator().manual_seed(3))
    ours = gen.sample(PROMPTS, noise=noise, seeds=[0, 1], steps=3, guidance=3.5).images
    theirs = pipe(PROMPTS, num_inference_steps=3, guidance_scale=3.5, latents=noise, output_type="pt",
                  max_sequence_length=32, **SIZE).images
    assert torch.allclose(ours, theirs, atol=1e-4)


def test_true_cfg_with_negative_prompts_changes_the_image(pipe):
    gen = FluxGenerator(pipe, max_sequence_length=32, true_cfg=4.0, **SIZE)
    plain = gen.sample(PROMPTS, seeds=[0, 1], steps=2, stochastic=False).images
    neg = gen.sample(PROMPTS, seeds=[0, 1], steps=2, stochastic=False, negative_prompts=["blur", "dark"])
    assert not torch.allclose(plain, neg.images, atol=1e-4)
    with torch.no_grad():
        assert torch.equal(gen.log_prob(neg, [0]), neg.log_probs[:, :1])


def test_flux_needs_explicit_and_divisible_sizes(pipe):
    with pytest.raises(ValueError, match="explicit height and width"):
        FluxGenerator(pipe)
    with pytest.raises(ValueError, match="divisible"):
        FluxGenerator(pipe, height=18, width=16).sample(PROMPTS, steps=1)
