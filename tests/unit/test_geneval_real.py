"""GenEval on real images (eval/geneval_real.py): the reference scorer's decision rules on
hand-built detections, Flow-GRPO's partial credit, GenEval's prompt templates, and the
Mask2Former + CLIP plumbing on tiny random models saved to folders (offline)."""

import json

import pytest
import torch

from rewardlab.eval.geneval_real import (GENEVAL_OBJECTS, Detection, check_record, colour_targets, judge,
                                         keep_detections, load_geneval_records, mask_boxes, object_crop,
                                         parse_geneval_prompt, relations)
from rewardlab.rewards import available, load
from rewardlab.rewards.base import RewardError
from rewardlab.world.records import RecordError

# records as in GenEval's prompts/evaluation_metadata.jsonl
SINGLE = {"tag": "single_object", "include": [{"class": "bench", "count": 1}], "prompt": "a photo of a bench"}
TWO = {"tag": "two_object", "include": [{"class": "parking meter", "count": 1}, {"class": "teddy bear", "count": 1}],
       "prompt": "a photo of a parking meter and a teddy bear"}
COUNT = {"tag": "counting", "include": [{"class": "pizza", "count": 3}], "exclude": [{"class": "pizza", "count": 4}],
         "prompt": "a photo of three pizzas"}
COLOR = {"tag": "colors", "include": [{"class": "potted plant", "count": 1, "color": "purple"}],
         "prompt": "a photo of a purple potted plant"}
POSITION = {"tag": "position", "include": [{"class": "skateboard", "count": 1},
                                           {"class": "bird", "count": 1, "position": ["below", 0]}],
            "prompt": "a photo of a bird below a skateboard"}
ATTR = {"tag": "color_attr", "include": [{"class": "tennis racket", "count": 1, "color": "purple"},
                                         {"class": "sink", "count": 1, "color": "black"}],
        "prompt": "a photo of a purple tennis racket and a black sink"}


def det(cls, score=0.8, box=(0, 0, 10, 10), color=None):
    return Detection(cls, score, tuple(float(v) for v in box), color=color)


# ---- the decision on hand-built detections ----

def test_single_object_threshold_is_strictly_above_0_3():
    assert judge(SINGLE, [det("bench", 0.31)]).correct
    v = judge(SINGLE, [det("bench", 0.3), det("chair", 0.99)])  # 0.3 is not above 0.3
    assert not v.correct and v.reason == "expected bench>=1, found 0" and v.partial == 0 and not v.strict


def test_extra_objects_pass_geneval_but_cost_flow_grpo_credit():
    v = judge(SINGLE, [det("bench", 0.9), det("bench", 0.8, (50, 0, 60, 10))])
    assert v.correct and v.reason == ""  # GenEval: at least one bench
    assert v.partial == 0.0 and not v.strict  # Flow-GRPO: 1 - |1 - 2| / 1


def test_two_object_needs_both():
    both = judge(TWO, [det("parking meter"), det("teddy bear", 0.5, (20, 0, 30, 10))])
    assert both.correct and both.partial == 1 and both.strict
    one = judge(TWO, [det("parking meter"), det("teddy bear", 0.2)])
    assert not one.correct and one.reason == "expected teddy bear>=1, found 0" and one.partial == 0.5


def pizzas(*scores):
    return [det("pizza", s, (20 * i, 0, 20 * i + 10, 10)) for i, s in enumerate(scores)]


def test_counting_is_exact_and_uses_the_0_9_threshold():
    assert judge(COUNT, pizzas(0.95, 0.93, 0.91)).correct
    assert judge(COUNT, pizzas(0.95, 0.93, 0.91, 0.89)).correct  # the fourth is under 0.9: not counted
    v = judge(COUNT, pizzas(0.95, 0.93, 0.91, 0.92))  # one too many: the exclude clause
    assert not v.correct and v.reason == "expected pizza<4, found 4"
    assert v.partial == pytest.approx(1 - 1 / 3) and not v.strict
    v = judge(COUNT, pizzas(0.95, 0.93, 0.85))  # one too few (0.85 would pass any other tag)
    assert not v.correct and v.reason == "expected pizza>=3, found 2" and v.partial == pytest.approx(2 / 3)


