"""``compile_no_grad``: gradient-free calls go through torch.compile (checked to run and to
agree with eager), calls that build a graph stay eager bit for bit, and the compiled graph
reads the live weights (merged LoRA, in-place updates)."""

import copy
import warnings

import pytest
import torch
from torch._dynamo.testing import CompileCounter

from rewardlab.generators.compiled import compile_no_grad, is_compiled
from rewardlab.generators.lora import add_lora, lora_merged, lora_parameters
from tests.unit.test_lora_and_grad import PROMPTS, perturb_lora, tiny_world


def _inputs(gen):
    x = torch.randn(2, *gen.latent_shape(), generator=torch.Generator().manual_seed(3))
    return x, torch.tensor([0.9, 0.4]), gen.condition(PROMPTS)


def test_only_gradient_free_calls_are_compiled():
    gen = tiny_world()
    x, t, cond = _inputs(gen)
    counter = CompileCounter()
    compile_no_grad(gen.denoiser, backend=counter)
    assert compile_no_grad(gen.denoiser, backend=counter) is gen.denoiser  # a second call wraps nothing more
    gen.denoise(x, t, cond)  # gradients on: eager
    assert counter.frame_count == 0
    with torch.no_grad():
        gen.denoise(x, t, cond)
        gen.denoise(x, t, cond)  # same shapes: no recompilation
    assert counter.frame_count == 1
    with torch.inference_mode():
        gen.sample(PROMPTS, seeds=[0, 1], steps=2)  # guided: a batch of 4, so one more graph
    assert counter.frame_count == 2


def test_a_failing_compiler_falls_back_to_eager_with_a_warning():
    gen = tiny_world()
    x, t, cond = _inputs(gen)
    expected = gen.denoise(x, t, cond).detach()

    def broken(gm, inputs):
        raise RuntimeError("no C++ compiler")

    compile_no_grad(gen.denoiser, backend=broken)
    with torch.no_grad():
        with pytest.raises(RuntimeError), warnings.catch_warnings():  # the call's own error: raised, not masked
            warnings.filterwarnings("error", "torch.compile failed")
            gen.denoise(x[:, :2], t, cond)
        assert is_compiled(gen.denoiser) and gen.denoiser._compiled_no_grad  # and compiling is still on
        with pytest.warns(UserWarning, match="runs eagerly.*no C.. compiler"):
            out = gen.denoise(x, t, cond)
        assert torch.equal(out, expected) and not gen.denoiser._compiled_no_grad
        with warnings.catch_warnings():
            warnings.filterwarnings("error", "torch.compile failed")  # warned once; eager from then on
            assert torch.equal(gen.denoise(x, t, cond), expected)


def test_inductor_matches_eager_and_reads_the_live_weights():
    torch._dynamo.reset()
    gen = tiny_world()
    add_lora(gen.denoiser, rank=2)
    perturb_lora(gen.denoiser)
    keys = list(gen.denoiser.state_dict())
    x, t, cond = _inputs(gen)
    eager_grad = gen.denoise(x, t, cond)
    eager_images = gen.sample(PROMPTS, seeds=[0, 1], steps=3, guidance=1).images
    compile_no_grad(gen.denoiser)
    assert list(gen.denoiser.state_dict()) == keys  # no _orig_mod wrapper: checkpoints unchanged

    warnings.filterwarnings("error", "torch.compile failed")  # a fallback to eager warns: this test runs inductor
    images = gen.sample(PROMPTS, seeds=[0, 1], steps=3, guidance=1).images  # no gradients: compiled
    assert torch.allclose(images, eager_images, atol=1e-5)
    pred = gen.denoise(x, t, cond)  # gradients: the eager forward, bit for bit, and its backward
    assert torch.equal(pred, eager_grad)
    pred.square().mean().backward()
    assert all(p.grad is not None for p in lora_parameters(gen.denoiser))

    twin = copy.deepcopy(gen)  # a copy (export_weights makes one) runs its own weights
    with torch.no_grad():
        for p in lora_parameters(twin.denoiser):
            p.zero_()
    assert is_compiled(twin.denoiser)
    own = twin.denoise(x, t, cond).detach()  # eager, the copy's weights
    with torch.no_grad():
        assert torch.allclose(twin.denoise(x, t, cond), own, atol=1e-5)
        assert not torch.allclose(own, eager_grad.detach(), atol=1e-4)
        with lora_merged(gen.denoiser):  # merged weights, written in place: the graph sees them
            merged = gen.denoise(x, t, cond)
        assert torch.allclose(merged, eager_grad.detach(), atol=1e-5)
        for p in lora_parameters(gen.denoiser):
            p.mul_(2)
        moved = gen.denoise(x, t, cond)
    assert not torch.allclose(moved, eager_grad.detach(), atol=1e-4)
    assert torch.allclose(moved, gen.denoise(x, t, cond).detach(), atol=1e-5)  # eager with the new weights


def test_the_compile_settings_reach_the_denoiser(tiny_shapeworld_weights):
    from rewardlab.align.common import load_policy
    from rewardlab.align.config import ModelSettings
    from rewardlab.cli.common import SampleConfig, load_sampler

    for flag in (False, True):
        gen, _ = load_policy(ModelSettings(weights=tiny_shapeworld_weights, compile=flag), "cpu")
        assert is_compiled(gen.denoiser) is flag
        gen, _ = load_sampler(SampleConfig(weights=tiny_shapeworld_weights, compile=flag))
        assert is_compiled(gen.denoiser) is flag
