"""Every bad input a careful tester tried (issue 8) ends in a one-line error naming the
problem — exit code 2, no traceback, nothing written — and is refused before any work."""

import json
import os
import struct
import tempfile
import zlib
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from rewardlab.cli import app
from rewardlab.data.preferences import make_shapeworld_preferences, save_preferences
from rewardlab.utils import save_checkpoint
from rewardlab.world.clip import ClipConfig, ShapeCLIP
from rewardlab.world.records import make_record, parse_prompt
from rewardlab.world.render import render_record
from rewardlab.world.train import TrainConfig

runner = CliRunner()


def refused(r, *words):
    """Exit code ≠ 0, no traceback, and one output line names the problem (all ``words``)."""
    assert r.exit_code != 0, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert "Traceback" not in r.output
    assert any(all(w.lower() in line.lower() for w in words) for line in r.output.splitlines()), \
        f"no line names {words}:\n{r.output}"


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def weights(tiny_shapeworld_weights):
    return tiny_shapeworld_weights


def _bad_weights(kind: str, folder: Path, good: Path) -> Path:
    """A weights (or checkpoint) file that must be refused: corrupt, truncated, pickled, foreign."""
    path = folder / f"{kind}.safetensors"
    if kind == "corrupt":
        path.write_bytes(b"\x00garbage" * 100)
    elif kind == "truncated":
        path.write_bytes(good.read_bytes()[:-1000])
    elif kind == "pickled":
        torch.save({"w": torch.zeros(3)}, path)
    elif kind == "foreign":  # real weights of the other model
        ShapeCLIP(ClipConfig(width=16, layers=1, embed=8)).save(path)
    elif kind == "no_config":
        from safetensors.torch import save_file
        save_file({"w": torch.zeros(3)}, str(path))
    elif kind == "folder":
        path.mkdir()
    return path


BAD_WEIGHTS = ["corrupt", "truncated", "pickled", "foreign", "no_config", "folder"]


@pytest.fixture
def readonly(tmp_path):
    """A folder no one may write to: chmod 555, or (root ignores that) sysfs, which refuses file creation."""
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    for folder in (ro, Path("/sys")):
        try:
            fd, probe = tempfile.mkstemp(dir=folder)
        except OSError:
            yield folder
            ro.chmod(0o755)
            return
        os.close(fd)
        os.unlink(probe)
    ro.chmod(0o755)
    pytest.skip("no unwritable folder here (running as root without a read-only sysfs)")


# ---- weights and checkpoints ----
@pytest.mark.parametrize("kind", BAD_WEIGHTS)
def test_generate_and_eval_refuse_bad_weights(kind, tmp_path, weights):
    bad = _bad_weights(kind, tmp_path, weights)
    r = invoke("generate", "a photo of a circle", "-o", tmp_path / "o.png", "--weights", bad)
    refused(r, "error:", bad.name)
    assert not (tmp_path / "o.png").exists()
    r = invoke("eval", "geneval", "--limit", 1, "--images-per-prompt", 1, "--out", tmp_path / "ev", "--weights", bad)
    refused(r, "error:", bad.name)
    assert not (tmp_path / "ev").exists()


@pytest.mark.parametrize("kind", ["corrupt", "pickled", "foreign", "no_config"])
@pytest.mark.parametrize("reward", ["preference", "shapeclip"])
def test_score_refuses_bad_reward_weights(kind, reward, tmp_path, weights):
    bad = _bad_weights(kind, tmp_path, weights)
    if kind == "foreign":  # ShapeWorld weights where ShapeCLIP's are expected
        bad.write_bytes(weights.read_bytes())
    r = invoke("score", "x.png", "--prompt", "a photo of a circle", "--reward", reward,
               "--set", f"{reward}.weights={bad}")
    refused(r, "error:", bad.name)


