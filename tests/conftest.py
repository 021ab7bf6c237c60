import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_shapeworld_weights(tmp_path_factory):
    """Random weights of a tiny ShapeWorld model (channels 8/16, one text layer), saved once."""
    import torch

    from rewardlab.world.model import ModelConfig, ShapeWorldModel

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_shapeworld") / "tiny.safetensors"
    ShapeWorldModel(ModelConfig(channels=(8, 16), text_dim=16, text_layers=1)).save(path)
    return path
