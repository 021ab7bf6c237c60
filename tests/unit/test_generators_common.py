"""The Generator contract (``rewardlab.generators.base``), checked the same way for every
adapter: ShapeWorld (a tiny model), and tiny random SD, SD3 and FLUX pipelines."""

import pytest
import torch

from rewardlab.generators import DEFAULT_GUIDANCE
from rewardlab.generators.base import Cond, Generator
from rewardlab.generators.diffusers_flow import FluxGenerator, SD3Generator
from rewardlab.generators.diffusers_sd import StableDiffusionGenerator
from rewardlab.generators.guidance import guided
from rewardlab.generators.lora import add_lora, lora_parameters
from rewardlab.generators.sampling import generate_images, log_prob, sample, step, steps_at_once
from rewardlab.generators.shapeworld import ShapeWorldGenerator
from rewardlab.world.model import ModelConfig, ShapeWorldModel
from tests.helpers.tiny_pipelines import tiny_flux, tiny_sd, tiny_sd3

KINDS = ["shapeworld", "sd", "sd3", "flux"]
PROMPTS = ["a photo of a circle", "a photo of two red squares", "a photo of a blue triangle"]


def make(kind, step_type="flow_sde"):
    torch.manual_seed(0)
    if kind == "shapeworld":
        return ShapeWorldGenerator(ShapeWorldModel(ModelConfig(channels=(8, 16), text_dim=16, text_layers=1)).eval(),
                                   step_type=step_type)
    if kind == "sd":
        return StableDiffusionGenerator(tiny_sd(), eta=1.0)
    if kind == "sd3":
        return SD3Generator(tiny_sd3(), step_type=step_type, max_sequence_length=32)
    return FluxGenerator(tiny_flux(), step_type=step_type, max_sequence_length=32, height=16, width=16)


@pytest.fixture(scope="module", params=KINDS)
def gen(request):
    return make(request.param)


def perturbed_lora(gen, seed=1, scale=0.05):
    add_lora(gen.denoiser, rank=2)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in lora_parameters(gen.denoiser):
            p.add_(scale * torch.randn(p.shape, generator=g))
    return gen


def a_state(gen, n, seed=0):
    return torch.randn(n, *gen.latent_shape(), generator=torch.Generator().manual_seed(seed))


def mid_level(gen, steps=4):
    return gen.schedule(steps, gen.latent_shape())[1]


CASES = [("shapeworld", s) for s in ("flow_sde", "dance_sde", "cps")] + [("sd", "ddim")] + \
        [(k, s) for k in ("sd3", "flux") for s in ("flow_sde", "dance_sde", "cps")]


@pytest.mark.parametrize("kind, step_type", CASES)
def test_exact_log_probs_after_lora_with_cached_and_uncached_condition(kind, step_type):
    gen = perturbed_lora(make(kind, step_type))
    traj = gen.sample(PROMPTS[:2], seeds=[3, 4], steps=3, guidance=3.0)
    cond = gen.condition(PROMPTS[:2])
    with torch.no_grad():
        uncached = gen.log_prob(traj, range(3))
        cached = log_prob(gen, traj, range(3), cond)
    assert (uncached - traj.log_probs).exp().sub(1).abs().max() <= 1e-5
    assert (cached - traj.log_probs).exp().sub(1).abs().max() <= 1e-5
    assert torch.equal(cached, uncached)


@pytest.mark.parametrize("kind, step_type", [("sd", "ddim"), ("shapeworld", "flow_sde"), ("sd3", "dance_sde"),
                                             ("flux", "cps")])
