"""HPSv2's open_clip → CLIPModel key mapping, on a synthetic checkpoint in open_clip's layout."""

import pytest
import torch
from transformers import CLIPConfig, CLIPModel

from rewardlab.rewards import load
from rewardlab.rewards.hps import open_clip_to_hf
from tests.helpers.tiny_pipelines import clip_tokenizer

TINY = dict(text_config=dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                             hidden_act="gelu", vocab_size=60, max_position_embeddings=77),
            vision_config=dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                               hidden_act="gelu", image_size=32, patch_size=8), projection_dim=16)


def to_open_clip(model: CLIPModel) -> dict:
    """Write a CLIPModel's weights the way open_clip names them (written independently of
    the mapping under test)."""
    s, out = model.state_dict(), {}
    for tower, oc in (("text_model", ""), ("vision_model", "visual.")):
        n = getattr(model.config, "text_config" if tower == "text_model" else "vision_config").num_hidden_layers
        for i in range(n):
            hf, o = f"{tower}.encoder.layers.{i}.", f"{oc}transformer.resblocks.{i}."
            for leaf in ("weight", "bias"):
                out[f"{o}attn.in_proj_{leaf}"] = torch.cat([s[f"{hf}self_attn.{p}_proj.{leaf}"] for p in "qkv"])
                out[f"{o}attn.out_proj.{leaf}"] = s[f"{hf}self_attn.out_proj.{leaf}"]
                out[f"{o}ln_1.{leaf}"] = s[f"{hf}layer_norm1.{leaf}"]
                out[f"{o}ln_2.{leaf}"] = s[f"{hf}layer_norm2.{leaf}"]
                out[f"{o}mlp.c_fc.{leaf}"] = s[f"{hf}mlp.fc1.{leaf}"]
                out[f"{o}mlp.c_proj.{leaf}"] = s[f"{hf}mlp.fc2.{leaf}"]
    for leaf in ("weight", "bias"):
        out[f"ln_final.{leaf}"] = s[f"text_model.final_layer_norm.{leaf}"]
        out[f"visual.ln_pre.{leaf}"] = s[f"vision_model.pre_layrnorm.{leaf}"]
        out[f"visual.ln_post.{leaf}"] = s[f"vision_model.post_layernorm.{leaf}"]
    out["token_embedding.weight"] = s["text_model.embeddings.token_embedding.weight"]
    out["positional_embedding"] = s["text_model.embeddings.position_embedding.weight"]
    out["visual.conv1.weight"] = s["vision_model.embeddings.patch_embedding.weight"]
    out["visual.class_embedding"] = s["vision_model.embeddings.class_embedding"]
    out["visual.positional_embedding"] = s["vision_model.embeddings.position_embedding.weight"]
    out["visual.proj"] = s["visual_projection.weight"].T
    out["text_projection"] = s["text_projection.weight"].T
    out["logit_scale"] = s["logit_scale"]
    out["attn_mask"] = torch.zeros(77, 77)
    return {f"module.{k}": v for k, v in out.items()}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    ref = CLIPModel(CLIPConfig(**TINY)).eval()
    d = tmp_path_factory.mktemp("hps")
    torch.save({"state_dict": to_open_clip(ref)}, d / "HPS_tiny.pt")
    clip_tokenizer().save_pretrained(d / "tok")
    return ref, d


def test_mapping_round_trips_every_weight(checkpoint):
    ref, d = checkpoint
    mapped = open_clip_to_hf(torch.load(d / "HPS_tiny.pt", weights_only=True)["state_dict"])
    expected = {k: v for k, v in ref.state_dict().items() if not k.endswith("position_ids")}
    assert set(mapped) == set(expected)
    assert all(torch.equal(mapped[k], expected[k]) for k in expected)


def test_hps_reward_equals_the_reference_cosine(checkpoint):
    ref, d = checkpoint
    reward = load("hpsv2", checkpoint=str(d / "HPS_tiny.pt"), tokenizer=str(d / "tok"), config=TINY)
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
    prompts = ["a red cat", "a dog"]
    out = reward(images, prompts)
    tok = clip_tokenizer()(prompts, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    with torch.no_grad():
        img = torch.nn.functional.normalize(ref.get_image_features(pixel_values=(images - mean) / std).pooler_output, dim=-1)
        txt = torch.nn.functional.normalize(ref.get_text_features(**tok).pooler_output, dim=-1)
    assert torch.allclose(out.scores, (img * txt).sum(-1), atol=1e-5)
    out.scores.sum().backward()
    assert images.grad.abs().sum() > 0


def test_missing_checkpoint_says_where_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="xswu/HPSv2"):
        load("hpsv2.1", checkpoint=str(tmp_path / "none.pt"))
