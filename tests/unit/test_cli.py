import json

import torch
from typer.testing import CliRunner

from rewardlab.cli import app
from rewardlab.world.model import ModelConfig, ShapeWorldModel

runner = CliRunner()


def tiny_weights(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "tiny.safetensors"
    ShapeWorldModel(ModelConfig(channels=(8, 16), text_dim=16, text_layers=1)).save(path)
    return path


def test_generate_writes_png_and_verdict(tmp_path):
    out = tmp_path / "o.png"
    r = runner.invoke(app, ["generate", "a photo of two red circles", "--seed", "0", "-o", str(out),
                            "--steps", "2", "--weights", str(tiny_weights(tmp_path))])
    assert r.exit_code == 0, r.output
    assert out.exists() and "seed 0:" in r.output


def test_generate_unknown_class_is_a_clear_error(tmp_path):
    r = runner.invoke(app, ["generate", "a photo of a bench", "-o", str(tmp_path / "x.png")])
    assert r.exit_code == 2 and "bench" in r.output and not (tmp_path / "x.png").exists()


def test_verify_renders_prints_final_line():
    r = runner.invoke(app, ["world", "verify-renders", "--per-tag", "4"])
    assert r.exit_code == 0, r.output
    assert r.output.strip().splitlines()[-1] == "verifier accuracy (min over tags): 1.0000"


def test_verify_renders_adversarial_lists_every_kind():
    from rewardlab.world.adversarial import KINDS

    r = runner.invoke(app, ["world", "verify-renders", "--adversarial", "--per-tag", "1", "--seed", "4"])
    assert r.exit_code == 0, r.output
    assert all(kind[:6] in r.output for kind in KINDS)
    assert r.output.strip().splitlines()[-1] == "accepted (max over kinds and tags): 0.0000"


def test_eval_geneval_and_summary(tmp_path):
    out = tmp_path / "ev"
    r = runner.invoke(app, ["eval", "geneval", "--prompts", "eval", "--limit", "1", "--images-per-prompt", "1",
                            "--steps", "1", "--out", str(out), "--weights", str(tiny_weights(tmp_path))])
    assert r.exit_code == 0, r.output
    assert "Overall score (avg. over tasks):" in r.output
    assert len((out / "results.jsonl").read_text().splitlines()) == 6
    s = runner.invoke(app, ["eval", "geneval-summary", str(out / "results.jsonl")])
    assert s.exit_code == 0 and "Total images: 6" in s.output


def test_eval_rejects_unknown_generator_and_bad_prompts(tmp_path):
    r = runner.invoke(app, ["eval", "geneval", "--generator", "dalle"])
    assert r.exit_code == 2 and "unknown generator" in r.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"tag": "single_object", "include": [{"class": "bench", "count": 1}],
                               "prompt": "a photo of a bench"}) + "\n")
    r = runner.invoke(app, ["eval", "geneval", "--prompts", str(bad), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "bench" in r.output


def test_score_keeps_good_files_when_one_is_bad(tmp_path):
    from PIL import Image

    from rewardlab.world.records import parse_prompt
    from rewardlab.world.render import render_record

    prompt = "a photo of a red circle"
    good = tmp_path / "good.png"
    Image.fromarray(render_record(parse_prompt(prompt), 0)).save(good)
    cmyk = tmp_path / "cmyk.jpg"
    Image.fromarray(render_record(parse_prompt(prompt), 1)).convert("CMYK").save(cmyk, quality=95)
    bad = tmp_path / "bad.png"
    bad.write_bytes(good.read_bytes()[:30])
    out = tmp_path / "s.jsonl"
    r = runner.invoke(app, ["score", str(good), str(bad), str(cmyk), "--prompt", prompt,
                            "--reward", "shapeworld,jpeg_compressibility", "--out", str(out)])
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows[0]["shapeworld"] == 1.0 and rows[2]["shapeworld"] == 1.0
    assert "bad.png" in rows[1]["error"] and "shapeworld" not in rows[1]


def test_score_and_rewards_list_errors():
    assert runner.invoke(app, ["rewards", "list"]).exit_code == 0
    r = runner.invoke(app, ["score", "x.png", "--prompt", "p", "--reward", "nope"])
    assert r.exit_code == 2 and "unknown reward" in r.output
    r = runner.invoke(app, ["score", "x.png"])
    assert r.exit_code == 2 and "exactly one of" in r.output


def test_rm_make_and_train_reject_bad_datasets(tmp_path):
    out = tmp_path / "p.parquet"
    r = runner.invoke(app, ["rm", "make-shapeworld", str(out), "--pairs", "6"])
    assert r.exit_code == 0 and out.exists(), r.output
    (tmp_path / "bad.parquet").write_text("x")
    r = runner.invoke(app, ["train", "rm", "-o", str(tmp_path / "run"), f"data.train={tmp_path / 'bad.parquet'}"])
    assert r.exit_code == 2 and "not a readable parquet" in " ".join(r.output.split())
    assert not (tmp_path / "run").exists()


def test_score_handles_tiny_and_oversized_images(tmp_path, monkeypatch):
    import rewardlab.images as images
    from PIL import Image

    Image.new("RGB", (1, 1), (255, 0, 0)).save(tmp_path / "one.png")
    Image.new("RGB", (40, 40), (255, 255, 255)).save(tmp_path / "big.png")
    monkeypatch.setattr(images, "MAX_PIXELS", 1000)  # stands in for a decompression bomb
    out = tmp_path / "s.jsonl"
    r = runner.invoke(app, ["score", str(tmp_path / "one.png"), str(tmp_path / "big.png"), "--prompt",
                            "a photo of a circle", "--reward", "shapeworld,jpeg_compressibility", "--out", str(out)])
    assert r.exit_code == 0, r.output
    one, big = [json.loads(line) for line in out.read_text().splitlines()]
    assert one["shapeworld"] == 0.0 and one["jpeg_compressibility"] < 0
    assert "exceeds 1000 pixels" in big["error"]


def test_score_keeps_going_when_a_reward_rejects_some_images(tmp_path):
    from PIL import Image

    from rewardlab.world.records import parse_prompt
    from rewardlab.world.render import render_record

    prompt = "a photo of a red circle"
    Image.new("RGB", (8, 8), (255, 0, 0)).save(tmp_path / "small.png")  # brisque needs 16×16
    Image.fromarray(render_record(parse_prompt(prompt), 0)).save(tmp_path / "good.png")
    out = tmp_path / "s.jsonl"
    r = runner.invoke(app, ["score", str(tmp_path / "small.png"), str(tmp_path / "good.png"), "--prompt", prompt,
                            "--reward", "brisque,shapeworld", "--out", str(out)])
    assert r.exit_code == 0, r.output
    small, good = [json.loads(line) for line in out.read_text().splitlines()]
    assert small["brisque"] is None and "brisque: brisque needs images of at least 16" in small["error"]
    assert small["shapeworld"] == 0.0  # the other reward still scored it
    assert good["brisque"] is not None and good["shapeworld"] == 1.0 and "error" not in good
