"""The one config loader (rewardlab.config): dataclass defaults, a YAML file, key=value
overrides, typed conversion, unknown keys and bad values as one-line errors; and the CLI
options that are built from the same dataclasses."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import pytest
from typer.testing import CliRunner

from rewardlab.cli import app
from rewardlab.config import ConfigError, load_config, settings, setting, to_yaml
from rewardlab.train_configs import ClipTrainConfig, TrainConfig

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


@dataclass
class Sampling:
    steps: int = setting(20, "sampling steps", min=1)
    guidance: float = setting(3.0, "guidance scale")


@dataclass
class Recipe:
    lr: float = setting(1e-4, "learning rate", gt=0)
    clip: float = setting(0.2, "PPO clip range", min=0, max=1)
    use_kl: bool = setting(False, "add a KL penalty")
    name: str = setting("run", "run name")
    mode: Literal["grpo", "dpo"] = setting("grpo", "which loss")
    init: Optional[Path] = setting(None, "weights to start from")
    widths: tuple[int, ...] = setting((8, 16), "block widths")
    rewards: list[str] = setting(["shapeworld"], "reward names")
    sample: Sampling = dataclasses.field(default_factory=Sampling)


def test_defaults_file_and_overrides_in_order(tmp_path):
    assert load_config(Recipe) == Recipe()
    f = tmp_path / "r.yaml"
    f.write_text("lr: 5e-4\nuse_kl: true\nsample:\n  steps: 10\nwidths: [4, 8, 16]\n")
    cfg = load_config(Recipe, f, {"name": "a"}, ["lr=1e-3", "sample.guidance=1.5", "init=w.safetensors"])
    assert cfg.lr == 1e-3  # the override beats the file (whose 5e-4 PyYAML reads as a string)
    assert cfg.use_kl is True and cfg.sample == Sampling(10, 1.5) and cfg.widths == (4, 8, 16)
    assert cfg.name == "a" and cfg.init == Path("w.safetensors") and cfg.rewards == ["shapeworld"]
    assert load_config(Recipe, f).lr == 5e-4


def test_typed_conversion_of_override_strings():
    cfg = load_config(Recipe, None, ["use_kl=yes", "mode=dpo", "init=none", "widths=2,4", "rewards=[a, b]",
                                     "clip=1", "sample.steps=3"])
    assert (cfg.use_kl, cfg.mode, cfg.init, cfg.widths, cfg.rewards, cfg.clip, cfg.sample.steps) == \
        (True, "dpo", None, (2, 4), ["a", "b"], 1.0, 3)
    assert isinstance(cfg.clip, float) and isinstance(cfg.sample.steps, int)


@pytest.mark.parametrize("override, words", [
    ("lrr=1", ["unknown setting 'lrr'", "did you mean lr?", "valid: lr, clip, use_kl", "sample.steps"]),
    ("sample.step=1", ["unknown setting 'sample.step'", "sample.steps"]),
    ("lr=fast", ["lr=fast", "expected a number"]),
    ("lr=nan", ["lr=nan", "finite"]),
    ("lr=0", ["lr=0", "must be positive"]),
    ("clip=1.5", ["clip=1.5", "must be 0 … 1"]),
    ("sample.steps=2.5", ["sample.steps=2.5", "expected an integer"]),
    ("sample.steps=0", ["sample.steps=0", "must be ≥ 1"]),
    ("use_kl=maybe", ["use_kl=maybe", "true or false"]),
    ("mode=ppo", ["mode=ppo", "one of grpo, dpo"]),
    ("widths=[a]", ["widths=[a]", "expected an integer"]),
    ("lr", ["KEY=VALUE", "'lr'"]),
])
def test_bad_overrides_are_one_line_errors(override, words):
    with pytest.raises(ConfigError) as e:
        load_config(Recipe, None, [override])
    assert "\n" not in str(e.value) and all(w in str(e.value) for w in words), str(e.value)


@pytest.mark.parametrize("text, words", [
    ("lr: [1\n", ["not valid YAML", "line 2"]),
    ("- lr\n", ["must be a mapping"]),
    ("lr: 1\nbogus: 2\n", ["r.yaml", "unknown setting 'bogus'", "valid: lr"]),
    ("sample:\n  guidance: high\n", ["r.yaml", "sample.guidance=high", "expected a number"]),
    ("use_kl: 3\n", ["use_kl=3", "true or false"]),
    ("name: 3\n", ["name=3", "expected a string"]),
])
def test_bad_files_are_one_line_errors(tmp_path, text, words):
    f = tmp_path / "r.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(Recipe, f)
    assert "\n" not in str(e.value) and all(w in str(e.value) for w in words), str(e.value)


def test_missing_empty_and_non_utf8_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config .*nope.yaml"):
        load_config(Recipe, tmp_path / "nope.yaml")
    (tmp_path / "empty.yaml").write_text("# nothing set\n")
    assert load_config(Recipe, tmp_path / "empty.yaml") == Recipe()
    (tmp_path / "latin1.yaml").write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(Recipe, tmp_path / "latin1.yaml")


def test_to_yaml_reads_back_and_comments_every_key(tmp_path):
    cfg = load_config(Recipe, None, ["lr=1e-10", "init=a/b", "sample.steps=7", "name=yes"])
    f = tmp_path / "r.yaml"
    f.write_text(to_yaml(cfg))
    assert load_config(Recipe, f) == cfg
    assert "# PPO clip range\nclip: 0.2" in to_yaml(cfg) and "sample.steps: 7" in to_yaml(cfg)


@pytest.mark.parametrize("cls", [TrainConfig, ClipTrainConfig])
def test_shipped_configs_document_every_field(cls):
    assert all(s.help for s in settings(cls)), [s.key for s in settings(cls) if not s.help]


def test_trainer_defaults_are_the_shipped_runs():
    """README: the model was trained with 2400 steps at lr 6e-4, ShapeCLIP with 2000 steps."""
    assert (TrainConfig().steps, TrainConfig().lr) == (2400, 6e-4)
    assert ClipTrainConfig().steps == 2000
    assert load_config(TrainConfig, REPO / "configs" / "shapeworld.yaml") == TrainConfig()


# ---- the CLI path ----
def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def printed(*args) -> dict:
    import yaml

    r = invoke(*args, "--print-config")
    assert r.exit_code == 0, r.output
    return yaml.safe_load(r.output)


def test_world_train_reads_file_then_options_then_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("lr: 1e-3\nwarmup: 7\nema_decay: 0.99\nbatch_size: 8\n")
    assert printed("world", "train") == dataclasses.asdict(TrainConfig())
    cfg = printed("world", "train", "--config", f, "--batch-size", 4, "cfg_dropout=0.2", "ema_decay=0.9")
    assert cfg == {**dataclasses.asdict(TrainConfig()), "lr": 1e-3, "warmup": 7, "ema_decay": 0.9,
                   "batch_size": 4, "cfg_dropout": 0.2}
    assert printed("world", "train", "--batch-size", 4, "batch_size=2")["batch_size"] == 2
    assert printed("world", "train-clip", "lr=2e-3")["lr"] == 2e-3


def test_every_config_field_is_a_cli_option():
    for command, cls in [(["world", "train"], TrainConfig), (["world", "train-clip"], ClipTrainConfig)]:
        r = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
        for s in settings(cls):
            assert "--" + s.key.replace("_", "-") in r.output, (command, s.key)
        assert "--config" in r.output and "KEY=VALUE" in r.output


def refused(r, *words):
    assert r.exit_code != 0 and "Traceback" not in r.output, r.output
    assert any(all(w in line for w in words) for line in r.output.splitlines()), r.output


def test_world_train_refuses_bad_settings_before_work(tmp_path):
    out = tmp_path / "run"
    bad = tmp_path / "bad.yaml"
    bad.write_text("stepz: 3\n")
    refused(invoke("world", "train", "--out", out, "stepz=3"), "error:", "unknown setting 'stepz'", "valid: steps")
    refused(invoke("world", "train", "--out", out, "--config", bad), "error:", "bad.yaml", "unknown setting 'stepz'")
    refused(invoke("world", "train", "--out", out, "ema_decay=2"), "error:", "ema_decay=2", "0 … 1")
    refused(invoke("world", "train", "--out", out, "--warmup", -1), "Invalid value", "--warmup", "≥ 0")
    refused(invoke("world", "train", "--out", out, "--config", tmp_path / "none.yaml"), "error:", "none.yaml")
    refused(invoke("train", "rm", "--out", out, "train.lr=-1"), "error:", "train.lr=-1", "positive")
    assert not out.exists()


def test_world_train_with_config_resumes_and_refuses_changed_settings(tmp_path, monkeypatch):
    import rewardlab.world.train as T
    from rewardlab.world.model import ModelConfig

    monkeypatch.setattr(T, "ModelConfig", lambda resolution: ModelConfig(resolution, (8, 16), 1, 16, 1))
    f, out = tmp_path / "c.yaml", tmp_path / "run"
    f.write_text("batch_size: 2\ncheckpoint_every: 1\nwarmup: 1\n")
    r = invoke("world", "train", "--config", f, "--out", out, "steps=1")
    assert r.exit_code == 0, r.output
    r = invoke("world", "train", "--config", f, "--out", out, "steps=2")
    assert r.exit_code == 0 and "resuming from step 1" in r.output, r.output
    r = invoke("world", "train", "--config", f, "--out", out, "steps=3", "ema_decay=0.9")
    refused(r, "error:", "different settings", "ema_decay 0.999 → 0.9")


def test_a_command_without_files_must_reach_every_setting():
    from rewardlab.cli.common import config_options

    with pytest.raises(TypeError, match="every setting must be a plain option"):
        config_options(Recipe, files=False)(lambda cfg: None)  # mode (Literal) and sample.* are no options
    config_options(Recipe)(lambda cfg: None)  # with files, KEY=VALUE reaches them