def test_at_most_16_per_class_are_kept():
    many = [det("dog", 0.5 + i / 100, (i, 0, i + 5, 5)) for i in range(20)]
    kept = keep_detections(many, "single_object")["dog"]
    assert len(kept) == 16 and [d.score for d in kept] == sorted((d.score for d in many), reverse=True)[:16]
    record = {"tag": "counting", "include": [{"class": "dog", "count": 2}], "exclude": [{"class": "dog", "count": 17}]}
    assert judge(record, [det("dog", 0.95, (i, 0, i + 5, 5)) for i in range(20)]).reason == ""  # 16 < 17


def test_no_nms_by_default_but_max_overlap_suppresses():
    twins = [det("dog", 0.9), det("dog", 0.8, (1, 0, 11, 10))]
    assert len(keep_detections(twins, "single_object")["dog"]) == 2
    assert len(keep_detections(twins, "single_object", max_overlap=0.5)["dog"]) == 1


def test_colors_reads_the_best_scored_object():
    assert judge(COLOR, [det("potted plant", color="purple")]).correct
    v = judge(COLOR, [det("potted plant", 0.9, color="green"), det("potted plant", 0.8, color="purple")])
    assert not v.correct and v.reason == "expected purple potted plant>=1, found 0 purple; and 1 green"
    assert v.partial == 0  # two plants: Flow-GRPO gives no count or colour credit
    one = judge(COLOR, [det("potted plant", color="pink")])
    assert one.partial == 0.5 and not one.strict


def test_colour_is_only_asked_of_the_detections_the_decision_reads():
    plants = [det("potted plant", 0.9), det("potted plant", 0.8), det("potted plant", 0.2)]
    kept = keep_detections(plants, "colors")
    assert colour_targets(COLOR, kept) == [plants[0]]
    with pytest.raises(ValueError, match="no colour"):
        judge(COLOR, plants)
    assert colour_targets(COLOR, {}) == []  # nothing found: no colour needed
    assert not judge(COLOR, []).correct


def test_position_with_geneval_box_shrinking():
    board = det("skateboard", box=(0, 0, 100, 20))
    assert judge(POSITION, [board, det("bird", box=(40, 60, 60, 80))]).correct
    # centres 8 apart vertically, 0.1 x (20 + 20) = 4 shrinks the offset to 4: 4 / 8 = 0.5, not beyond
    v = judge(POSITION, [board, det("bird", box=(40, 8, 60, 28))])
    assert not v.correct and v.reason == "expected bird below target, found  target"
    assert v.partial == pytest.approx(2 / 3)  # both counts right, position wrong
    assert relations((40, 9, 60, 29), (0, 0, 100, 20)) == {"below"}  # one pixel further: beyond 0.5
    v = judge(POSITION, [board, det("bird", box=(140, 30, 160, 50))])  # mostly right of it
    assert not v.correct and v.reason == "expected bird below target, found right of target"
    assert relations((0, 0, 10, 10), (30, 30, 40, 40)) == {"left of", "above"}


def test_position_without_its_target():
    v = judge(POSITION, [det("bird", box=(40, 60, 60, 80))])
    assert v.reason == "expected skateboard>=1, found 0\nno target for bird to be below"
    assert v.partial == pytest.approx(1 / 3)


def test_color_attr_binds_each_colour_to_its_object():
    racket, sink = det("tennis racket", color="purple"), det("sink", 0.7, (30, 0, 40, 10), color="black")
    assert judge(ATTR, [racket, sink]).correct
    racket.color, sink.color = "black", "purple"
    v = judge(ATTR, [racket, sink])
    assert not v.correct and v.partial == 0.5
    assert v.reason == ("expected purple tennis racket>=1, found 0 purple; and 1 black\n"
                        "expected black sink>=1, found 0 black; and 1 purple")


# ---- records and prompts ----

@pytest.mark.parametrize("record", [SINGLE, TWO, COUNT, COLOR, POSITION, ATTR])
def test_geneval_templates_parse_back_to_their_records(record):
    assert parse_geneval_prompt(record["prompt"], GENEVAL_OBJECTS) == record
    assert check_record(record) is record


def test_prompt_parsing_corner_cases():
    two = parse_geneval_prompt("a photo of an orange and a hot dog", GENEVAL_OBJECTS)
    assert two["tag"] == "two_object" and [r["class"] for r in two["include"]] == ["orange", "hot dog"]
    assert parse_geneval_prompt("a photo of two buses", GENEVAL_OBJECTS)["include"] == [{"class": "bus", "count": 2}]
    assert parse_geneval_prompt("a photo of a unicorn", GENEVAL_OBJECTS) is None


