import pytest
import torch

from rewardlab.generators.diffusers_sd import StableDiffusionGenerator
from rewardlab.generators.lora import add_lora, load_lora, lora_merged, lora_parameters, merge_lora, save_lora
from rewardlab.generators.shapeworld import ShapeWorldGenerator
from rewardlab.world.model import ModelConfig, ShapeWorldModel
from tests.helpers.tiny_pipelines import tiny_sd

TINY = ModelConfig(channels=(8, 16), text_dim=16, text_layers=1)
PROMPTS = ["a photo of a circle", "a photo of two red squares"]


def tiny_world(seed=0):
    torch.manual_seed(seed)
    return ShapeWorldGenerator(ShapeWorldModel(TINY).eval())


def perturb_lora(module, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in lora_parameters(module):
            p.add_(0.1 * torch.randn(p.shape, generator=g))


def test_lora_round_trip_merge_and_exact_log_probs(tmp_path):
    gen = tiny_world()
    base = gen.sample(PROMPTS, seeds=[0, 1], steps=3).images
    add_lora(gen.denoiser, rank=2)
    assert torch.allclose(gen.sample(PROMPTS, seeds=[0, 1], steps=3).images, base, atol=1e-6)  # B = 0 at init
    assert all(not p.requires_grad for n, p in gen.denoiser.named_parameters() if "lora_" not in n)
    perturb_lora(gen.denoiser)
    traj = gen.sample(PROMPTS, seeds=[0, 1], steps=3)
    assert not torch.allclose(traj.images, base, atol=1e-4)
    with torch.no_grad():
        assert (gen.log_prob(traj, range(3)) - traj.log_probs).exp().sub(1).abs().max() <= 1e-5
    save_lora(gen.denoiser, tmp_path / "a.safetensors")

    fresh = tiny_world()
    load_lora(fresh.denoiser, tmp_path / "a.safetensors")
    assert torch.allclose(fresh.sample(PROMPTS, seeds=[0, 1], steps=3).images, traj.images, atol=1e-6)
    merge_lora(fresh.denoiser)
    assert not lora_parameters(fresh.denoiser)
    assert torch.allclose(fresh.sample(PROMPTS, seeds=[0, 1], steps=3).images, traj.images, atol=1e-5)


def test_load_lora_rejects_other_files(tmp_path):
    gen = tiny_world()
    gen.model.save(tmp_path / "w.safetensors")
    with pytest.raises(ValueError, match="not a rewardlab LoRA"):
        load_lora(gen.denoiser, tmp_path / "w.safetensors")
    with pytest.raises(FileNotFoundError):
        load_lora(gen.denoiser, tmp_path / "missing.safetensors")


def test_gradient_wrt_noise_matches_finite_differences():
    gen = tiny_world()
    gen.model.double()
    noise = torch.randn(1, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    direction = torch.randn_like(noise)
    target = torch.rand(1, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(1))

    def loss(x):  # on the final latent: decode's clamp to [0, 1] has kinks finite differences straddle
        final = gen.sample(PROMPTS[:1], noise=x, seeds=[0], steps=2, stochastic=False, grad=True).latents[:, -1]
        return ((final - target) ** 2).mean()

    x = noise.clone().requires_grad_(True)
    loss(x).backward()
    h = 1e-4
    with torch.no_grad():
        fd = (loss(noise + h * direction) - loss(noise - h * direction)) / (2 * h)
    assert (x.grad * direction).sum().item() == pytest.approx(fd.item(), rel=1e-4)


def test_truncation_and_checkpointing():
    gen = tiny_world()
    add_lora(gen.denoiser, rank=2)
    perturb_lora(gen.denoiser)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    grads = []
    for ckpt in (False, True):
        gen.denoiser.zero_grad()
        gen.sample(PROMPTS, noise=x, seeds=[0, 1], steps=3, grad=True, checkpoint=ckpt).images.mean().backward()
        grads.append([p.grad.clone() for p in lora_parameters(gen.denoiser)])
    assert all(g.abs().sum() > 0 for g in grads[0])
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*grads))
    x.grad = None
    gen.sample(PROMPTS, noise=x, seeds=[0, 1], steps=3, grad=True, grad_steps=1).images.mean().backward()
    assert x.grad is None  # truncated: the initial noise is outside the last step's graph


def test_lora_on_stable_diffusion_unet(tmp_path):
    gen = StableDiffusionGenerator(tiny_sd())
    add_lora(gen.denoiser, rank=2)
    perturb_lora(gen.denoiser)
    traj = gen.sample(["a cat"], seeds=[0], steps=2, guidance=3.0)
    gen.log_prob(traj, [0, 1]).sum().backward()
    assert all(p.grad is not None for p in lora_parameters(gen.denoiser))
    save_lora(gen.denoiser, tmp_path / "sd.safetensors")
    other = StableDiffusionGenerator(tiny_sd())
    load_lora(other.denoiser, tmp_path / "sd.safetensors")
    assert torch.allclose(other.sample(["a cat"], seeds=[0], steps=2, guidance=3.0).images, traj.images, atol=1e-5)


def test_reference_pass_for_a_kl_term_leaves_the_lora_state_as_it_was():
    """KL / NFT pattern: the reference prediction with adapters off, the policy's with them on;
    gradients reach only the policy side, and frozen adapter weights stay frozen."""
    gen = tiny_world()
    add_lora(gen.denoiser, rank=2)
    perturb_lora(gen.denoiser)
    cond = gen.condition(PROMPTS)
    x, t = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)), torch.tensor([0.3, 0.7])
    with torch.no_grad(), gen.reference():
        ref = gen.denoise(x, t, cond)
    policy = gen.denoise(x, t, cond)
    ((policy - ref) ** 2).mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in lora_parameters(gen.denoiser))
    for p in lora_parameters(gen.denoiser):
        p.requires_grad_(False)
    with gen.reference():
        pass
    assert not any(p.requires_grad for p in lora_parameters(gen.denoiser))


def test_sampling_with_the_adapter_merged_matches_and_restores_the_weights():
    """Rollouts sample with LoRA folded into the base weights: the same images and log-probs up
    to float rounding, and afterwards bitwise the weights, adapters and trainable flags of before."""
    gen = StableDiffusionGenerator(tiny_sd())
    add_lora(gen.denoiser, rank=2)
    perturb_lora(gen.denoiser)
    before = {k: v.clone() for k, v in gen.denoiser.state_dict().items()}
    with torch.no_grad():
        plain = gen.sample(["a cat", "a dog"], seeds=[0, 1], steps=3, guidance=3.0)
        with lora_merged(gen.denoiser):
            merged = gen.sample(["a cat", "a dog"], seeds=[0, 1], steps=3, guidance=3.0)
            folded = [k for k, v in gen.denoiser.state_dict().items() if not torch.equal(v, before[k])]
    assert torch.allclose(merged.latents, plain.latents, atol=1e-5)
    assert torch.allclose(merged.log_probs, plain.log_probs, atol=1e-4)
    assert folded and all(k.endswith("base_layer.weight") for k in folded)  # merged in place, then put back
    after = gen.denoiser.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.requires_grad for p in lora_parameters(gen.denoiser))
    again = gen.sample(["a cat", "a dog"], seeds=[0, 1], steps=3, guidance=3.0)
    assert torch.equal(again.latents, plain.latents)
