"""The run registry: every run folder under a directory as one table, and runs compared side by side.

    weaver runs                       # every run under runs/
    weaver runs experiments/ --json
    weaver runs compare runs/a runs/b [runs/c ...] --out compare.html

Reads only what a run writes (`config.yaml`, `versions.json`, `run.json`, `metrics.jsonl`, `checkpoints/`,
`eval/report.json`); there is no server and no database. A run's status comes from its files: `run.json`
with a stop reason means it ended (`finished`, `stopped by budget`, `early stopped`, `diverged`); no
`run.json` but a checkpoint means it was killed and `weaver tune ... --resume` continues it (`resumable`);
neither means it died before its first checkpoint (`crashed`). `rougeL` is the tuned model's score in the
run's last `weaver eval` (`eval/report.json`) and `rougeL_ci` that report's 95% interval: of tuned - base when
the evaluation compared against the base, else of the score itself.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from weaver.config import parse_yaml
from weaver.errors import WeaverError

STATUS = {"epochs": "finished", "max_steps": "finished", "time_budget": "stopped by budget",
          "early_stopping": "early stopped", "nan": "diverged"}
COLUMNS = ["name", "base", "method", "data", "steps", "minutes", "best_dev_loss", "rougeL", "rougeL_ci", "status"]


@dataclass
class RunInfo:
    """What the registry knows of one run folder."""

    path: Path
    config: dict = field(default_factory=dict)
    facts: dict = field(default_factory=dict)
    metrics: list[dict] = field(default_factory=list)
    report: dict | None = None
    fingerprint: str | None = None
    """Fingerprint of the training split (same data -> same value)."""
    status: str = "crashed"

    @property
    def name(self) -> str:
        return self.path.name

    def best_dev_loss(self) -> float | None:
        losses = [m["dev_loss"] for m in self.metrics if _number(m.get("dev_loss"))]
        return min(losses) if losses else None

    def rouge_l(self) -> dict | None:
        """The last evaluation's ROUGE-L entry (tuned score, delta and CI), when the run was evaluated."""
        if not self.report:
            return None
        return (self.report.get("metrics") or {}).get("rougeL")

    def row(self) -> dict[str, Any]:
        """One table row (plain values; None where the run does not say)."""
        train = self.config.get("train", {})
        steps = self.facts.get("steps")
        if steps is None and self.metrics:
            steps = max((m.get("step") or 0) for m in self.metrics)
        seconds = self.facts.get("wall_time_s")
        if seconds is None and self.metrics:
            seconds = max((m.get("time_s") or 0) for m in self.metrics)
        rouge = self.rouge_l() or {}
        score = rouge.get("tuned", rouge.get("score"))
        ci = [rouge["low"], rouge["high"]] if "low" in rouge and "high" in rouge else None
        return {
            "name": self.name, "base": self.config.get("model", {}).get("name"), "method": train.get("method"),
            "data": (self.fingerprint or "")[:12] or None, "steps": steps,
            "minutes": round(seconds / 60, 2) if _number(seconds) else None,
            "best_dev_loss": _round(self.best_dev_loss()), "rougeL": _round(score), "rougeL_ci": ci,
            "status": self.status, "path": str(self.path),
        }


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _round(x: Any, digits: int = 4) -> Any:
    return round(x, digits) if _number(x) else None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _read_metrics(path: Path) -> list[dict]:
    """metrics.jsonl events; a line cut short by a kill is skipped."""
    out = []
    try:
        with path.open(encoding="utf-8") as f:
            for line in f:
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if isinstance(event, dict):
                    out.append(event)
    except OSError:
        pass
    return out


def is_run(path: Path) -> bool:
    """A folder that `weaver tune` wrote: a resolved config.yaml next to versions.json."""
    return (path / "config.yaml").is_file() and (path / "versions.json").is_file()


def read_run(path: str | Path) -> RunInfo:
    """Everything the registry shows about one run folder.

    Raises:
        WeaverError: the folder is not a Weaver run.
    """
    path = Path(path)
    if not is_run(path):
        raise WeaverError(f"{path} is not a Weaver run folder (no config.yaml and versions.json from weaver tune)")
    try:
        config = parse_yaml((path / "config.yaml").read_text(encoding="utf-8")) or {}  # bounded: no alias bombs
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        config = {}
    info = RunInfo(path=path, config=config if isinstance(config, dict) else {})
    info.facts = _read_json(path / "run.json") or {}
    info.metrics = _read_metrics(path / "metrics.jsonl")
    info.report = _read_json(path / "eval" / "report.json")
    fp = (_read_json(path / "versions.json") or {}).get("data_fingerprint")
    info.fingerprint = fp.get("train") if isinstance(fp, dict) else fp  # the training split's fingerprint
    stop = info.facts.get("stop_reason")
    if stop:
        info.status = STATUS.get(stop, stop)
    elif any((path / "checkpoints").glob("step-*")):
        info.status = "resumable"
    return info