def test_steps_at_once_equal_one_step_at_a_time(kind, step_type):
    """GRPO's training pass: the steps of a batch in one network call give each step's
    log-prob and mean, and the loss's LoRA gradient, of one ``step`` call per step."""
    gen = perturbed_lora(make(kind, step_type))
    traj = gen.sample(PROMPTS[:2], seeds=[3, 4], steps=3, guidance=3.0)
    cond, steps, adv = gen.condition(PROMPTS[:2]), [0, 2], torch.tensor([1.0, -0.5])

    def loss_and_grads(outs):
        loss = torch.stack([(o.log_prob * adv).mean() + o.mean.square().mean() for o in outs]).mean()
        return loss, torch.autograd.grad(loss, lora_parameters(gen.denoiser))

    one = [step(gen, traj.state(i), i, cond, traj.timesteps, 3.0, prev_sample=traj.state(i + 1)) for i in steps]
    x, x_next = (torch.stack([traj.state(i + d) for i in steps]) for d in (0, 1))
    many = steps_at_once(gen, x, steps, cond, traj.timesteps, 3.0, prev_sample=x_next)
    for a, b in zip(one, many):
        assert torch.allclose(a.log_prob, b.log_prob, atol=1e-5) and torch.allclose(a.mean, b.mean, atol=1e-5)
    (loss_a, grads_a), (loss_b, grads_b) = loss_and_grads(one), loss_and_grads(many)
    assert torch.allclose(loss_a, loss_b, atol=1e-6)
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-7) for a, b in zip(grads_a, grads_b))


def test_satisfies_the_protocol_and_defaults_to_the_library_guidance(gen):
    assert isinstance(gen, Generator)
    traj = gen.sample(PROMPTS[:1], seeds=[0], steps=1)
    assert traj.guidance == (1.0 if isinstance(gen, FluxGenerator) else DEFAULT_GUIDANCE)


def test_batch_invariance_seeds_and_negative_prompts(gen):
    full = gen.sample(PROMPTS, seeds=[5, 6, 7], steps=2, guidance=3.0)
    alone = gen.sample(PROMPTS[2:], seeds=[7], steps=2, guidance=3.0)
    assert torch.allclose(full.images[2], alone.images[0], atol=1e-5)
    assert torch.equal(full.images, gen.sample(PROMPTS, seeds=[5, 6, 7], steps=2, guidance=3.0).images)
    neg = gen.sample(PROMPTS, seeds=[5, 6, 7], steps=2, guidance=3.0, negative_prompts=["blurry"] * 3)
    assert not torch.allclose(neg.images, full.images, atol=1e-4)


def test_sliced_and_repeated_conditions_equal_encoding_the_subset(gen):
    cond = gen.condition(PROMPTS, negative_prompts=["dark", "blurry", "small"])
    sub = gen.condition(PROMPTS[1:], negative_prompts=["blurry", "small"])
    a = gen.sample(cond[1:], seeds=[6, 7], steps=2, guidance=3.0)
    b = gen.sample(sub, seeds=[6, 7], steps=2, guidance=3.0)
    assert a.prompts == PROMPTS[1:] and a.negative_prompts == ["blurry", "small"]
    assert torch.allclose(a.images, b.images, atol=1e-5)
    picked = gen.sample(cond[[2, 0]], seeds=[7, 5], steps=2, guidance=3.0)
    assert torch.allclose(picked.images[1], gen.sample(cond[0], seeds=[5], steps=2, guidance=3.0).images[0], atol=1e-5)
    grouped = cond[:2].repeat(2)
    assert grouped.prompts == [PROMPTS[0]] * 2 + [PROMPTS[1]] * 2
    again = gen.condition([PROMPTS[0]] * 2 + [PROMPTS[1]] * 2, negative_prompts=["dark"] * 2 + ["blurry"] * 2)
    x = a_state(gen, 4)
    t = mid_level(gen)
    with torch.no_grad():
        assert torch.allclose(guided(gen.denoise, 3.0)(x, t, grouped), guided(gen.denoise, 3.0)(x, t, again), atol=1e-5)
    assert len(Cond.cat([cond[:1], cond[1:]])) == 3


