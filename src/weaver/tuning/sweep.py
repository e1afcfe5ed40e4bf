"""Hyper-parameter search over `weaver tune` runs with Optuna (TPE sampler, median pruner, SQLite storage).

    weaver sweep configs/dialogsum-smollm2.yaml --trials 6 --budget-min 2 --out sweeps/dialogsum
    weaver sweep my.yaml --trials 20 --space space.yaml --sweep-budget-min 60 --metric rougeL

Each trial is a normal run folder (`OUT/trials/trial-000`, ...) made by `weaver tune CONFIG` in a child
process with the trial's values as `--section.key value` overrides and `--train.max_minutes` set to the
per-trial budget (the loop stops cleanly there; a child that overruns it by half is killed). While a trial
trains, its validations (`metrics.jsonl`) are reported to the pruner, and a trial whose dev metric is worse
than the median of earlier trials at the same step is stopped. The study lives in `OUT/sweep.db`, so a
killed sweep continues where it stopped: trials that were running are retried with the same values.
Outputs: `trials.md` / `trials.csv` (trial, values, dev metric, minutes, state), `best.yaml` (the config
with the best trial's values, ready for `weaver tune`), `sweep.png` (metric per trial) and
`importance.png` (parameter importance, when enough trials finished).

The space is YAML, one entry per config key:

    train.lr: {type: float, low: 1.0e-5, high: 1.0e-3, log: true}
    train.lora_r: {type: categorical, choices: [4, 8, 16, 32]}
    train.epochs: {type: int, low: 1, high: 3}

Without `--space` a default space for the config's method is used (`default_space`).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from weaver.config import load_config, read_yaml, to_dict
from weaver.errors import ConfigError, WeaverError
from weaver.files import atomic_write_text

log = logging.getLogger(__name__)
LORA_LIKE = ("lora", "adalora")


def default_space(method: str, n_layers: int | None = None) -> dict[str, dict]:
    """The default search space for a method (learning rate range by method; structure by method)."""
    lr = {"full": (1e-5, 3e-4), "freeze": (1e-5, 3e-4), "ia3": (1e-3, 3e-2), "prefix": (1e-3, 3e-2),
          "adapter": (1e-4, 3e-3)}.get(method, (5e-5, 1e-3))
    space: dict[str, dict] = {
        "train.lr": {"type": "float", "low": lr[0], "high": lr[1], "log": True},
        "train.batch_size": {"type": "categorical", "choices": [4, 8, 16]},
        "train.epochs": {"type": "int", "low": 1, "high": 3},
        "train.weight_decay": {"type": "categorical", "choices": [0.0, 0.01, 0.1]},
    }
    if method in LORA_LIKE:
        space["train.lora_r"] = {"type": "categorical", "choices": [4, 8, 16, 32]}
        space["train.lora_alpha_ratio"] = {"type": "categorical", "choices": [1, 2, 4]}
        space["train.lora_dropout"] = {"type": "categorical", "choices": [0.0, 0.05, 0.1]}
    if method == "adapter":
        space["train.adapter_size"] = {"type": "categorical", "choices": [8, 16, 32, 64]}
    if method == "prefix":
        space["train.num_virtual_tokens"] = {"type": "categorical", "choices": [8, 16, 32]}
    if method in (*LORA_LIKE, "adapter", "freeze") and n_layers:
        tops = sorted({max(1, n_layers // 3), max(1, n_layers // 2), n_layers})
        space["train.top_layers"] = {"type": "categorical", "choices": tops}
    return space


def check_space(space: Any, where: str) -> dict[str, dict]:
    """Validate a search space; one sentence naming the entry on a mistake.

    Raises:
        ConfigError: not a mapping, an unknown config key, a bad type or range.
    """
    from weaver.config import RunConfig

    if not isinstance(space, dict) or not space:
        raise ConfigError(f"{where}: the search space must be a mapping of section.key to a range")
    known = to_dict(RunConfig())
    for key, spec in space.items():
        section, _, name = str(key).partition(".")
        if key != "train.lora_alpha_ratio" and (section not in known or name not in known[section]):
            raise ConfigError(f"{where}: {key} is not a config key (write section.key, e.g. train.lr)")
        if not isinstance(spec, dict) or spec.get("type") not in ("float", "int", "categorical"):
            raise ConfigError(f"{where}: {key} needs type: float | int | categorical")
        if spec["type"] == "categorical":
            if not isinstance(spec.get("choices"), list) or not spec["choices"]:
                raise ConfigError(f"{where}: {key} needs a non-empty list of choices")
        else:
            low, high = spec.get("low"), spec.get("high")
            if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (low, high)) or low > high:
                raise ConfigError(f"{where}: {key} needs numbers low <= high")
            if spec.get("log") and low <= 0:
                raise ConfigError(f"{where}: {key} has log: true, so low must be positive")
    return space


def suggest(trial, space: dict[str, dict]) -> dict[str, Any]:
    """The trial's values for every entry of the space."""
    values = {}
    for key, spec in space.items():
        if spec["type"] == "float":
            values[key] = trial.suggest_float(key, spec["low"], spec["high"], log=bool(spec.get("log")))
        elif spec["type"] == "int":
            values[key] = trial.suggest_int(key, int(spec["low"]), int(spec["high"]), log=bool(spec.get("log")))
        else:
            values[key] = trial.suggest_categorical(key, spec["choices"])
    return values


