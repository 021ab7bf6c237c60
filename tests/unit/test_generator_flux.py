import pytest
import torch

from rewardlab.generators.diffusers_flow import FluxGenerator, pack, unpack
from tests.helpers.tiny_pipelines import tiny_flux

PROMPTS = ["a red cat", "a blue dog"]
SIZE = dict(height=16, width=16)


@pytest.fixture(scope="module")
def pipe():
    return tiny_flux()


@pytest.mark.parametrize("step_type", ["flow_sde", "dance_sde", "cps"])
def test_recomputed_log_probs_equal_sampled_ones(pipe, step_type):
    gen = FluxGenerator(pipe, step_type=step_type, max_sequence_length=32, **SIZE)
    traj = gen.sample(PROMPTS, seeds=[0, 1], steps=3)
    assert traj.latents.shape == (2, 4, 4, 8, 8) and traj.images.shape == (2, 3, 16, 16)
    with torch.no_grad():
        again = gen.log_prob(traj, range(3))
    assert (again - traj.log_probs).exp().sub(1).abs().max() <= 1e-5


def test_pack_and_unpack_are_inverse_and_match_the_pipeline(pipe):
    x = torch.randn(2, 4, 8, 6)
    assert torch.equal(pack(x), pipe._pack_latents(x, 2, 4, 8, 6))
    assert torch.equal(unpack(pack(x), 8, 6), x)


def test_ode_matches_the_pipeline_call(pipe):
    gen = FluxGenerator(pipe, step_type="ode", max_sequence_length=32, distilled_guidance=3.5, **SIZE)
    noise = torch.randn(2, 16, 16, generator=torch.Generator().manual_seed(3))  # packed, as the pipeline takes it
    ours = gen.sample(PROMPTS, noise=unpack(noise, 8, 8), seeds=[0, 1], steps=3, guidance=1.0).images
    theirs = pipe(PROMPTS, num_inference_steps=3, guidance_scale=3.5, latents=noise, output_type="pt",
                  max_sequence_length=32, **SIZE).images
    assert torch.allclose(ours, theirs, atol=1e-4)


def test_true_cfg_matches_the_pipeline_call(pipe):
    """``guidance`` is classifier-free guidance against the negative prompts (the pipeline's
    ``true_cfg_scale``); the distilled guidance is a separate input."""
    gen = FluxGenerator(pipe, step_type="ode", max_sequence_length=32, distilled_guidance=2.0, **SIZE)
    noise = torch.randn(2, 16, 16, generator=torch.Generator().manual_seed(4))
    ours = gen.sample(PROMPTS, noise=unpack(noise, 8, 8), seeds=[0, 1], steps=2, guidance=4.0,
                      negative_prompts=["blur", "dark"]).images
    theirs = pipe(PROMPTS, negative_prompt=["blur", "dark"], true_cfg_scale=4.0, guidance_scale=2.0,
                  num_inference_steps=2, latents=noise, output_type="pt", max_sequence_length=32, **SIZE).images
    assert torch.allclose(ours, theirs, atol=1e-4)


def test_per_call_size(pipe):
    gen = FluxGenerator(pipe, max_sequence_length=32, **SIZE)
    traj = gen.sample(PROMPTS, seeds=[0, 1], steps=2, height=16, width=24)
    assert traj.images.shape == (2, 3, 16, 24) and traj.latents.shape == (2, 3, 4, 8, 12)
    with torch.no_grad():
        assert (gen.log_prob(traj, [0, 1]) - traj.log_probs).abs().max() <= 1e-5
    other = FluxGenerator(pipe, max_sequence_length=32, height=16, width=24)  # the same size as a default
    assert torch.allclose(other.sample(PROMPTS, seeds=[0, 1], steps=2).images, traj.images, atol=1e-6)


def test_flux_sizes_must_be_divisible(pipe):
    with pytest.raises(ValueError, match="divisible"):
        FluxGenerator(pipe, height=18, width=16).sample(PROMPTS, steps=1)
    assert FluxGenerator(pipe).height == pipe.default_sample_size * pipe.vae_scale_factor