def test_resuming_from_a_stored_step_reproduces_the_rest_exactly(gen):
    full = gen.sample(PROMPTS[:2], seeds=[8, 9], steps=4, guidance=3.0)
    cond = gen.condition(PROMPTS[:2])
    for i in (1, 3):
        rest = sample(gen, cond, noise=full.state(i), seeds=[8, 9], steps=4, guidance=3.0, start_step=i)
        assert rest.start_step == i and rest.latents.shape[1] == 4 - i + 1
        assert torch.equal(rest.latents, full.latents[:, i:])
        assert torch.equal(rest.log_probs, full.log_probs[:, i:])
        assert torch.equal(rest.images, full.images)
    with torch.no_grad():
        assert torch.equal(gen.log_prob(rest, [3], cond), full.log_probs[:, 3:])
    with pytest.raises(ValueError, match="not stored"):
        rest.state(1)
    with pytest.raises(ValueError, match="needs its state"):
        gen.sample(PROMPTS[:2], seeds=[8, 9], steps=4, start_step=2)


def test_callback_sees_every_step(gen):
    seen = []
    traj = gen.sample(PROMPTS[:2], seeds=[1, 2], steps=3, callback=lambda i, x, x0: seen.append((i, x, x0)))
    assert [i for i, _, _ in seen] == [0, 1, 2]
    assert all(torch.equal(x, traj.latents[:, i + 1]) and torch.equal(x0, traj.x0_preds[:, i]) for i, x, x0 in seen)


@pytest.mark.parametrize("scale", [0.5, 1.0, 3.0, 0.0])
def test_guidance_means_the_same_for_every_adapter(gen, scale):
    """guided = uncond + s · (cond − uncond), checked by hand from two plain passes; scale 1
    is one conditional pass, any other scale is applied (0.5 included)."""
    cond = gen.condition(PROMPTS[:2], negative_prompts=["dark", "blurry"])
    x, t = a_state(gen, 2), mid_level(gen)
    calls = []

    def counting(x_, t_, c_):
        calls.append(len(x_))
        return gen.denoise(x_, t_, c_)

    with torch.no_grad():
        out_c = gen.denoise(x, t, cond)
        out_u = gen.denoise(x, t, Cond(["dark", "blurry"], cond.neg, shared=cond.shared))
        out = guided(counting, scale)(x, t, cond)
    assert calls == ([2] if scale == 1.0 else [4])
    if scale == 1.0:
        assert torch.equal(out, out_c)
    assert torch.allclose(out, out_u + scale * (out_c - out_u), atol=1e-5)
    traj = gen.sample(PROMPTS[:2], seeds=[0, 1], steps=1, guidance=scale, stochastic=False)
    assert traj.guidance == scale


def test_reference_runs_the_base_model_after_a_lora_update():
    for kind in KINDS:
        gen = make(kind)
        cond = gen.condition(PROMPTS[:2])
        x, t = a_state(gen, 2), mid_level(gen)
        with torch.no_grad():
            base = gen.denoise(x, t, cond)
            perturbed_lora(gen, scale=0.2)
            tuned = gen.denoise(x, t, cond)
            with gen.reference():
                ref = gen.denoise(x, t, cond)
            after = gen.denoise(x, t, cond)
        assert not torch.allclose(tuned, base, atol=1e-4), kind
        assert torch.allclose(ref, base, atol=1e-6), kind
        assert torch.equal(after, tuned), kind
        assert all(p.requires_grad for p in lora_parameters(gen.denoiser)), kind


def test_add_noise_encode_decode(gen):
    x0, eps = a_state(gen, 2, seed=1), a_state(gen, 2, seed=2)
    t = gen.schedule(4, gen.latent_shape())[:2]  # one noise level per sample
    noisy = gen.add_noise(x0, eps, t)
    assert noisy.shape == x0.shape and not torch.allclose(noisy[0], noisy[1])
    if isinstance(gen, StableDiffusionGenerator):
        a = gen.alpha_bar(t[1])
        assert torch.allclose(noisy[1], a.sqrt() * x0[1] + (1 - a).sqrt() * eps[1])
    else:
        assert torch.allclose(noisy[1], (1 - t[1]) * x0[1] + t[1] * eps[1])
        assert torch.equal(gen.add_noise(x0, eps, 1.0), eps)
    images = torch.rand(2, 3, 16, 16) if not isinstance(gen, ShapeWorldGenerator) else torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        latents = gen.encode(images)
        back = gen.decode(latents)
    assert latents.shape == (2, *gen.latent_shape()) and back.shape == images.shape
    if isinstance(gen, ShapeWorldGenerator):
        assert torch.allclose(back, images, atol=1e-6)
    with torch.no_grad():
        assert gen.denoise(noisy, t, gen.condition(PROMPTS[:2])).shape == x0.shape  # a training pass


