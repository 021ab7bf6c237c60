"""ImageReward's released-layout → transformers BLIP mapping, on a synthetic checkpoint
written with the original repo's key names, scored against an independent plain-torch
reimplementation of the reference forward (BLIP vit.py + med.py + the MLP head)."""

import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import BertTokenizer

from rewardlab.rewards import RewardError, load
from rewardlab.rewards.imagereward import MEAN, STD, blip_to_hf

V, T, PATCH, SIZE = 32, 24, 8, 32  # vision width, text width, patch, image size
HEADS, LAYERS, FF = 4, 2, 40
MLP = [T, 20, 12, 8, 4, 1]
WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "red", "cat", "dog", "photo", "of", "blue", "square"]
VOCAB = len(WORDS) + 2  # + [DEC], [ENC]
TINY = dict(vision_config=dict(hidden_size=V, intermediate_size=FF, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                               image_size=SIZE, patch_size=PATCH, hidden_act="gelu", layer_norm_eps=1e-6),
            text_config=dict(vocab_size=VOCAB, hidden_size=T, encoder_hidden_size=V, intermediate_size=FF,
                             num_hidden_layers=LAYERS, num_attention_heads=HEADS, max_position_embeddings=40,
                             hidden_act="gelu", layer_norm_eps=1e-12, pad_token_id=0, bos_token_id=VOCAB - 2,
                             sep_token_id=3,
                             hidden_dropout_prob=0.3, attention_probs_dropout_prob=0.3))  # eval() must switch these off


