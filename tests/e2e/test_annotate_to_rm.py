"""The whole human-feedback loop: votes cast in the browser → `annotate export` →
`train rm` learns the voters' preference."""

import pytest
import torch
from typer.testing import CliRunner

from rewardlab.cli import app
from rewardlab.data.preferences import decode_png, load_preferences
from rewardlab.images import to_tensor
from rewardlab.rewards.preference import PreferenceReward
from rewardlab.serve.annotate import create_app
from rewardlab.serve.sources import open_source
from rewardlab.serve.store import VoteStore
from tests.e2e.test_annotate_browser import browser, _shown  # noqa: F401  (fixture)
from tests.helpers.serving import live_server, make_source


def test_browser_votes_train_a_reward_model(browser, tmp_path):  # noqa: F811
    source = make_source(tmp_path / "src", prompts=12, images=3)  # img0 is correct, img1/img2 near misses
    db = f"sqlite:///{tmp_path / 'votes.db'}"
    store, src = VoteStore(db), open_source(source)
    store.add_pairs(src.pairs())
    store.bind_source(str(src.root), src.fingerprint())
    with live_server(create_app(store, src, "tok")) as url:  # 12 prompts × 3 pairs = 36 pairs
        page = browser.new_page()
        page.goto(f"{url}/#token=tok&annotator=scripted")
        for _ in range(36):  # the scripted annotator prefers the correct render, else calls a tie
            pid, left, right = _shown(page)
            pair = store.pair(pid)
            correct = "a" if pair.image_a.endswith("img0.png") else "b" if pair.image_b.endswith("img0.png") else None
            page.keyboard.press("ArrowLeft" if correct == left else "ArrowRight" if correct == right else "=")
            page.wait_for_function(f"!pair || pair.id !== {pid}")
        page.wait_for_selector("#done", state="visible")
        page.close()
    runner = CliRunner()
    prefs = tmp_path / "votes.parquet"
    r = runner.invoke(app, ["annotate", "export", "--db", db, "--out", str(prefs)])
    assert r.exit_code == 0, r.output
    assert "wrote 36 votes" in r.output
    rows = load_preferences(prefs)
    assert sorted(rows["label"]).count(0.5) == 12  # the near-miss-vs-near-miss pairs
    r = runner.invoke(app, ["train", "rm", "-o", str(tmp_path / "rm"), f"data.train={prefs}", "train.steps=60",
                            "train.batch_size=16", "train.checkpoint_every=30"])
    assert r.exit_code == 0, r.output
    rm = PreferenceReward(tmp_path / "rm" / "weights.safetensors")
    decided = [i for i, y in enumerate(rows["label"]) if y != 0.5]
    a = rm(to_tensor([decode_png(rows["image_a"][i]) for i in decided]), [rows["prompt"][i] for i in decided]).scores
    b = rm(to_tensor([decode_png(rows["image_b"][i]) for i in decided]), [rows["prompt"][i] for i in decided]).scores
    agree = ((a > b).float() == torch.tensor([rows["label"][i] for i in decided])).float().mean()
    assert agree >= 0.9, f"the trained reward model agrees with {agree:.0%} of the votes it was trained on"
