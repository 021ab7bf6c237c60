"""`rewardlab report` opened in headless Chromium: images, plots, tables and alarms render."""

import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from rewardlab.cli import app
from rewardlab.images import grid, save_png
from rewardlab.world.prompts import PromptSampler
from rewardlab.world.render import render_record
from tests.e2e.test_annotate_browser import SCREENSHOTS, browser  # noqa: F401  (fixture)


def _train_run(run: Path) -> None:
    """A run folder as `rewardlab train` leaves it: a proxy rising while the gold falls."""
    run.mkdir()
    rows = [{"epoch": 0, "eval/counting": 0.78, "eval/position": 0.31, "eval/overall": 0.79}]
    for e in range(1, 31):
        rows.append({"epoch": e, "reward_mean": 17 + 0.1 * e, "score/shapeclip": 17 + 0.1 * e,
                     "score/shapeworld": 0.83 - max(0, e - 10) * 0.01, "diversity": 0.3 - 0.002 * e})
    rows.append({"epoch": 30, "eval/counting": 0.70, "eval/position": 0.25, "eval/overall": 0.72})
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run / "config.yaml").write_text("reward.names: [shapeclip]\nreward.monitors: [shapeworld]\ntrain.lr: 1.0e-4\n")
    recs = PromptSampler("train", seed=0)(16)
    for epoch in (0, 30):
        images = np.stack([render_record(r, epoch + i) for i, r in enumerate(recs)])
        save_png(grid(images, 8), run / "grids" / f"epoch_{epoch:05d}.png", scale=2)


def test_train_report_renders(browser, tmp_path):  # noqa: F811
    run = tmp_path / "run"
    _train_run(run)
    r = CliRunner().invoke(app, ["report", str(run)])
    assert r.exit_code == 0, r.output
    page = browser.new_page(viewport={"width": 1150, "height": 900})
    page.goto((run / "report.html").as_uri())
    images = page.eval_on_selector_all("img", "els => els.map(e => [e.alt, e.complete && e.naturalWidth > 0])")
    assert len(images) == 3 and all(ok for _, ok in images), images  # the curves and two grids
    assert page.eval_on_selector("img.plot", "e => e.naturalWidth") > 800
    alarms = page.inner_text("li.alarm")
    assert "score/shapeworld fell" in alarms
    cells = page.eval_on_selector_all("table.eval tr", "rows => rows.map(r => r.innerText)")
    assert len(cells) == 4 and "position" in cells[2] and "-0.060" in cells[2]
    assert "train.lr" in page.inner_text("pre")
    if SCREENSHOTS:
        page.screenshot(path=str(Path(SCREENSHOTS) / "report.png"))
    page.close()


def test_search_report_and_errors(browser, tmp_path):  # noqa: F811
    run = tmp_path / "search"
    rec = PromptSampler("train", seed=1)(1)[0]
    ranked = []
    for k in range(4):
        save_png(render_record(rec, k), run / "candidates" / f"rank_{k:03d}.png", scale=4)
        ranked.append({"file": f"candidates/rank_{k:03d}.png", "score": 1.0 - k / 10})
    ranked.append({"file": "../../outside.png", "score": 0.0})  # a log pointing elsewhere is not followed
    save_png(render_record(rec, 0), run / "best.png", scale=4)
    scored = [{"event": "scored", "reward_mean": 20 + k / 10, "score/shapeworld": 0.9 - max(0, k - 8) * 0.05,
               "diversity": None} for k in range(20)]  # what search --monitor logs: a proxy climbing, gold falling
    (run / "trace.json").write_text(json.dumps({"method": "noise_opt", "nfe": 160, "budget_nfe": 160,
                                                "reward_calls": 4, "seconds": 1.5, "trace": scored,
                                                "prompts": [{"prompt": rec["prompt"], "score": 1.0,
                                                             "ranked": ranked}]}))
    r = CliRunner().invoke(app, ["report", str(run), "-o", str(tmp_path / "s.html")])
    assert r.exit_code == 0, r.output
    page = browser.new_page()
    page.goto((tmp_path / "s.html").as_uri())
    images = page.eval_on_selector_all("img", "els => els.map(e => e.naturalWidth > 0)")
    assert images == [True] * 6  # the curves, best + 4 candidates, nothing from outside the run
    assert "score/shapeworld fell" in page.inner_text("li.alarm")
    assert rec["prompt"] in page.inner_text("body")
    page.close()
    r = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert r.exit_code == 2 and "not a run folder" in r.output