def released_checkpoint() -> dict[str, torch.Tensor]:
    """Random weights under the released ImageReward.pt's key names (written from the
    original code's module names, not from transformers')."""
    g = torch.Generator().manual_seed(0)
    s = {}

    def lin(name, i, o):
        s[f"{name}.weight"] = torch.randn(o, i, generator=g) / math.sqrt(i)
        s[f"{name}.bias"] = 0.1 * torch.randn(o, generator=g)

    def ln(name, d):
        s[f"{name}.weight"] = 1 + 0.1 * torch.randn(d, generator=g)
        s[f"{name}.bias"] = 0.1 * torch.randn(d, generator=g)

    ve = "blip.visual_encoder."
    s[ve + "cls_token"] = torch.randn(1, 1, V, generator=g)
    s[ve + "pos_embed"] = torch.randn(1, (SIZE // PATCH) ** 2 + 1, V, generator=g)
    s[ve + "patch_embed.proj.weight"] = torch.randn(V, 3, PATCH, PATCH, generator=g) / PATCH
    s[ve + "patch_embed.proj.bias"] = 0.1 * torch.randn(V, generator=g)
    for i in range(LAYERS):
        b = f"{ve}blocks.{i}."
        ln(b + "norm1", V), ln(b + "norm2", V)
        lin(b + "attn.qkv", V, 3 * V), lin(b + "attn.proj", V, V), lin(b + "mlp.fc1", V, FF), lin(b + "mlp.fc2", FF, V)
    ln(ve + "norm", V)
    te = "blip.text_encoder."
    s[te + "embeddings.word_embeddings.weight"] = torch.randn(VOCAB, T, generator=g)
    s[te + "embeddings.position_embeddings.weight"] = torch.randn(40, T, generator=g)
    s[te + "embeddings.position_ids"] = torch.arange(40).expand(1, -1)  # a buffer old torch saved; dropped
    ln(te + "embeddings.LayerNorm", T)
    for i in range(LAYERS):
        b = f"{te}encoder.layer.{i}."
        for att, kv in (("attention", T), ("crossattention", V)):
            lin(f"{b}{att}.self.query", T, T), lin(f"{b}{att}.self.key", kv, T), lin(f"{b}{att}.self.value", kv, T)
            lin(f"{b}{att}.output.dense", T, T), ln(f"{b}{att}.output.LayerNorm", T)
        lin(b + "intermediate.dense", T, FF), lin(b + "output.dense", FF, T), ln(b + "output.LayerNorm", T)
    lin("blip.vision_proj", V, 16), lin("blip.text_proj", T, 16)  # BLIP's contrastive projections; unused
    for idx, (i, o) in zip((0, 2, 4, 6, 7), zip(MLP, MLP[1:])):
        lin(f"mlp.layers.{idx}", i, o)
    return s


def _mha(q, k, v, heads, bias=None):
    split = lambda x: x.unflatten(-1, (heads, -1)).transpose(1, 2)  # noqa: E731
    att = (split(q) @ split(k).transpose(-1, -2)) / math.sqrt(q.shape[-1] // heads)
    if bias is not None:
        att = att + bias
    return (att.softmax(-1) @ split(v)).transpose(1, 2).flatten(2)


def reference_scores(s, pixels, ids, mask):
    """ImageReward.score_gard by hand: BLIP's ViT, med.py's BERT with cross-attention, the MLP."""
    L = lambda x, n: F.linear(x, s[n + ".weight"], s[n + ".bias"])  # noqa: E731
    N = lambda x, n, eps: F.layer_norm(x, x.shape[-1:], s[n + ".weight"], s[n + ".bias"], eps)  # noqa: E731
    ve, te = "blip.visual_encoder.", "blip.text_encoder."
    x = F.conv2d(pixels, s[ve + "patch_embed.proj.weight"], s[ve + "patch_embed.proj.bias"], stride=PATCH)
    x = torch.cat([s[ve + "cls_token"].expand(len(x), -1, -1), x.flatten(2).transpose(1, 2)], 1) + s[ve + "pos_embed"]
    for i in range(LAYERS):
        b = f"{ve}blocks.{i}."
        q, k, v = L(N(x, b + "norm1", 1e-6), b + "attn.qkv").chunk(3, -1)
        x = x + L(_mha(q, k, v, HEADS), b + "attn.proj")
        x = x + L(F.gelu(L(N(x, b + "norm2", 1e-6), b + "mlp.fc1")), b + "mlp.fc2")
    img = N(x, ve + "norm", 1e-6)
    t = s[te + "embeddings.word_embeddings.weight"][ids] + s[te + "embeddings.position_embeddings.weight"][:ids.shape[1]]
    t = N(t, te + "embeddings.LayerNorm", 1e-12)
    bias = (1.0 - mask[:, None, None, :].float()) * -10000.0  # med.py's extended attention mask
    for i in range(LAYERS):
        for att, kv, m in (("attention", None, bias), ("crossattention", img, None)):
            a = f"{te}encoder.layer.{i}.{att}."
            src = t if kv is None else kv
            ctx = _mha(L(t, a + "self.query"), L(src, a + "self.key"), L(src, a + "self.value"), HEADS, m)
            t = N(L(ctx, a + "output.dense") + t, a + "output.LayerNorm", 1e-12)
        b = f"{te}encoder.layer.{i}."
        t = N(L(F.gelu(L(t, b + "intermediate.dense")), b + "output.dense") + t, b + "output.LayerNorm", 1e-12)
    h = t[:, 0]
    for idx in (0, 2, 4, 6, 7):  # Linear, Dropout, Linear, Dropout, Linear, Dropout, Linear, Linear
        h = L(h, f"mlp.layers.{idx}")
    return (h.squeeze(-1) - MEAN) / STD


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("imagereward")
    state = released_checkpoint()
    torch.save(state, d / "ImageReward.pt")
    save_file({k: v.contiguous() for k, v in state.items()}, str(d / "ImageReward.safetensors"))
    (d / "vocab.txt").write_text("\n".join(WORDS) + "\n")
    BertTokenizer(str(d / "vocab.txt")).save_pretrained(d / "tok")
    return state, d


@pytest.fixture(scope="module")
def reward(files):
    return load("imagereward", checkpoint=str(files[1] / "ImageReward.pt"), tokenizer=str(files[1] / "tok"), config=TINY)


def test_mapping_covers_every_transformers_weight(files, reward):
    state, _ = files
    mapped = blip_to_hf(state)
    expected = reward.model.state_dict()
    assert set(mapped) == {k for k in expected if not k.endswith("position_ids")}
    assert torch.equal(mapped["vision.encoder.layers.1.self_attn.qkv.weight"],
                       state["blip.visual_encoder.blocks.1.attn.qkv.weight"])  # fused qkv: same layout, no split
    assert torch.equal(mapped["head.4.weight"], state["mlp.layers.7.weight"])
    with pytest.raises(KeyError, match="unexpected ImageReward key"):
        blip_to_hf({"blip.visual_encoder.blocks.0.attn.q_bias": torch.zeros(1)})


def test_score_equals_the_reference_forward_and_is_differentiable(files, reward):
    state, d = files
    prompts = ["a red cat", "a photo of a blue square", "dog"]  # an odd batch, prompts of different lengths
    images = torch.rand(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
    out = reward(images, prompts)
    tok = BertTokenizer.from_pretrained(d / "tok")
    tok.add_special_tokens({"bos_token": "[DEC]"})
    tok.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    enc = tok(prompts, padding="max_length", truncation=True, max_length=35, return_tensors="pt")
    assert (enc.input_ids[:, 0] == tok.cls_token_id).all()  # the reference scores [CLS], not BLIP's [ENC]
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = reference_scores(state, (images - mean) / std, enc.input_ids, enc.attention_mask)
    assert out.scores.shape == (3,) and out.valid.all()
    assert torch.allclose(out.scores, expected, atol=1e-5), (out.scores, expected)
    assert expected.std() > 1e-3  # the images and prompts matter, so equality is not vacuous
    out.scores.sum().backward()
    assert images.grad.abs().sum() > 0 and torch.isfinite(images.grad).all()


def test_any_size_batches_deterministic_and_batch_invariant(reward):
    images = torch.rand(5, 3, 45, 61, generator=torch.Generator().manual_seed(2))  # resized + centre-cropped
    prompts = ["a red cat"] * 5
    first, again = reward(images, prompts).scores, reward(images, prompts).scores
    assert torch.equal(first, again)  # dropout is off
    assert torch.allclose(reward(images[3:4], prompts[:1]).scores, first[3:4], atol=1e-5)
    assert torch.allclose(reward(images[:1], ["a red cat"]).scores, first[:1], atol=1e-5)
    assert first.std() > 0


def test_safetensors_checkpoint_gives_the_same_scores(files, reward):
    d = files[1]
    other = load("imagereward", checkpoint=str(d / "ImageReward.safetensors"), tokenizer=str(d / "tok"), config=TINY)
    images = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
    assert torch.equal(other(images, ["a", "cat"]).scores, reward(images, ["a", "cat"]).scores)


def test_bad_input_and_missing_or_mismatched_weights(files, reward, tmp_path):
    with pytest.raises(RewardError, match="2 prompts"):
        reward(torch.rand(1, 3, SIZE, SIZE), ["a", "b"])
    with pytest.raises(RewardError, match=r"\[B, 3, H, W\]"):
        reward(torch.rand(3, SIZE, SIZE), ["a"])
    with pytest.raises(FileNotFoundError, match="THUDM/ImageReward"):
        load("imagereward", checkpoint=str(tmp_path / "ImageReward.pt"))
    with pytest.raises(FileNotFoundError, match="THUDM/ImageReward"):
        load("imagereward")
    d = files[1]
    with pytest.raises(ValueError, match="does not fit the config"):  # the tiny weights against ViT-L's config
        load("imagereward", checkpoint=str(d / "ImageReward.pt"), tokenizer=str(d / "tok"))
    headless = {k: v for k, v in files[0].items() if not k.startswith("mlp.layers.7")}
    torch.save(headless, tmp_path / "headless.pt")
    with pytest.raises(ValueError, match="MLP head"):
        load("imagereward", checkpoint=str(tmp_path / "headless.pt"), tokenizer=str(d / "tok"), config=TINY)
    with pytest.raises(FileNotFoundError, match="tokenizer"):
        load("imagereward", checkpoint=str(d / "ImageReward.pt"), tokenizer=str(tmp_path / "no_tok"), config=TINY)
