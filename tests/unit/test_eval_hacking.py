"""The reward-hacking monitor on logs whose story we know."""

import json

import numpy as np
import pytest

from rewardlab.cli.align import HackingStop, _hacking_watch
from rewardlab.align.config import NFTConfig
from rewardlab.eval.hacking import HackingMonitor, eval_palette_drift, palette_drift, read_log, scan


def log(reward, gold=None, diversity=None, trained_gold=None):
    rows = []
    for e, r in enumerate(reward, 1):
        row = {"epoch": e, "reward_mean": float(r), "score/shapeclip": float(r)}
        if gold is not None:
            row["score/shapeworld"] = float(gold[e - 1])
        row["diversity"] = float(diversity[e - 1]) if diversity is not None else 0.3
        rows.append(row)
    return rows


def test_gold_falling_while_the_reward_rises_fires_early():
    rng = np.random.default_rng(0)
    n = 40
    reward = np.linspace(17, 20, n) + rng.normal(0, 0.05, n)
    gold = np.r_[np.full(15, 0.83), 0.83 - 0.006 * np.arange(1, n - 14)] + rng.normal(0, 0.01, n)
    alarms = scan(log(reward, gold), trained=["score/shapeclip"])
    assert [a.kind for a in alarms] == ["gold_falls"] and alarms[0].signal == "score/shapeworld"
    a = alarms[0]
    assert 15 < a.epoch < 30
    assert a.gold_best - a.gold_now >= 0.02
    assert 0.83 - gold[:a.epoch].min() < 0.05 + 0.02  # it fired before the gold had lost 0.05 (noise allowed)


@pytest.mark.parametrize("case", ["both_rise", "noise_only", "reward_falls_too"])
def test_no_false_alarm(case):
    rng = np.random.default_rng(1)
    n = 60
    if case == "both_rise":
        reward, gold = np.linspace(17, 20, n), np.linspace(0.8, 0.9, n) + rng.normal(0, 0.01, n)
    elif case == "noise_only":
        reward, gold = 17 + rng.normal(0, 0.1, n), 0.83 + rng.normal(0, 0.01, n)
    else:
        reward, gold = np.linspace(20, 17, n), np.linspace(0.9, 0.7, n)
    assert scan(log(reward, gold), trained=["score/shapeclip"]) == []


def test_diversity_collapse_and_trained_rewards_are_not_gold():
    n = 30
    div = np.r_[np.full(10, 0.3), np.linspace(0.3, 0.05, n - 10)]
    alarms = scan(log(np.linspace(1, 2, n), None, div), trained=["score/shapeclip"])
    assert [a.kind for a in alarms] == ["diversity_collapse"]
    # without saying which score is trained, the proxy is gold to itself and never "falls while rising"
    assert [a.kind for a in scan(log(np.linspace(1, 2, n), None, div))] == ["diversity_collapse"]


def test_each_alarm_fires_once_and_eval_lines_are_skipped():
    mon = HackingMonitor(trained=["score/shapeclip"])
    rows = [{"epoch": 0, "eval/overall": 0.8}] + log(np.linspace(1, 3, 40), np.linspace(0.9, 0.6, 40))
    fired = [a for r in rows for a in mon.update(r)]
    assert len(fired) == 1


def test_train_watch_stops_and_resumes_with_history(tmp_path):
    cfg = NFTConfig()
    cfg.reward.names, cfg.reward.monitors = ["shapeclip"], ["shapeworld"]
    rows = log(np.linspace(17, 20, 30), np.r_[np.full(10, 0.83), np.linspace(0.83, 0.6, 20)])
    watch = _hacking_watch(cfg, tmp_path, stop=True)
    with pytest.raises(HackingStop, match="score/shapeworld"):
        for r in rows:
            watch(r["epoch"], {k: v for k, v in r.items() if k != "epoch"})
    stopped_at = r["epoch"]
    # a resumed run reads the log it had and raises the same alarm no sooner and no later
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:stopped_at - 3]))
    assert len(read_log(tmp_path)) == stopped_at - 3
    watch = _hacking_watch(cfg, tmp_path, stop=True)
    for r in rows[stopped_at - 3:stopped_at - 1]:
        watch(r["epoch"], {k: v for k, v in r.items() if k != "epoch"})
    with pytest.raises(HackingStop):
        r = rows[stopped_at - 1]
        watch(r["epoch"], {k: v for k, v in r.items() if k != "epoch"})


def test_epoch_noise_rarely_rings_and_a_real_slide_does():
    """Gold with the noise of a fresh prompt draw each epoch (σ = 0.06, as 32-sample epochs
    give): without a trend the monitor stays quiet in most runs; with a slide it fires."""
    n, quiet, caught = 40, 0, []
    reward = np.linspace(17, 19, n)
    for seed in range(50):
        noise = np.random.default_rng(seed).normal(0, 0.06, n)
        quiet += scan(log(reward, 0.85 + noise), trained=["score/shapeclip"]) == []
        alarms = scan(log(reward, 0.85 + noise - np.r_[np.zeros(15), np.linspace(0, 0.4, n - 15)]),
                      trained=["score/shapeclip"])
        caught.append(alarms[0].epoch if alarms else None)
    assert quiet >= 40  # ≤ 20% false alarms over 40 noisy epochs
    assert sum(c is not None and c > 15 for c in caught) >= 45


