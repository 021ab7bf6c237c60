"""generate, demo and eval geneval run through the Generator layer (--generator), and eval
geneval's judge is any registered reward (--judge, --set, --threshold)."""

import json

import pytest
from PIL import Image
from typer.testing import CliRunner

from rewardlab.cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def refused(r, *words):
    assert r.exit_code != 0 and "Traceback" not in r.output, r.output
    assert any(all(w in line for w in words) for line in r.output.splitlines()), r.output


@pytest.fixture
def weights(tiny_shapeworld_weights):
    return tiny_shapeworld_weights


@pytest.fixture(scope="module")
def sd_dir(tmp_path_factory):
    from tests.helpers.tiny_pipelines import tiny_sd

    path = tmp_path_factory.mktemp("sd") / "pipe"
    tiny_sd().save_pretrained(path)
    return path


def results(out):
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


EVAL = ["eval", "geneval", "--limit", 1, "--images-per-prompt", 1, "--steps", 2]


def test_eval_judge_is_any_reward_with_a_threshold(tmp_path, weights):
    r = invoke(*EVAL, "--weights", weights, "--out", tmp_path / "a", "--judge", "jpeg_compressibility",
               "--threshold", -1.0)
    assert r.exit_code == 0, r.output
    rows = results(tmp_path / "a")
    assert len(rows) == 6 and all(row["score"] < 0 and row["correct"] == (row["score"] >= -1.0) for row in rows)
    r = invoke(*EVAL, "--weights", weights, "--out", tmp_path / "b", "--judge", "shapeclip", "--threshold", 0)
    assert r.exit_code == 0 and "judging (shapeclip)" in r.output, r.output


def test_eval_default_judge_is_the_verifier_and_takes_options(tmp_path, weights):
    assert invoke(*EVAL, "--weights", weights, "--out", tmp_path / "a").exit_code == 0
    r = invoke(*EVAL, "--weights", weights, "--out", tmp_path / "b", "--set", "shapeworld.mode=binary")
    assert r.exit_code == 0, r.output
    partial, binary = results(tmp_path / "a"), results(tmp_path / "b")
    assert [p["correct"] for p in partial] == [b["correct"] for b in binary]
    assert [p["reason"] for p in partial] == [b["reason"] for b in binary]
    assert all(b["score"] == float(b["correct"]) for b in binary)
    from rewardlab.images import to_tensor
    from rewardlab.rewards import load

    again = load("shapeworld", mode="partial")(to_tensor([p["filename"] for p in partial]),
                                               [p["prompt"] for p in partial],
                                               metadata=[json.loads(p["metadata"]) for p in partial])
    assert [p["score"] for p in partial] == again.scores.tolist()  # the saved PNG's partial credit, as before


def test_eval_refuses_bad_judges(tmp_path):
    out = tmp_path / "ev"
    refused(invoke(*EVAL, "--out", out, "--judge", "nope"), "error:", "unknown reward 'nope'", "shapeworld")
    refused(invoke(*EVAL, "--out", out, "--judge", "shapeclip", "--set", "shapeworld.mode=binary"),
            "error:", "other than the judge", "shapeworld")
    refused(invoke(*EVAL, "--out", out, "--set", "shapeworld.colour=1"), "error:", "no option colour")
    refused(invoke(*EVAL, "--out", out, "--threshold", "nan"), "Invalid value", "--threshold")
    assert not out.exists()


def test_generator_spec_and_weights_option_agree(tmp_path, weights):
    assert invoke(*EVAL, "--weights", weights, "--out", tmp_path / "a").exit_code == 0
    r = invoke(*EVAL, "--generator", f"shapeworld:{weights}", "--out", tmp_path / "b")
    assert r.exit_code == 0, r.output
    strip = lambda rows: [{k: v for k, v in row.items() if k != "filename"} for row in rows]
    assert strip(results(tmp_path / "a")) == strip(results(tmp_path / "b"))
    for k in range(6):
        png = f"{k:05d}/samples/0000.png"
        assert (tmp_path / "a" / png).read_bytes() == (tmp_path / "b" / png).read_bytes()


def test_bad_generators_are_refused_before_work(tmp_path, weights, sd_dir):
    out = tmp_path / "o.png"
    cases = [
        (["--generator", "dalle"], ["unknown generator 'dalle'", "sd:DIR"]),
        (["--generator", "sd"], ["needs a pipeline folder", "sd:DIR"]),
        (["--generator", f"sd:{tmp_path / 'none'}"], ["cannot load", "none"]),
        (["--generator", f"sd:{sd_dir}", "--weights", weights], ["--weights is for the shapeworld generator"]),
        (["--generator", f"shapeworld:{weights}", "--weights", weights], ["give the ShapeWorld weights once"]),
        (["--height", 64], ["--height/--width are for sd, sd3 and flux"]),
        (["--height", 0], ["Invalid value", "--height", "≥ 8"]),
        (["--generator", f"sd:{sd_dir}", "--height", 17], ["divisible"]),  # before an earlier run is cleared
    ]
    for args, words in cases:
        refused(invoke("generate", "a photo of a circle", "-o", out, *args), *words)
        refused(invoke(*EVAL, "--out", tmp_path / "ev", *args), *words)
    assert list(tmp_path.iterdir()) == []  # nothing written
    for prompt in (" ", " ".join(["word"] * 80)):  # another generator's prompt is checked before work too
        refused(invoke("generate", prompt, "--generator", f"sd:{sd_dir}", "-o", out), "prompt")
    assert list(tmp_path.iterdir()) == []


def test_generate_and_eval_with_a_diffusers_pipeline(tmp_path, sd_dir):
    out = tmp_path / "o.png"
    r = invoke("generate", "a watercolour of a lighthouse", "--generator", f"sd:{sd_dir}", "--steps", 2, "-n", 2,
               "--scale", 1, "-o", out)
    assert r.exit_code == 0, r.output
    assert Image.open(out).size == (2 * 18, 18) and "seed 0" not in r.output  # 16 px images; nothing to verify
    r = invoke(*EVAL, "--generator", f"sd:{sd_dir}", "--out", tmp_path / "ev", "--judge", "jpeg_compressibility",
               "--threshold", -0.5)
    assert r.exit_code == 0, r.output
    assert Image.open(tmp_path / "ev" / "00000" / "samples" / "0000.png").size == (16, 16)


def test_demo_takes_the_sampling_options(tmp_path, weights):
    r = invoke("demo", "--out", tmp_path / "d", "--weights", weights, "--steps", 1, "--per-tag", 1,
               "--images-per-prompt", 1)
    assert r.exit_code == 0, r.output
    assert (tmp_path / "d" / "grid.png").exists() and len(results(tmp_path / "d" / "geneval")) == 6
    again = invoke("demo", "--out", tmp_path / "d", "--weights", weights, "--steps", 1, "--per-tag", 1,
                   "--images-per-prompt", 1)
    assert again.exit_code == 0, again.output  # the demo replaces its own last run


def test_demo_never_replaces_a_geneval_run_it_did_not_write(tmp_path, weights):
    r = invoke(*EVAL, "--weights", weights, "--out", tmp_path / "d" / "geneval")
    assert r.exit_code == 0, r.output
    refused(invoke("demo", "--out", tmp_path / "d", "--weights", weights, "--steps", 1), "already holds GenEval output")
    assert len(results(tmp_path / "d" / "geneval")) > 0