def test_per_call_size(gen):
    if isinstance(gen, ShapeWorldGenerator):
        with pytest.raises(ValueError, match="32x32"):
            gen.sample(PROMPTS[:1], steps=1, height=16)
        return
    traj = gen.sample(PROMPTS[:2], seeds=[0, 1], steps=2, height=16, width=32)
    assert traj.images.shape == (2, 3, 16, 32)
    with torch.no_grad():
        assert (gen.log_prob(traj, [0, 1]) - traj.log_probs).abs().max() <= 1e-5


def test_generate_images_is_deterministic_and_batched(gen):
    imgs = generate_images(gen, PROMPTS, [1, 2, 3], steps=2, batch_size=2)
    assert imgs.shape[:2] == (3, 3) and imgs.min() >= 0 and imgs.max() <= 1
    one = gen.sample(PROMPTS[:2], seeds=[1, 2], steps=2, stochastic=False).images  # both: gen.default_guidance
    assert torch.equal(imgs[:2], one)
    with pytest.raises(ValueError, match="seeds"):
        generate_images(gen, PROMPTS, [1], steps=1)


def test_cond_indexing_without_a_model():
    states = torch.arange(4.0).reshape(4, 1)
    cond = Cond(list("abcd"), {"s": states}, {"s": -states}, list("wxyz"), {"ids": torch.zeros(2)})
    assert cond[-1].prompts == ["d"] and cond[-1].negative_prompts == ["z"] and torch.equal(cond[-1].pos["s"], states[3:])
    assert cond[torch.tensor([3, 1])].prompts == ["d", "b"] and torch.equal(cond[[3, 1]].neg["s"], -states[[3, 1]])
    assert cond[1:3].repeat(2).prompts == ["b", "b", "c", "c"] and cond[0].shared is cond.shared
    survivors = cond[torch.tensor([True, False, False, True])]
    assert survivors.prompts == ["a", "d"] and torch.equal(survivors.pos["s"], states[[0, 3]])
    stacked = cond[:2].stacked()
    assert stacked.prompts == ["a", "b", "w", "x"] and torch.equal(stacked.pos["s"], torch.tensor([[0.], [1.], [0.], [-1.]]))
    assert cond[:2].stacked() is not stacked and cond.stacked() is cond.stacked()  # cached per condition
    with pytest.raises(IndexError):
        cond[4]
    with pytest.raises(IndexError, match="mask"):
        cond[torch.tensor([True, False])]
    with pytest.raises(ValueError, match="no unconditional"):
        Cond(["a"], {"s": states[:1]}).stacked()


def test_sample_refuses_inconsistent_arguments():
    gen = make("shapeworld")
    cond = gen.condition(PROMPTS[:2])
    with pytest.raises(ValueError, match="negative prompts belong"):
        gen.sample(cond, seeds=[0, 1], steps=2, negative_prompts=["x", "y"])
    with pytest.raises(ValueError, match="start_step"):
        gen.sample(cond, seeds=[0, 1], steps=2, start_step=2, noise=torch.zeros(2, 3, 32, 32))
    with pytest.raises(ValueError, match="negative prompts"):
        gen.condition(PROMPTS[:2], negative_prompts=["x"])
    with gen.reference():  # no LoRA attached: the model as it is
        assert gen.sample(cond, seeds=[0, 1], steps=1).images.shape == (2, 3, 32, 32)


def test_a_lone_string_is_one_prompt(gen):
    one = gen.sample(PROMPTS[0], seeds=[1], steps=1, stochastic=False).images
    assert torch.equal(one, gen.sample([PROMPTS[0]], seeds=[1], steps=1, stochastic=False).images)