def test_records_are_checked_and_loaded_with_any_classes(tmp_path):
    for bad, words in [({"tag": "nope", "include": []}, "not a GenEval record"),
                       ({"tag": "colors", "include": [{"class": "cat", "color": "teal"}]}, "unknown color"),
                       ({"tag": "counting", "include": [{"class": "cat", "count": 0}]}, "positive integer"),
                       ({"tag": "position", "include": [{"class": "cat", "position": ["near", 0]}]}, "bad position")]:
        with pytest.raises(RecordError, match=words):
            check_record(bad)
    path = tmp_path / "meta.jsonl"
    path.write_text(json.dumps(COUNT) + "\n\n" + json.dumps(POSITION) + "\n")
    assert load_geneval_records(path) == [COUNT, POSITION]
    path.write_text(json.dumps(COUNT) + "\n{\n")
    with pytest.raises(RecordError, match="meta.jsonl:2"):
        load_geneval_records(path)


# ---- models: tiny random Mask2Former and CLIP saved to folders ----

NAMES = ["circle", "square", "triangle", "dog", "cat", "car"]


def tiny_mask2former(path, boost="dog"):
    """A tiny random Mask2Former whose class head favours ``boost``, so it finds objects."""
    from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation, SwinConfig

    torch.manual_seed(0)
    swin = SwinConfig(image_size=64, patch_size=4, embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1],
                      window_size=2, out_features=["stage1", "stage2", "stage3", "stage4"])
    cfg = Mask2FormerConfig(backbone_config=swin, feature_size=32, mask_feature_size=32, hidden_dim=32,
                            encoder_feedforward_dim=32, encoder_layers=1, decoder_layers=2, num_attention_heads=2,
                            dim_feedforward=32, num_queries=8, id2label=dict(enumerate(NAMES)),
                            label2id={n: i for i, n in enumerate(NAMES)})
    model = Mask2FormerForUniversalSegmentation(cfg).eval()
    with torch.no_grad():
        model.class_predictor.bias[NAMES.index(boost)] += 8.0
    model.save_pretrained(path)
    (path / "preprocessor_config.json").write_text(json.dumps(
        {"image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225], "size_divisor": 32}))
    return path


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    from tests.helpers.tiny_pipelines import tiny_clip_dir

    root = tmp_path_factory.mktemp("geneval_real")
    return str(tiny_mask2former(root / "m2f")), str(tiny_clip_dir(root / "clip"))


@pytest.fixture(scope="module")
def reward(dirs):
    return load("geneval", detector=dirs[0], clip=dirs[1], size=64, batch_size=2)


IMAGES = torch.rand(3, 3, 48, 40, generator=torch.Generator().manual_seed(0))
RECORDS = [{"tag": "single_object", "include": [{"class": "dog", "count": 1}], "prompt": "a photo of a dog"},
           {"tag": "colors", "include": [{"class": "dog", "count": 1, "color": "red"}], "prompt": "a photo of a red dog"},
           {"tag": "position", "include": [{"class": "cat", "count": 1},
                                           {"class": "dog", "count": 1, "position": ["left of", 0]}],
            "prompt": "a photo of a dog left of a cat"}]


def test_detector_gives_mmdet_style_instances(reward):
    dets = reward.detector(IMAGES)
    assert len(dets) == 3 and all(dets)
    for d in (d for per_image in dets for d in per_image):
        assert d.cls in NAMES and 0.3 < d.score <= 1 and d.mask.shape == (48, 40) and d.mask.dtype == torch.bool
        assert d.box == tuple(mask_boxes(d.mask[None])[0].tolist())
        assert 0 <= d.box[0] <= d.box[2] <= 40 and 0 <= d.box[1] <= d.box[3] <= 48
    pixels, resized = reward.detector.preprocess(IMAGES)
    assert resized == (int(48 * 64 / 40 + 0.5), 64) and pixels.shape[-2:] == (96, 64)  # short side 64, pad to 32


def test_post_processing_matches_transformers_where_they_coincide(dirs):
    """At a 384 x 384 input (transformers' fixed working size) with no resize, mmdet's
    post-processing and transformers' ``post_process_instance_segmentation`` agree."""
    from rewardlab.eval.geneval_real import Mask2FormerDetector

    pil = pytest.importorskip("transformers.models.mask2former.image_processing_pil_mask2former")
    det = Mask2FormerDetector(dirs[0], size=384)
    image = torch.rand(1, 3, 384, 384, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = det.model(pixel_values=det.preprocess(image)[0])
    ref = pil.Mask2FormerImageProcessorPil().post_process_instance_segmentation(
        out, threshold=0.3, return_binary_maps=True, target_sizes=[(384, 384)])[0]
    theirs = sorted((det.names[s["label_id"]], s["score"], int(m.sum())) for s, m in
                    zip(ref["segments_info"], ref["segmentation"]))
    mine = sorted((d.cls, d.score, int(d.mask.sum())) for d in det(image)[0])
    assert len(mine) == len(theirs) > 0
    for (c1, s1, a1), (c2, s2, a2) in zip(mine, theirs):
        assert c1 == c2 and s1 == pytest.approx(s2, abs=1e-5) and a1 == a2


def test_reward_end_to_end_is_deterministic(reward):
    out = reward(IMAGES, [r["prompt"] for r in RECORDS], metadata=RECORDS)
    assert out.scores.shape == (3,) and out.valid.all() and len(out.reasons) == 3
    assert set(out.sub_scores) == {"correct", "partial", "strict"}
    assert torch.equal(out.scores, out.sub_scores["correct"])  # binary by default
    assert ((out.sub_scores["partial"] >= 0) & (out.sub_scores["partial"] <= 1)).all()
    assert all((r == "") == bool(c) for r, c in zip(out.reasons, out.sub_scores["correct"]))
    again = reward(IMAGES, [r["prompt"] for r in RECORDS], metadata=[json.dumps(r) for r in RECORDS])
    assert torch.equal(again.sub_scores["partial"], out.sub_scores["partial"]) and again.reasons == out.reasons
    parsed = reward(IMAGES, [r["prompt"] for r in RECORDS])  # no metadata: GenEval's templates
    assert parsed.reasons == out.reasons


def test_colour_crop_is_masked_onto_grey():
    image = torch.zeros(3, 6, 8)
    mask = torch.zeros(6, 8, dtype=torch.bool)
    mask[2:4, 3:5] = True
    crop = object_crop(image, Detection("dog", 0.9, (2.4, 1.6, 6.0, 5.0), mask))
    assert crop.shape == (3, 3, 4)  # rows 2..4, columns 2..5: the box rounded as PIL rounds it
    assert torch.all(crop[:, :2, 1:3] == 0) and torch.allclose(crop[:, 2], torch.full((3, 4), 153 / 255))


def test_partial_mode_and_the_registry(dirs):
    assert "geneval" in available()
    partial = load("geneval", detector=dirs[0], clip=dirs[1], size=64, mode="partial")
    out = partial(IMAGES[:1], ["a photo of a dog"])
    assert torch.equal(out.scores, out.sub_scores["partial"])
    with pytest.raises(ValueError, match="mode"):
        load("geneval", detector=dirs[0], clip=dirs[1], mode="soft")


def test_records_the_detector_cannot_judge_are_refused(reward):
    with pytest.raises(RewardError, match="follows none of GenEval's templates"):
        reward(IMAGES[:1], ["an oil painting of a sunset"])
    with pytest.raises(RewardError, match="knows no pizza"):
        reward(IMAGES[:1], ["x"], metadata=[COUNT])
    with pytest.raises(RewardError, match="unknown color"):
        reward(IMAGES[:1], ["x"], metadata=[{"tag": "colors", "include": [{"class": "dog", "color": "teal"}]}])


def test_missing_models_say_what_to_do(tmp_path, monkeypatch, dirs):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="not a saved Mask2FormerForUniversalSegmentation"):
        load("geneval", detector=str(tmp_path), clip=dirs[1])
    with pytest.raises(FileNotFoundError, match="download it first.*detector=DIR"):
        load("geneval", detector="someone/no-such-detector", clip=dirs[1])
    with pytest.raises(FileNotFoundError, match="CLIP"):
        load("geneval", detector=dirs[0], clip=str(tmp_path / "no-clip"))


def test_cli_judges_shapeworld_images_with_geneval(tmp_path, dirs, tiny_shapeworld_weights):
    from typer.testing import CliRunner

    from rewardlab.cli import app

    out = tmp_path / "ev"
    r = CliRunner().invoke(app, ["eval", "geneval", "--limit", "1", "--images-per-prompt", "1", "--steps", "2",
                                 "--weights", str(tiny_shapeworld_weights), "--out", str(out), "--judge", "geneval",
                                 "--set", f"geneval.detector={dirs[0]}", "--set", f"geneval.clip={dirs[1]}",
                                 "--set", "geneval.size=64"])
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and all(0 <= row["score"] <= 1 for row in rows)
    assert "Overall score" in r.output
