import pytest
import torch

from rewardlab.rewards import RewardError, load
from rewardlab.rewards.combine import pairwise_win_rate
from rewardlab.rewards.vlm import PAIR_QUESTION, QUESTION, _to_pil
from tests.helpers.tiny_vlm import tiny_vlm_dir

PROMPTS = ["a red circle", "a blue square and a red circle", "red"]


@pytest.fixture(scope="module")
def vlm_dir(tmp_path_factory):
    return str(tiny_vlm_dir(tmp_path_factory.mktemp("vlm")))


@pytest.fixture(scope="module")
def images():
    return torch.rand(3, 3, 24, 20, generator=torch.Generator().manual_seed(0))


def next_token_probs(vlm_dir, images, question, words):
    """P(next token = word) for the generation prompt, via ``generate`` (an independent path)."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    proc = AutoProcessor.from_pretrained(vlm_dir)
    model = AutoModelForImageTextToText.from_pretrained(vlm_dir).eval()
    msgs = [{"role": "user", "content": [{"type": "image"} for _ in images] + [{"type": "text", "text": question}]}]
    text = proc.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    out = model.generate(**proc(images=images, text=[text], return_tensors="pt"), max_new_tokens=1, do_sample=False,
                         output_logits=True, return_dict_in_generate=True)
    p = out.logits[0][0].softmax(-1)
    return [p[proc.tokenizer.convert_tokens_to_ids(w)].item() for w in words]


def test_p_yes_equals_the_models_next_token_probability(vlm_dir, images):
    judge = load("vlm_judge", model=vlm_dir)
    out = judge(images, PROMPTS)
    assert out.scores.shape == (3,) and out.valid.all()
    for i, pil in enumerate(_to_pil(images)):
        p_yes, p_no = next_token_probs(vlm_dir, [pil], QUESTION.format(prompt=PROMPTS[i]), ["Yes", "No"])
        assert out.scores[i].item() == pytest.approx(p_yes, rel=1e-4)
        normalised = load("vlm_judge", model=vlm_dir, no="No")(images[i:i + 1], PROMPTS[i:i + 1]).scores
        assert normalised.item() == pytest.approx(p_yes / (p_yes + p_no), rel=1e-4)


def test_scores_do_not_depend_on_batch_mates_or_padding(vlm_dir, images):
    judge = load("vlm_judge", model=vlm_dir, batch_size=2)  # prompts of different lengths share a padded batch
    together = judge(images, PROMPTS).scores
    alone = torch.cat([judge(images[i:i + 1], PROMPTS[i:i + 1]).scores for i in range(3)])
    assert torch.allclose(together, alone, rtol=1e-4)


def test_multi_token_answers_are_teacher_forced(vlm_dir, images):
    one = load("vlm_judge", model=vlm_dir)(images[:1], PROMPTS[:1]).scores
    two = load("vlm_judge", model=vlm_dir, yes="Yes red")(images[:1], PROMPTS[:1]).scores
    assert 0 < two.item() < one.item()  # P(Yes, red) = P(Yes) P(red | Yes) < P(Yes)


def test_pairwise_judging_cancels_position_bias(vlm_dir, images):
    judge = load("vlm_judge", model=vlm_dir)
    a, b = images, images.flip(0)
    p_ab = judge.compare(a, b, PROMPTS)
    assert p_ab.shape == (3,) and ((p_ab >= 0) & (p_ab <= 1)).all()
    assert torch.allclose(p_ab + judge.compare(b, a, PROMPTS), torch.ones(3), atol=1e-5)
    assert torch.allclose(judge.compare(a, a, PROMPTS), torch.full((3,), 0.5), atol=1e-6)
    pa, pb = _to_pil(a[:1])[0], _to_pil(b[:1])[0]
    q = PAIR_QUESTION.format(prompt=PROMPTS[0])
    one_ab, two_ab = next_token_probs(vlm_dir, [pa, pb], q, ["1", "2"])
    one_ba, two_ba = next_token_probs(vlm_dir, [pb, pa], q, ["1", "2"])
    expected = 0.5 * (one_ab / (one_ab + two_ab) + two_ba / (one_ba + two_ba))
    assert p_ab[0].item() == pytest.approx(expected, rel=1e-4)
    # Pref-GRPO's in-group win rate on top of the judge
    rates = pairwise_win_rate(lambda i, j: judge.compare(a[i], a[j], [PROMPTS[0]] * len(i)), torch.zeros(3))
    assert rates.shape == (3,) and torch.isclose(rates.sum(), torch.tensor(1.5), atol=1e-4)


def test_vlm_judge_bad_input(vlm_dir, images, monkeypatch):
    judge = load("vlm_judge", model=vlm_dir)
    assert not judge.differentiable and judge.pairwise
    with pytest.raises(RewardError, match="not differentiable"):
        judge(images.clone().requires_grad_(True), PROMPTS)
    with pytest.raises(RewardError, match="differ in shape"):
        judge.compare(images, images[:, :, :16], PROMPTS)
    with pytest.raises(RewardError, match="prompts"):
        judge(images, PROMPTS[:2])
    with pytest.raises(ValueError, match="torch dtype"):
        load("vlm_judge", model=vlm_dir, dtype="float33")
    with pytest.raises(ValueError, match="must contain"):
        load("vlm_judge", model=vlm_dir, question="Is it good?")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="download it first"):
        load("vlm_judge", model="someone/no-such-vlm")


def test_score_cli_passes_reward_options(vlm_dir, tmp_path):
    import json

    from PIL import Image
    from typer.testing import CliRunner

    from rewardlab.cli import app

    Image.new("RGB", (20, 20), (200, 30, 30)).save(tmp_path / "a.png")
    out, runner = tmp_path / "s.jsonl", CliRunner()
    r = runner.invoke(app, ["score", str(tmp_path / "a.png"), "--prompt", "a photo of a red circle", "--reward",
                            "vlm_judge,shapeworld", "--set", f"vlm_judge.model={vlm_dir}", "--set",
                            "vlm_judge.batch_size=4", "--out", str(out)])
    assert r.exit_code == 0, r.output
    row = json.loads(out.read_text())
    assert 0 < row["vlm_judge"] < 1 and row["shapeworld"] == 0.0
    for bad, msg in (("vlm_judge.colour=red", "no option colour"), ("model=x", "REWARD.KEY=VALUE"),
                     ("clipscore.model=x", "not in --reward")):
        r = runner.invoke(app, ["score", str(tmp_path / "a.png"), "--prompt", "p", "--reward", "vlm_judge",
                                "--set", f"vlm_judge.model={vlm_dir}", "--set", bad])
        assert r.exit_code == 2 and msg in " ".join(r.output.split()), r.output


def test_over_long_prompts_are_invalid_and_lose_nothing(vlm_dir, images):
    judge = load("vlm_judge", model=vlm_dir, max_prompt_tokens=40)
    prompts = [PROMPTS[0], "red " * 100, PROMPTS[2]]
    out = judge(images, prompts)
    assert out.valid.tolist() == [True, False, True] and out.scores[1] == 0
    ok = load("vlm_judge", model=vlm_dir)(images[[0, 2]], [PROMPTS[0], PROMPTS[2]]).scores
    assert torch.allclose(out.scores[[0, 2]], ok, rtol=1e-4)
    assert torch.isnan(judge.compare(images, images.flip(0), prompts)).tolist() == [False, True, False]