def _checkpoint(kind: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "truncated":
        save_checkpoint(path, {"model": {"w": torch.zeros(5000)}, "optimizer": {}, "step": 1, "config": {}})
        path.write_bytes(path.read_bytes()[:4000])
    elif kind == "pickled":  # arbitrary objects: refused unread
        torch.save({"model": {}, "optimizer": {}, "step": 1, "config": Path("x")}, path)
    elif kind == "foreign":  # a torch file, but not a training state
        torch.save({"weights": torch.zeros(3)}, path)
    else:
        path.write_bytes(b"PK\x03\x04 not really a zip")


@pytest.mark.parametrize("kind", ["corrupt", "truncated", "pickled", "foreign"])
@pytest.mark.parametrize("command", [["world", "train", "--steps", 1], ["world", "train-clip", "--steps", 1],
                                     ["train", "rm", "data.train=DATA", "train.steps=1"]])
def test_training_refuses_bad_checkpoints_before_work(kind, command, tmp_path, prefs):
    out = tmp_path / "run"
    _checkpoint(kind, out / "checkpoint.pt")
    r = invoke(*[str(a).replace("DATA", str(prefs)) for a in command], "--out", out)
    refused(r, "error:", "checkpoint.pt")
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt"]


def test_resume_with_other_settings_is_one_line(tmp_path):
    out = tmp_path / "run"
    cfg = TrainConfig(steps=10, batch_size=2, lr=1e-3, checkpoint_every=1)
    save_checkpoint(out / "checkpoint.pt", {"model": {}, "optimizer": {}, "step": 1, "config": asdict(cfg)})
    r = invoke("world", "train", "--out", out, "--steps", 10, "--batch-size", 4, "--lr", 1e-3, "--checkpoint-every", 1)
    refused(r, "error:", "different settings", "batch_size 2 → 4")
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt"]


@pytest.fixture
def prefs(tmp_path):
    path = tmp_path / "p.parquet"
    save_preferences(make_shapeworld_preferences(4, seed=0), path)
    return path


def test_resumed_run_says_where_and_orphans_are_removed(tmp_path, prefs):
    out = tmp_path / "rm"
    args = ["train", "rm", "--out", out, f"data.train={prefs}", "train.batch_size=2", "train.checkpoint_every=1"]
    first = invoke(*args, "train.steps=1")
    assert first.exit_code == 0 and "resuming" not in first.output, first.output
    orphan = out / ".checkpoint.pt.k2j4h5g6.tmp"  # a write killed mid-way
    orphan.write_bytes(b"half")
    r = invoke(*args, "train.steps=2")
    assert r.exit_code == 0, r.output
    assert f"resuming from {out / 'checkpoint.pt'}" in " ".join(r.output.split()) and not orphan.exists()
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 2


# ---- output paths ----
def test_generate_refuses_unwritable_outputs_before_work(tmp_path, readonly, weights):
    (tmp_path / "file").write_text("x")
    (tmp_path / "folder.png").mkdir()
    for out, words in [(tmp_path / "file" / "o.png", ["file", "not a folder"]),
                       (tmp_path / "folder.png", ["is a folder"]),
                       (tmp_path / "o.txt", ["unsupported extension", ".txt"]),
                       (readonly / "o.png", ["not writable"])]:
        r = invoke("generate", "a photo of a circle", "-o", out, "--weights", weights, "--steps", 1)
        refused(r, "error:", *words)
        assert "generating" not in r.output  # refused before sampling
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "folder.png", "ro"]


def test_generate_creates_missing_parent_folders(tmp_path, weights):
    out = tmp_path / "a" / "b" / "o.png"
    r = invoke("generate", "a photo of a circle", "-o", out, "--weights", weights, "--steps", 1, "-n", 3)
    assert r.exit_code == 0, r.output
    assert Image.open(out).size == (3 * 34 * 4, 34 * 4)
    assert [p.name for p in out.parent.iterdir()] == ["o.png"]  # no temporary file left


def test_other_commands_refuse_unwritable_outputs(tmp_path, readonly, prefs):
    (tmp_path / "file").write_text("x")
    img = tmp_path / "i.png"
    Image.new("RGB", (8, 8)).save(img)
    cases = [
        (["score", img, "--prompt", "a photo of a circle", "--out", tmp_path / "s.txt"], ["unsupported extension"]),
        (["score", img, "--prompt", "a photo of a circle", "--out", readonly / "s.csv"], ["not writable"]),
        (["rm", "make-shapeworld", tmp_path / "p.csv", "--pairs", 2], ["unsupported extension", ".parquet"]),
        (["rm", "make-shapeworld", tmp_path / "file" / "p.parquet", "--pairs", 2], ["not a folder"]),
        (["eval", "geneval", "--out", tmp_path / "file"], ["is a file, not a folder"]),
        (["world", "train", "--out", tmp_path / "file"], ["is a file, not a folder"]),
        (["demo", "--out", tmp_path / "file"], ["is a file, not a folder"]),
        (["world", "train-clip", "--out", readonly / "run"], ["not writable"]),
        (["train", "rm", "--out", tmp_path / "file" / "run", f"data.train={prefs}"], ["not a folder"]),
        (["world", "prompts", "--out", tmp_path / "file" / "sets"], ["not a folder"]),
        (["world", "prompts", "--out", readonly / "sets"], ["not writable"]),
    ]
    for args, words in cases:
        refused(invoke(*args), "error:", *words)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "i.png", "p.parquet", "ro"]


