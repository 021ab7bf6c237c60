"""``rewardlab report RUN_DIR``: one self-contained HTML file (images and plots inline as
PNG data URIs, no scripts, nothing fetched) for a run folder of

* ``rewardlab train`` — its configuration, training-reward / gold / diversity / palette-drift
  curves with the hacking monitor's alarms marked, the per-tag evaluation table before and after, and
  the first and last image grids;
* ``rewardlab search`` — the search summary and the candidates ranked by score;
* ``rewardlab eval geneval`` — the per-tag table and each prompt's images.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

from .hacking import MONITOR, Alarm, HackingMonitor, eval_palette_drift, palette_drift, read_log, scan, trace_rows

STYLE = """body{font:15px/1.45 system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}th:first-child,td:first-child{text-align:left}
img.px{image-rendering:pixelated}img.plot{max-width:100%}pre{background:#f6f6f6;padding:.8em;overflow:auto;font-size:13px}
.alarm{color:#b00020;font-weight:600}.ok{color:#2b7a2b}figure{display:inline-block;margin:.4em}
figcaption{font-size:12px;color:#555;text-align:center}"""


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    from ..utils import atomic_path

    run = Path(run_dir)
    if (run / "metrics.jsonl").is_file():
        title, body = f"Training run {run.name}", _train(run)
    elif (run / "trace.json").is_file():
        title, body = f"Search {run.name}", _search(run)
    elif (run / "results.jsonl").is_file():
        title, body = f"GenEval {run.name}", _geneval(run)
    else:
        raise ValueError(f"{run}: not a run folder (metrics.jsonl from `train`, trace.json from `search`, or "
                         f"results.jsonl from `eval geneval`)")
    page = (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{_e(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{_e(title)}</h1>{body}</body></html>\n")
    out = Path(out) if out else run / "report.html"
    with atomic_path(out, sync=False) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return out


def _train(run: Path) -> str:
    rows = read_log(run)
    config = (run / "config.yaml").read_text(encoding="utf-8") if (run / "config.yaml").is_file() else ""
    trained = [f"score/{n}" for n in _trained_rewards(config)]
    drift = palette_threshold(run)
    alarms = scan(rows, trained=trained, drift=drift)
    parts = ["<h2>Hacking monitor</h2>", _alarms(alarms), "<h2>Curves</h2>",
             _img(curves_png(rows, alarms, trained, drift=drift), "curves", px=False)]
    evals = [r for r in rows if any(k.startswith("eval/") for k in r)]
    if evals:
        parts += ["<h2>Evaluation, before and after</h2>", _eval_table(evals[0], evals[-1])]
    grids = sorted((run / "grids").glob("epoch_*.png")) if (run / "grids").is_dir() else []
    if grids:
        shown = [grids[0], grids[-1]] if len(grids) > 1 else grids
        parts += ["<h2>Samples</h2>"] + [_figure(g.read_bytes(), g.stem.replace("_", " ")) for g in shown]
    settings = "\n".join(ln for ln in config.splitlines() if not ln.lstrip().startswith("#"))
    parts += ["<h2>Configuration</h2>", f"<details open><summary>config.yaml</summary><pre>"
              f"{_e(settings or '(no config.yaml)')}</pre></details>"]
    return "\n".join(parts)


def palette_threshold(run: Path) -> float:
    """The palette alarm's threshold the run was trained with (``rewardlab train
    --palette-drift``, kept in ``monitor.json``), else the monitor's default."""
    try:
        drift = json.loads((run / MONITOR).read_text(encoding="utf-8"))["palette_drift"]
    except (OSError, ValueError, KeyError, TypeError):
        return HackingMonitor.drift
    ok = isinstance(drift, (int, float)) and not isinstance(drift, bool) and 0 <= drift <= 1  # NaN fails too
    return float(drift) if ok else HackingMonitor.drift


def _trained_rewards(config_yaml: str) -> list[str]:
    import yaml

    try:
        cfg = yaml.safe_load(config_yaml) or {}
    except yaml.YAMLError:
        return []
    return list(cfg.get("reward.names") or (cfg.get("reward") or {}).get("names") or [])  # flat or nested YAML


def _alarms(alarms: list[Alarm]) -> str:
    if not alarms:
        return ("<p class='ok'>No alarm: no gold reward fell while the training reward rose, diversity and "
                "palette held.</p>")
    return "<ul>" + "".join(f"<li class='alarm'>{_e(a.message)}</li>" for a in alarms) + "</ul>"


def curves_png(rows: list[dict], alarms: list[Alarm], trained: list[str], x: str = "epoch",
               drift: float = HackingMonitor.drift) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [r for r in rows if "reward_mean" in r]
    train = [{**r, "palette drift": d} for r, d in zip(train, palette_drift(train))]
    epochs = [r["epoch"] for r in train]
    gold = sorted({k for r in train for k in r if k.startswith("score/") and k not in trained})
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    panels = [("optimised reward", ["reward_mean"]), ("gold (monitors)", gold),
              ("diversity, palette drift", ["diversity", "palette drift"])]
    for ax, (name, keys) in zip(axes, panels):
        keys = [k for k in keys if any(r.get(k) is not None for r in train)]
        for k in keys:
            ax.plot(epochs, [r.get(k) if r.get(k) is not None else float("nan") for r in train], label=k)
        if "palette drift" in name and (evals := eval_palette_drift(rows)):
            ax.plot(*zip(*evals), "o-", ms=3, label="eval palette drift")
            keys = keys + ["eval palette drift"]
        if drift and any("palette" in k for k in keys):
            ax.axhline(drift, color="#999", ls=":", lw=1, label="palette alarm")
        for a in alarms if keys else []:
            ax.axvline(a.epoch, color="#b00020", ls="--", lw=1)
        ax.set_title(name)
        ax.set_xlabel(x)
        if keys:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "not logged" + ("\n(monitors: reward.monitors=[...] or --monitor)" if "gold" in name
                                              else ""), ha="center", va="center", transform=ax.transAxes, color="#777")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def _eval_table(before: dict, after: dict) -> str:
    keys = [k for k in before if k.startswith("eval/")]
    rows = "".join(f"<tr><td>{_e(k[5:])}</td><td>{before[k]:.3f}</td><td>{after.get(k, float('nan')):.3f}</td>"
                   f"<td>{after.get(k, float('nan')) - before[k]:+.3f}</td></tr>" for k in keys)
    unit = "epoch" if "epoch" in before else "step"  # a reward-model run (train rm) logs steps
    return (f"<table class='eval'><tr><th>tag</th><th>{unit} {_e(before[unit])}</th><th>{unit} {_e(after[unit])}</th>"
            f"<th>change</th></tr>{rows}</table>")


def _search(run: Path) -> str:
    trace = json.loads((run / "trace.json").read_text(encoding="utf-8"))
    parts = [f"<p>method <b>{_e(trace.get('method'))}</b>: {_e(trace.get('nfe'))} of {_e(trace.get('budget_nfe'))} "
             f"network passes, {_e(trace.get('reward_calls'))} reward calls, {_e(trace.get('seconds'))} s</p>"]
    rows = trace_rows(trace)  # scoring rounds, when the search logged monitors (search --monitor)
    if rows:
        alarms = scan(rows, unit="scoring round")
        parts += ["<h2>Hacking monitor</h2>", _alarms(alarms), _img(curves_png(rows, alarms, [], "scoring round"),
                                                                    "curves", px=False)]
    for p in trace.get("prompts", []):
        parts.append(f"<h2>{_e(p['prompt'])}</h2>")
        if (run / "best.png").is_file():
            parts.append(_figure((run / "best.png").read_bytes(), f"best, score {_number(p.get('score'))}"))
        for k, c in enumerate(p.get("ranked", [])[:32]):
            path = _inside(run, c["file"])
            if path is not None:
                parts.append(_figure(path.read_bytes(), f"#{k + 1}: {_number(c.get('score'))}"))
    parts += ["<h2>Trace</h2>", f"<pre>{_e(json.dumps(trace.get('trace', []), indent=1)[:20000])}</pre>"]
    return "\n".join(parts)


def _geneval(run: Path) -> str:
    from .geneval import load_results, summarize

    results = load_results(run / "results.jsonl")
    summary = summarize(results)
    rows = "".join(f"<tr><td>{_e(t)}</td><td>{m:.3f}</td><td>{k} of {n}</td></tr>"
                   for t, (m, k, n) in summary["tags"].items())
    parts = [f"<table class='eval'><tr><th>tag</th><th>correct</th><th>images</th></tr>{rows}<tr><td><b>overall"
             f"</b></td><td><b>{summary['overall']:.3f}</b></td><td>{summary['images']}</td></tr></table>"]
    by_prompt: dict[str, list] = {}
    for r in results:
        by_prompt.setdefault(r["prompt"], []).append(r)
    for prompt, rs in list(by_prompt.items())[:48]:
        parts.append(f"<h2>{_e(prompt)}</h2>")
        for r in rs[:8]:
            path = _inside(run, r["filename"])
            if path is not None:
                parts.append(_figure(path.read_bytes(), "correct" if r.get("correct") else "wrong"))
    return "\n".join(parts)


def _inside(run: Path, name: str) -> Path | None:
    """A file a log names, only if it lies inside the run folder (a log is not trusted to point elsewhere)."""
    path = (run / name).resolve()
    return path if path.is_relative_to(run.resolve()) and path.is_file() else None


def _figure(png: bytes, caption: str) -> str:
    return f"<figure>{_img(png, caption)}<figcaption>{_e(caption)}</figcaption></figure>"


def _img(png: bytes, alt: str, px: bool = True) -> str:
    from PIL import Image

    with Image.open(io.BytesIO(png)) as im:
        w = im.width * max(1, 128 // max(im.width, 1)) if px else im.width
    data = base64.b64encode(png).decode()
    return f"<img class='{'px' if px else 'plot'}' width='{w}' alt='{_e(alt)}' src='data:image/png;base64,{data}'>"


def _number(x) -> str:
    return f"{x:.3f}" if isinstance(x, (int, float)) else "—"


def _e(x) -> str:
    return html.escape(str(x))
