import pytest
import torch

from rewardlab.generators import GENERATORS, load_generator
from rewardlab.generators.diffusers_flow import FluxGenerator, SD3Generator
from rewardlab.generators.diffusers_sd import StableDiffusionGenerator
from rewardlab.generators.shapeworld import ShapeWorldGenerator
from rewardlab.world.model import ModelConfig, ShapeWorldModel
from tests.helpers.tiny_pipelines import tiny_flux, tiny_sd, tiny_sd3


def test_shapeworld_shipped_and_from_weights(tmp_path):
    assert isinstance(load_generator("shapeworld"), ShapeWorldGenerator)
    torch.manual_seed(0)
    ShapeWorldModel(ModelConfig(channels=(8, 16), text_dim=16, text_layers=1)).save(tmp_path / "w.safetensors")
    gen = load_generator(f"shapeworld:{tmp_path / 'w.safetensors'}", step_type="ode")
    assert gen.model.config.channels == (8, 16) and gen.step_type == "ode"


@pytest.mark.parametrize("kind, build, cls", [("sd", tiny_sd, StableDiffusionGenerator),
                                              ("sd3", tiny_sd3, SD3Generator), ("flux", tiny_flux, FluxGenerator)])
def test_pipelines_from_a_folder(tmp_path, kind, build, cls):
    build().save_pretrained(tmp_path / kind)
    options = dict(max_sequence_length=32, height=16, width=16) if kind == "flux" else {}
    gen = load_generator(f"{kind}:{tmp_path / kind}", **options)
    assert isinstance(gen, cls)
    assert gen.sample(["a cat"], seeds=[0], steps=1, height=16, width=16).images.shape == (1, 3, 16, 16)


def test_bad_specs():
    with pytest.raises(ValueError, match="unknown generator 'sdxl:x'.*shapeworld"):
        load_generator("sdxl:x")
    with pytest.raises(ValueError, match="needs a pipeline folder"):
        load_generator("sd3")
    assert set(GENERATORS) == {"shapeworld", "sd", "sd3", "flux"}