# ---- score ----
def _png_header(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims a huge image (a decompression bomb) over almost no data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b""))
                     + chunk(b"IEND", b""))


def test_score_decompression_bomb_is_a_per_file_error(tmp_path):
    prompt = "a photo of a red circle"
    good, bomb, out = tmp_path / "good.png", tmp_path / "bomb.png", tmp_path / "s.jsonl"
    Image.fromarray(render_record(parse_prompt(prompt), 0)).save(good)
    _png_header(bomb, 40_000, 40_000)
    r = invoke("score", bomb, good, "--prompt", prompt, "--out", out)
    assert r.exit_code == 0, r.output
    b, g = [json.loads(line) for line in out.read_text().splitlines()]
    assert "decompression bomb" in b["error"] and "shapeworld" not in b
    assert g["shapeworld"] == 1.0


def test_score_refuses_bad_prompt_files_and_options(tmp_path):
    img = tmp_path / "i.png"
    Image.new("RGB", (8, 8)).save(img)
    (tmp_path / "latin1.txt").write_bytes("a photo of a c\xeercle\n".encode("latin-1"))
    cases = [
        (["--prompts-file", tmp_path / "missing.txt"], ["missing.txt", "No such file"]),
        (["--prompts-file", tmp_path / "latin1.txt"], ["latin1.txt", "not UTF-8"]),
        (["--prompts-file", tmp_path], ["--prompts-file", "directory"]),
        (["--prompt", "a photo of a circle", "--batch-size", 0], ["--batch-size"]),
        (["--prompt", "a photo of a circle", "--reward", ","], ["--reward", "names no reward"]),
    ]
    for args, words in cases:
        refused(invoke("score", img, *args), *words)


def test_score_says_why_shapeworld_cannot_read_a_prompt(tmp_path):
    img, out = tmp_path / "i.png", tmp_path / "s.jsonl"
    Image.new("RGB", (8, 8)).save(img)
    r = invoke("score", img, "--prompt", "a photo of a bench", "--out", out)
    assert r.exit_code == 0, r.output
    row = json.loads(out.read_text())
    assert row["shapeworld"] is None and "shapeworld: cannot read prompt" in row["error"] and "bench" in row["error"]


# ---- eval geneval ----
def _records(tmp_path, *records) -> Path:
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_eval_refuses_bad_records_and_prompts(tmp_path):
    rec = make_record("single_object", ["circle"])
    cases = [
        ({k: v for k, v in rec.items() if k != "prompt"}, ["m.jsonl:1", "no 'prompt'"]),
        ({**rec, "prompt": 5}, ["m.jsonl:1", "must be a string"]),
        ({**rec, "prompt": "a photo of a circle please"}, ["m.jsonl:1", "unknown word", "'please'"]),
        ({**rec, "prompt": "a photo of a círcle"}, ["m.jsonl:1", "unknown word", "'círcle'"]),
    ]
    for record, words in cases:
        r = invoke("eval", "geneval", "--prompts", _records(tmp_path, record), "--out", tmp_path / "ev")
        refused(r, "error:", *words)
        assert not (tmp_path / "ev").exists()


@pytest.mark.parametrize("prompt, word", [("a photo of a circle please", "'please'"),
                                          ("a photo of a Círcle", "'Círcle'"), ("a photo of 2 circles", "'2'")])
def test_generate_and_eval_agree_on_unknown_words(prompt, word, tmp_path):
    refused(invoke("generate", prompt, "-o", tmp_path / "o.png"), "error:", "unknown word", word)
    rec = {**make_record("single_object", ["circle"]), "prompt": prompt}
    refused(invoke("eval", "geneval", "--prompts", _records(tmp_path, rec), "--out", tmp_path / "ev"),
            "error:", "unknown word", word)
    assert list(tmp_path.iterdir()) == [tmp_path / "m.jsonl"]