def find_runs(root: str | Path = "runs", depth: int = 3) -> list[RunInfo]:
    """Every run folder under root (root itself included), newest first.

    Raises:
        WeaverError: root is not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise WeaverError(f"{root} is not a folder: pass the folder your runs are in (default: runs/)")
    found, frontier = [], [root]
    for _ in range(depth + 1):
        nxt = []
        for folder in frontier:
            if is_run(folder):
                found.append(folder)
                continue  # a run's own sub-folders (best/, eval/) are not runs
            nxt += sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        frontier = nxt
    found.sort(key=lambda p: (p / "config.yaml").stat().st_mtime, reverse=True)
    return [read_run(p) for p in found]


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return "[" + ", ".join(f"{v:+.2f}" for v in value) + "]"
    if isinstance(value, float):
        return f"{value:.2f}" if abs(value) >= 10 else f"{value:.4g}"
    return str(value)


def format_table(rows: list[dict], columns: list[str] = COLUMNS) -> str:
    """Rows as an aligned plain-text table."""
    grid = [columns] + [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(line[i]) for line in grid) for i in range(len(columns))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in grid]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def config_differences(runs: list[RunInfo]) -> dict[str, list[Any]]:
    """Config keys (section.key) whose values differ between the runs, with each run's value."""
    flat = [_flatten(r.config) for r in runs]
    keys = sorted(set().union(*flat))
    return {k: [f.get(k) for f in flat] for k in keys if len({json.dumps(f.get(k), default=str) for f in flat}) > 1}


def compare(paths: list[str | Path]) -> dict:
    """Config and metric differences of two or more runs.

    Returns:
        {"runs": [row, ...], "config": {key: [values]}, "metrics": {column: [values]}, "delta": {...}}
        where delta is each later run minus the first, for the numeric metrics.
    Raises:
        WeaverError: fewer than two runs, or a path that is not a run.
    """
    if len(paths) < 2:
        raise WeaverError("runs compare needs at least two run folders")
    runs = [read_run(p) for p in paths]
    rows = [r.row() for r in runs]
    metrics = {c: [row[c] for row in rows] for c in ("steps", "minutes", "best_dev_loss", "rougeL", "status")}
    delta = {c: [(v - vals[0]) if _number(v) and _number(vals[0]) else None for v in vals[1:]]
             for c, vals in metrics.items() if c != "status"}
    return {"runs": rows, "config": config_differences(runs), "metrics": metrics, "delta": delta,
            "curves": {r.name: _curves(r) for r in runs}}


def _curves(run: RunInfo) -> dict[str, list[list[float]]]:
    """(step, value) points of train_loss and dev_loss."""
    out: dict[str, list[list[float]]] = {"train_loss": [], "dev_loss": []}
    for m in run.metrics:
        for key in out:
            if _number(m.get(key)) and _number(m.get("step")):
                out[key].append([m["step"], m[key]])
    return out


def compare_text(result: dict) -> str:
    """The comparison as plain text: metrics table, then the config keys that differ."""
    names = [r["name"] for r in result["runs"]]
    lines = [format_table([{"metric": c, **dict(zip(names, vals))} for c, vals in result["metrics"].items()],
                          ["metric", *names])]
    if result["config"]:
        lines.append("")
        lines.append(format_table([{"config": k, **dict(zip(names, vals))} for k, vals in result["config"].items()],
                                  ["config", *names]))
    else:
        lines.append("\nthe configs are identical")
    return "\n".join(lines)


def _curve_png(curves: dict[str, dict]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, key in zip(axes, ("train_loss", "dev_loss")):
        for name, c in curves.items():
            if c[key]:
                xs, ys = zip(*c[key])
                ax.plot(xs, ys, marker="o" if key == "dev_loss" else None, markersize=3, label=name)
        ax.set_title(key.replace("_", " "))
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def compare_html(result: dict) -> str:
    """A self-contained page (inline CSS and PNG, escaped text): metrics, config differences, training curves."""
    names = [r["name"] for r in result["runs"]]

    def table(title: str, rows: dict[str, list]) -> str:
        head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
        body = "".join(f"<tr><th>{html.escape(k)}</th>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in vals)
                       + "</tr>" for k, vals in rows.items())
        return f"<h2>{title}</h2><table><tr><th></th>{head}</tr>{body}</table>"

    config = table("Config differences", result["config"]) if result["config"] else "<p>The configs are identical.</p>"
    png = _curve_png(result["curves"])
    return ("<!doctype html><html><head><meta charset='utf-8'><title>weaver runs compare</title><style>"
            "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
            "padding:4px 8px;text-align:left}img{max-width:100%}</style></head><body>"
            f"<h1>Runs: {html.escape(', '.join(names))}</h1>{table('Metrics', result['metrics'])}{config}"
            f"<h2>Training curves</h2><img alt='training curves' src='data:image/png;base64,{png}'></body></html>")