def to_overrides(values: dict[str, Any], base_cfg) -> dict[str, Any]:
    """Config overrides for a trial (lora_alpha_ratio becomes lora_alpha = ratio x rank)."""
    out = {k: v for k, v in values.items() if k != "train.lora_alpha_ratio"}
    if "train.lora_alpha_ratio" in values:
        rank = out.get("train.lora_r", base_cfg.train.lora_r)
        out["train.lora_alpha"] = int(values["train.lora_alpha_ratio"] * rank)
    return out


@dataclass
class SweepSettings:
    """What `weaver sweep` was asked for."""

    config: str
    out: str
    trials: int = 6
    budget_min: float = 2.0
    sweep_budget_min: float | None = None
    space: str | None = None
    metric: str = "dev_loss"
    seed: int = 0
    overrides: tuple[str, ...] = ()


def _n_layers(cfg) -> int | None:
    try:
        from weaver.models.loading import resolve

        config = json.loads((Path(resolve(cfg.model.name).base_dir) / "config.json").read_text())
        return int(config.get("num_hidden_layers") or 0) or None
    except (WeaverError, OSError, ValueError):
        return None


def _validations(run_dir: Path, metric: str, seen: int) -> tuple[list[tuple[int, float]], int]:
    """New (step, value) validations in a trial's metrics.jsonl since line `seen`."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return [], seen
    lines = path.read_text(encoding="utf-8").splitlines()
    out = []
    for line in lines[seen:]:
        try:
            event = json.loads(line)
        except ValueError:
            return out, seen  # a line being written: read it next time
        seen += 1
        if isinstance(event.get(metric), (int, float)):
            out.append((int(event["step"]), float(event[metric])))
    return out, seen


def _run_trial(trial, s: SweepSettings, overrides: dict[str, Any], run_dir: Path, deadline: float | None) -> dict:
    """Train one trial in a child process, reporting validations; returns its outcome."""
    args = [sys.executable, "-m", "weaver.cli", "tune", s.config, *s.overrides]
    for key, value in {**overrides, "train.out_dir": str(run_dir), "train.max_minutes": s.budget_min,
                       "train.metric": s.metric}.items():
        args += [f"--{key}", json.dumps(value) if isinstance(value, (list, dict)) else str(value)]
    run_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    hard = t0 + s.budget_min * 90 + 60  # the loop stops at the budget; this catches a child that does not
    with open(run_dir / "sweep-trial.log", "ab") as logf:
        child = subprocess.Popen(args, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
        seen, pruned, killed = 0, False, None
        while child.poll() is None:
            time.sleep(0.5)
            points, seen = _validations(run_dir, s.metric, seen)
            for step, value in points:
                trial.report(value, step)
                if trial.should_prune():
                    pruned = True
            now = time.monotonic()
            if pruned or now > hard or (deadline is not None and now > deadline):
                killed = "pruned" if pruned else "budget"
                os.killpg(child.pid, signal.SIGTERM)
                try:
                    child.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(child.pid, signal.SIGKILL)
                    child.wait()
                break
        _, seen = _validations(run_dir, s.metric, seen)
    facts = {}
    if (run_dir / "run.json").exists():
        facts = json.loads((run_dir / "run.json").read_text())
    best = (facts.get("best_metric") or {}).get("value")
    return {"returncode": child.returncode, "killed": killed, "best": best, "minutes": (time.monotonic() - t0) / 60}


def sweep(s: SweepSettings) -> dict:
    """Run (or continue) a sweep; write the table, best.yaml and plots into s.out.

    Returns:
        {"best": {"trial", "value", "params"} or None, "trials": [rows], "out": path}
    Raises:
        ConfigError: bad config, space or settings. WeaverError: optuna is not installed.
    """
    try:
        import optuna
    except ImportError:
        raise WeaverError("weaver sweep needs optuna: pip install 'weaver[sweep]'") from None
    if s.trials < 1:
        raise ConfigError(f"--trials must be at least 1, got {s.trials}")
    if not s.budget_min > 0 or (s.sweep_budget_min is not None and not s.sweep_budget_min > 0):
        raise ConfigError("--budget-min and --sweep-budget-min must be positive minutes")
    base = load_config(s.config, list(s.overrides))
    space = check_space(read_yaml(Path(s.space), "--space") if s.space else
                        default_space(base.train.method, _n_layers(base)), s.space or "the default space")
    out = Path(s.out)
    out.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    direction = "maximize" if s.metric == "rougeL" else "minimize"
    study = optuna.create_study(
        study_name="weaver-sweep", storage=f"sqlite:///{out / 'sweep.db'}", load_if_exists=True,
        direction=direction, sampler=optuna.samplers.TPESampler(seed=s.seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0),
    )
    if study.user_attrs.get("metric", s.metric) != s.metric:
        raise ConfigError(f"{out} holds a sweep on {study.user_attrs['metric']}; use another --out for {s.metric}")
    study.set_user_attr("metric", s.metric)
    _retry_interrupted(study)
    deadline = time.monotonic() + s.sweep_budget_min * 60 if s.sweep_budget_min else None
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    failed = 0
    while sum(t.state in states for t in study.trials) < s.trials:
        if failed >= 3:
            error = study.trials[-1].user_attrs.get("error") or "see its sweep-trial.log"
            raise WeaverError(f"3 trials in a row failed; the last ({study.trials[-1].user_attrs.get('run_dir')}): "
                              f"{error}")
        if deadline is not None and time.monotonic() > deadline:
            log.warning("the sweep budget ran out")
            break
        trial = study.ask()
        values = suggest(trial, space)
        run_dir = out / "trials" / f"trial-{trial.number:03d}"
        trial.set_user_attr("run_dir", str(run_dir))
        outcome = _run_trial(trial, s, to_overrides(values, base), run_dir, deadline)
        trial.set_user_attr("minutes", round(outcome["minutes"], 2))
        if outcome["killed"] == "pruned":
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        elif outcome["best"] is None or not math.isfinite(outcome["best"]):
            trial.set_user_attr("error", _last_error(run_dir))
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            failed += 1
            if outcome["killed"] == "budget" and deadline is not None and time.monotonic() > deadline:
                failed = 0  # stopped by the sweep budget, not broken: the loop ends on the budget
        else:
            study.tell(trial, outcome["best"])
            failed = 0
        print(f"trial {trial.number}: {study.trials[trial.number].state.name.lower()} "
              f"{outcome['best'] if outcome['best'] is not None else ''} ({outcome['minutes']:.1f} min)", flush=True)
    return write_outputs(study, base, out, s.metric)


def _retry_interrupted(study) -> None:
    """Trials left running by a killed sweep: marked failed and queued again with the same values."""
    import optuna

    for t in study.trials:
        if t.state == optuna.trial.TrialState.RUNNING:
            study.tell(t.number, state=optuna.trial.TrialState.FAIL)
            if t.params:
                study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})


def _last_error(run_dir: Path) -> str:
    log_file = run_dir / "sweep-trial.log"
    if not log_file.exists():
        return ""
    lines = [line for line in log_file.read_text(errors="replace").splitlines() if line.startswith("error:")]
    return lines[-1][:300] if lines else ""


def write_outputs(study, base, out: Path, metric: str) -> dict:
    """trials.md, trials.csv, best.yaml and the plots; returns the summary."""
    import optuna

    rows = []
    for t in study.trials:
        rows.append({"trial": t.number, "state": t.state.name.lower(), metric: t.value,
                     "minutes": t.user_attrs.get("minutes"), **t.params, "run_dir": t.user_attrs.get("run_dir", "")})
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(out / "trials.csv.tmp", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(out / "trials.csv.tmp", out / "trials.csv")
    shown = [k for k in keys if k != "run_dir"]
    md = ["| " + " | ".join(shown) + " |", "|" + "---|" * len(shown)]
    md += ["| " + " | ".join(_fmt(r.get(k)) for k in shown) + " |" for r in rows]
    atomic_write_text(out / "trials.md", "\n".join(md) + "\n")
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    best = None
    if done:
        bt = study.best_trial
        best = {"trial": bt.number, "value": bt.value, "params": bt.params}
        cfg = to_dict(base)
        for key, value in to_overrides(bt.params, base).items():
            section, name = key.split(".", 1)
            cfg[section][name] = value
        cfg["train"]["out_dir"] = str(out / "best-run")
        header = f"# weaver tune {out / 'best.yaml'}\n# best of {len(study.trials)} trials ({metric} {bt.value:.4g})\n"
        atomic_write_text(out / "best.yaml", header + yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True))
    _plots(study, done, out, metric)
    return {"best": best, "trials": rows, "out": str(out)}


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)


def _plots(study, done, out: Path, metric: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    xs = [t.number for t in done]
    ax.plot(xs, [t.value for t in done], "o", label="finished")
    for t in study.trials:
        if t.state.name == "PRUNED" and t.intermediate_values:
            step = max(t.intermediate_values)
            ax.plot([t.number], [t.intermediate_values[step]], "x", color="grey")
    ax.set_xlabel("trial")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per trial (x: pruned, last validation)")
    fig.tight_layout()
    fig.savefig(out / "sweep.png", dpi=100)
    plt.close(fig)
    if len(done) < 2:
        return
    import optuna

    try:
        importance = optuna.importance.get_param_importances(study)
    except (RuntimeError, ValueError) as exc:  # e.g. every finished trial has the same values
        log.warning("parameter importance not computed: %s", exc)
        return
    fig, ax = plt.subplots(figsize=(6, 3.5))
    names = list(importance)[::-1]
    ax.barh(names, [importance[n] for n in names])
    ax.set_title("parameter importance")
    fig.tight_layout()
    fig.savefig(out / "importance.png", dpi=100)
    plt.close(fig)