def test_eval_refuses_nonsense_options_and_swapped_paths(tmp_path):
    (tmp_path / "file").write_text("x")
    cases = [
        (["--steps", 0], ["--steps"]), (["--limit", -1], ["--limit"]),
        (["--images-per-prompt", 0], ["--images-per-prompt"]), (["--guidance", "nan"], ["--guidance", "finite"]),
        (["--prompts", tmp_path], ["is a folder", "JSONL"]),
        (["--out", tmp_path / "file"], ["is a file, not a folder"]),
    ]
    for args, words in cases:
        refused(invoke("eval", "geneval", "--out", tmp_path / "ev", *args), *words)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_eval_reuses_an_output_folder_only_with_overwrite(tmp_path, weights):
    out = tmp_path / "ev"
    args = ["eval", "geneval", "--limit", 1, "--images-per-prompt", 1, "--steps", 1, "--weights", weights, "--out", out]
    assert invoke(*args, "--images-per-prompt", 2).exit_code == 0
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    assert Path("00000/samples/0001.png") in before
    refused(invoke(*args), "error:", "earlier run", "--overwrite")
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    r = invoke(*args, "--overwrite")
    assert r.exit_code == 0, r.output
    assert not (out / "00000" / "samples" / "0001.png").exists()  # the stale image is gone
    assert len((out / "results.jsonl").read_text().splitlines()) == 6
    (out / "notes.txt").write_text("mine")  # never deleted, even with --overwrite
    refused(invoke(*args, "--overwrite"), "error:", "not GenEval output", "notes.txt")
    assert (out / "notes.txt").read_text() == "mine" and (out / "results.jsonl").exists()


def test_geneval_summary_rejects_non_boolean_correct(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps({"tag": "single_object", "correct": "false", "metadata": "{}"}) + "\n")
    refused(invoke("eval", "geneval-summary", path), "error:", "results.jsonl:1", "'correct' must be true or false")
    path.write_bytes(b"\xff\xfe{}")
    refused(invoke("eval", "geneval-summary", path), "error:", "results.jsonl", "not UTF-8")
    refused(invoke("eval", "geneval-summary", tmp_path), "error:", "directory")


# ---- nonsense numbers ----
@pytest.mark.parametrize("args, words", [
    (["world", "train", "--out", "RUN", "--steps", 0], ["--steps"]),
    (["world", "train", "--out", "RUN", "--batch-size", 0], ["--batch-size"]),
    (["world", "train", "--out", "RUN", "--checkpoint-every", 0], ["--checkpoint-every"]),
    (["world", "train", "--out", "RUN", "--lr", "nan"], ["--lr", "finite"]),
    (["world", "train-clip", "--out", "RUN", "--batch-size", 0], ["--batch-size"]),
    (["world", "train-clip", "--out", "RUN", "--checkpoint-every", 0], ["--checkpoint-every"]),
    (["world", "train-clip", "--out", "RUN", "--lr", "nan"], ["--lr", "finite"]),
    (["rm", "make-shapeworld", "RUN", "--pairs", -5], ["--pairs"]),
    (["rm", "make-shapeworld", "RUN", "--label-noise", 0.9], ["--label-noise"]),
    (["generate", "a photo of a circle", "-o", "RUN", "--guidance", "nan"], ["--guidance", "finite"]),
    (["generate", "a photo of a circle", "-o", "RUN", "--guidance", "inf"], ["--guidance", "finite"]),
    (["generate", "a photo of a circle", "-o", "RUN", "-n", 1_000_000_000], ["-n", "1000"]),
    (["generate", "a photo of a circle", "-o", "RUN", "--steps", 0], ["--steps"]),
])
def test_nonsense_values_are_refused(args, words, tmp_path, prefs):
    run = tmp_path / ("o.png" if args[0] == "generate" else "run.parquet" if "make-shapeworld" in args else "run")
    refused(invoke(*[{"DATA": prefs, "RUN": run}.get(a, a) for a in args]), "Invalid value", *words)
    assert not run.exists()


def test_generate_refuses_a_png_too_large(tmp_path, weights):
    r = invoke("generate", "a photo of a circle", "-n", 1000, "--scale", 64, "-o", tmp_path / "o.png",
               "--weights", weights)
    refused(r, "error:", "pixels", "lower -n or --scale")
    assert not (tmp_path / "o.png").exists()


def test_preference_dataset_with_unknown_words_names_them(tmp_path):
    rows = make_shapeworld_preferences(3, seed=0)
    rows["prompt"][1] = "a photo of a rouge circle"
    save_preferences(rows, tmp_path / "p.parquet")
    refused(invoke("train", "rm", "--out", tmp_path / "run", f"data.train={tmp_path / 'p.parquet'}"), "error:",
            "row 1", "'rouge'")
    assert not (tmp_path / "run").exists()
