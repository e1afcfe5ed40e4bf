"""weaver sweep on the tiny model: trials are run folders, best.yaml loads, pruning stops a child, a killed
sweep resumes without redoing finished trials."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from weaver.config import load_config
from weaver.errors import ConfigError
from weaver.tuning import sweep as sw

from .conftest import write_jsonl

optuna = pytest.importorskip("optuna")


@pytest.fixture
def setup(tiny_model_dir, tmp_path):
    data = write_jsonl(tmp_path / "train.jsonl", 40)
    cfg = tmp_path / "base.yaml"
    cfg.write_text(yaml.safe_dump({
        "model": {"name": str(tiny_model_dir)},
        "data": {"train": str(data), "split": [0.75, 0.25, 0.0], "max_seq_len": 64},
        "train": {"max_steps": 4, "batch_size": 4, "eval_every": 2, "save_every": 2, "logging": [],
                  "precision": "fp32", "out_dir": str(tmp_path / "unused")},
    }))
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"train.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
                                     "train.lora_r": {"type": "categorical", "choices": [4, 8]}}))
    return cfg, space, tmp_path / "sweep"


def _cli(cfg, space, out, trials):
    return [sys.executable, "-m", "weaver.cli", "sweep", str(cfg), "--trials", str(trials), "--space", str(space),
            "--budget-min", "2", "--out", str(out)]


@pytest.mark.slow
def test_sweep_writes_table_best_config_and_resumes_after_kill(setup):
    cfg, space, out = setup
    first = subprocess.Popen(_cli(cfg, space, out, 2), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    deadline = time.monotonic() + 240
    while not (out / "trials" / "trial-001" / "metrics.jsonl").exists():  # trial 0 done, trial 1 training
        assert first.poll() is None and time.monotonic() < deadline, "the sweep ended or stalled early"
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    done_before = (out / "trials" / "trial-000" / "run.json").stat().st_mtime
    again = subprocess.run(_cli(cfg, space, out, 2), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    study = optuna.load_study(study_name="weaver-sweep", storage=f"sqlite:///{out / 'sweep.db'}")
    states = [t.state.name for t in study.trials]
    # the interrupted trial is marked failed and retried with its values (the pruner waits for 2 trials)
    assert states == ["COMPLETE", "FAIL", "COMPLETE"]
    retry = next(t for t in study.trials if t.user_attrs.get("retry_of") == 1)
    assert retry.params == study.trials[1].params and retry.state.name == "COMPLETE"
    assert (out / "trials" / "trial-000" / "run.json").stat().st_mtime == done_before  # not redone
    best = load_config(out / "best.yaml")
    assert best.train.lr == pytest.approx(study.best_trial.params["train.lr"])
    assert best.train.lora_r == study.best_trial.params["train.lora_r"]
    table = (out / "trials.md").read_text()
    assert "train.lr" in table and table.count("complete") == 2 and "fail" in table
    assert (out / "sweep.png").stat().st_size > 0 and (out / "importance.png").stat().st_size > 0
    assert "best: trial" in again.stdout


def test_pruned_trial_stops_its_child(setup, tmp_path):
    cfg, _, _ = setup

    class PruneAtOnce:
        reports: list = []

        def report(self, value, step):
            self.reports.append((step, value))

        def should_prune(self):
            return True

    settings = sw.SweepSettings(config=str(cfg), out=str(tmp_path / "s"), overrides=("--train.max_steps", "400"))
    trial = PruneAtOnce()
    outcome = sw._run_trial(trial, settings, {}, tmp_path / "s" / "t", deadline=None)
    assert outcome["killed"] == "pruned" and trial.reports and trial.reports[0][0] == 2
    assert not (tmp_path / "s" / "t" / "run.json").exists()  # stopped long before its 400 steps


def test_space_errors_name_the_entry(tmp_path):
    with pytest.raises(ConfigError, match="train.lrr is not a config key"):
        sw.check_space({"train.lrr": {"type": "float", "low": 1, "high": 2}}, "space.yaml")
    with pytest.raises(ConfigError, match="low must be positive"):
        sw.check_space({"train.lr": {"type": "float", "low": 0, "high": 1, "log": True}}, "space.yaml")
    with pytest.raises(ConfigError, match="choices"):
        sw.check_space({"train.lora_r": {"type": "categorical", "choices": []}}, "space.yaml")
    space = sw.default_space("lora", n_layers=30)
    assert space["train.top_layers"]["choices"] == [10, 15, 30] and "train.lora_r" in space
    assert "train.lora_r" not in sw.default_space("full") and "train.num_virtual_tokens" in sw.default_space("prefix")
