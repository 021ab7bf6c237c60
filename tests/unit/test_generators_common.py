"""What every adapter must do: exact log-probs with LoRA, batch invariance, negative prompts."""

import pytest
import torch

from rewardlab.generators.diffusers_flow import FluxGenerator, SD3Generator
from rewardlab.generators.diffusers_sd import StableDiffusionGenerator
from rewardlab.generators.lora import add_lora, lora_parameters
from rewardlab.generators.shapeworld import ShapeWorldGenerator
from rewardlab.world.model import ModelConfig, ShapeWorldModel
from tests.helpers.tiny_pipelines import tiny_flux, tiny_sd, tiny_sd3


def make(kind, step_type):
    torch.manual_seed(0)
    if kind == "shapeworld":
        return ShapeWorldGenerator(ShapeWorldModel(ModelConfig(channels=(8, 16), text_dim=16, text_layers=1)).eval(),
                                   step_type=step_type)
    if kind == "sd":
        return StableDiffusionGenerator(tiny_sd(), eta=1.0)
    if kind == "sd3":
        return SD3Generator(tiny_sd3(), step_type=step_type, max_sequence_length=32)
    return FluxGenerator(tiny_flux(), step_type=step_type, max_sequence_length=32, height=16, width=16, true_cfg=3.0)


CASES = [("shapeworld", s) for s in ("flow_sde", "dance_sde", "cps")] + [("sd", "ddim")] + \
        [(k, s) for k in ("sd3", "flux") for s in ("flow_sde", "dance_sde", "cps")]
PROMPTS = ["a photo of a circle", "a photo of two red squares", "a photo of a blue triangle"]


@pytest.mark.parametrize("kind, step_type", CASES)
def test_exact_log_probs_after_lora(kind, step_type):
    gen = make(kind, step_type)
    add_lora(gen.denoiser, rank=2)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in lora_parameters(gen.denoiser):
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    traj = gen.sample(PROMPTS[:2], seeds=[3, 4], steps=3, guidance=3.0)
    with torch.no_grad():
        again = gen.log_prob(traj, range(3))
    assert (again - traj.log_probs).exp().sub(1).abs().max() <= 1e-5


@pytest.mark.parametrize("kind", ["shapeworld", "sd", "sd3", "flux"])
def test_batch_invariance_seeds_and_negative_prompts(kind):
    gen = make(kind, "flow_sde")
    full = gen.sample(PROMPTS, seeds=[5, 6, 7], steps=2, guidance=3.0)
    alone = gen.sample(PROMPTS[2:], seeds=[7], steps=2, guidance=3.0)
    assert torch.allclose(full.images[2], alone.images[0], atol=1e-5)
    assert torch.equal(full.images, gen.sample(PROMPTS, seeds=[5, 6, 7], steps=2, guidance=3.0).images)
    neg = gen.sample(PROMPTS, seeds=[5, 6, 7], steps=2, guidance=3.0, negative_prompts=["blurry"] * 3)
    assert not torch.allclose(neg.images, full.images, atol=1e-4)
