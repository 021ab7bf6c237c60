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
