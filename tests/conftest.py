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


@pytest.fixture(scope="session")
def tiny_clip_weights(tmp_path_factory):
    """Random weights of a tiny ShapeCLIP (width 16, one layer): a reward model that trains fast."""
    import torch

    from rewardlab.world.clip import ClipConfig, ShapeCLIP

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_clip") / "tiny_clip.safetensors"
    ShapeCLIP(ClipConfig(width=16, layers=1, embed=8)).save(path)
    return path