def palettes(n, start_drift=None, seed=0):
    """Hue fractions per epoch: four colours in equal shares, each epoch a fresh prompt draw
    (Dirichlet noise: single epochs differ by ~0.1 total variation, as the shipped ShapeWorld
    model's do); from ``start_drift`` on, red and yellow fade into blue (0.01 a row, up to 0.3
    of the pixels) as colours collapsed in an unanchored run."""
    rng = np.random.default_rng(seed)
    rows = []
    for e in range(n):
        base = np.zeros(12)
        base[[0, 2, 4, 8]] = 0.25
        if start_drift is not None and e >= start_drift:
            shift = min(0.3, 0.01 * (e - start_drift + 1))
            base[[0, 2]] -= shift / 2
            base[8] += shift
        rows.append([round(v, 4) for v in rng.dirichlet(100 * base + 1e-3)])
    return rows


def test_palette_drift_fires_on_a_shared_colour_shift_not_on_prompt_noise():
    n, quiet = 60, 0
    for seed in range(50):
        rows = log(np.linspace(1, 2, n))
        for row, p in zip(rows, palettes(n, seed=seed)):
            row["palette"] = p
        quiet += scan(rows) == []
    assert quiet >= 48  # stationary palettes: at most 2 of 50 noisy 60-epoch runs ring
    rows = log(np.linspace(1, 2, n))
    for row, p in zip(rows, palettes(n, start_drift=10)):
        row["palette"] = p
    alarms = scan(rows)
    assert [a.kind for a in alarms] == ["palette_drift"]
    assert 25 < alarms[0].epoch < 50 and alarms[0].message.split(": ", 1)[1].startswith("the palette moved")
    assert "red" in alarms[0].message and "blue" in alarms[0].message
    curve = palette_drift(rows)
    assert curve[:9] == [None] * 9 and curve[9] == 0  # the first window (10 rows) is the reference
    assert curve[alarms[0].epoch - 1] >= 0.2 > max(curve[9:alarms[0].epoch - 1])


def test_rows_without_a_palette_never_ring_it_and_drift_0_turns_it_off():
    rows = log(np.linspace(1, 2, 40))
    for row, p in zip(rows, palettes(40, start_drift=0)):
        row["palette"] = p
    assert [a.kind for a in scan(rows)] == ["palette_drift"]  # the control: this log rings
    assert scan(rows, drift=0) == []
    for i, row in enumerate(rows):
        if i % 3 == 0:
            row["palette"] = None  # a batch with nothing coloured: every window has one
    assert scan(rows) == []


def test_evaluation_palettes_compare_pair_for_pair_with_the_first():
    """Evaluations draw the same prompts and seeds, so there is no prompt noise to average
    away: each is held against the first (epoch 0's) and rings once it has moved 0.2."""
    even = [0.25 if h in (0, 2, 4, 8) else 0.0 for h in range(12)]
    moved = [0.25 - 0.12 if h in (0, 2) else 0.25 + 0.24 if h == 8 else v for h, v in enumerate(even)]  # TV 0.24
    rows = [{"epoch": 0, "eval/overall": 0.8, "eval_palette": even}] + log(np.linspace(1, 2, 20))
    rows[10]["eval_palette"] = even  # epoch 10: unchanged
    rows[20]["eval_palette"] = moved  # epoch 20
    alarms = scan(rows)
    assert [(a.kind, a.signal, a.epoch) for a in alarms] == [("palette_drift", "eval_palette", 20)]
    assert "0.24" in alarms[0].message and "blue 0.25 → 0.49" in alarms[0].message
    assert scan(rows, drift=0) == []
    rows[10]["eval_palette"] = moved
    assert [a.epoch for a in scan(rows)] == [10]
    assert scan(rows[1:]) == []  # without epoch 0, epoch 10's evaluation is the reference: no move since


def test_train_watch_reads_the_epoch_0_evaluation(tmp_path):
    cfg = NFTConfig()
    even = [0.25 if h in (0, 2, 4, 8) else 0.0 for h in range(12)]
    blue = [1.0 if h == 8 else 0.0 for h in range(12)]
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"epoch": 0, "eval/overall": 0.8, "eval_palette": even}) + "\n")
    watch = _hacking_watch(cfg, tmp_path, stop=True, palette_drift=0.15)
    watch(1, {"reward_mean": 0.5})
    assert json.loads((tmp_path / "monitor.json").read_text()) == {"palette_drift": 0.15}  # for `rewardlab report`
    with pytest.raises(HackingStop, match="evaluation's fixed prompts"):
        watch(2, {"reward_mean": 0.5, "eval_palette": blue})


def test_report_draws_and_scans_with_the_runs_own_palette_threshold(tmp_path):
    """`rewardlab report` holds the evaluation palettes to the threshold the run was trained
    with (monitor.json), and eval_palette_drift is the curve it draws."""
    from rewardlab.eval.report import write_report

    even = [0.25 if h in (0, 2, 4, 8) else 0.0 for h in range(12)]
    moved = [0.25 - 0.12 if h in (0, 2) else 0.25 + 0.24 if h == 8 else v for h, v in enumerate(even)]  # TV 0.24
    rows = [{"epoch": 0, "eval/overall": 0.8, "eval_palette": even}] + log(np.linspace(1, 2, 20))
    rows[10]["eval_palette"], rows[20]["eval_palette"] = even, moved
    assert [(e, round(d, 3)) for e, d in eval_palette_drift(rows)] == [(0, 0.0), (10, 0.0), (20, 0.24)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert "palette moved 0.24" in write_report(tmp_path).read_text()  # no monitor.json: the default 0.2
    (tmp_path / "monitor.json").write_text(json.dumps({"palette_drift": 0.3}))
    assert "palette moved" not in write_report(tmp_path).read_text()
    for bad in ('{"palette_drift": NaN}', '{"palette_drift": -1}', '{"palette_drift": true}', '[0.3]', '{'):
        (tmp_path / "monitor.json").write_text(bad)  # unreadable or out of range: the default threshold
        assert "palette moved 0.24" in write_report(tmp_path).read_text()
