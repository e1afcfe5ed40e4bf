"""weaver runs / runs compare on real run folders of the tiny model: status, metrics, config differences, HTML."""

from __future__ import annotations

import json
import shutil

import pytest

from weaver.cli import main
from weaver.config import load_config
from weaver.errors import WeaverError
from weaver.tuning import registry
from weaver.tuning.run import tune

from .conftest import tiny_overrides, write_jsonl


@pytest.fixture(scope="module")
def runs_root(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("registry")
    data = write_jsonl(root / "train.jsonl", 40)
    runs = root / "runs"
    tune(load_config(None, tiny_overrides(tiny_model_dir, data, runs / "a", max_steps=4, eval_every=2)))
    tune(load_config(None, tiny_overrides(tiny_model_dir, data, runs / "b", max_steps=6, eval_every=3, lr=1e-3)))
    killed = runs / "killed"
    shutil.copytree(runs / "b", killed)
    (killed / "run.json").unlink()  # what a SIGKILL before the end leaves: checkpoints, no run.json
    # an evaluation report next to run a (the shape weaver eval writes)
    (runs / "a" / "eval").mkdir()
    (runs / "a" / "eval" / "report.json").write_text(json.dumps(
        {"metrics": {"rougeL": {"label": "ROUGE-L", "base": 10.0, "tuned": 14.5, "delta": 4.5, "low": 1.25,
                                "high": 7.5, "verdict": "better"}}}))
    (runs / "notes").mkdir()  # not a run: ignored
    return runs


def test_table_lists_every_run_with_status_and_metrics(runs_root):
    rows = {r.row()["name"]: r.row() for r in registry.find_runs(runs_root)}
    assert set(rows) == {"a", "b", "killed"}
    a, b, killed = rows["a"], rows["b"], rows["killed"]
    assert a["status"] == b["status"] == "finished" and killed["status"] == "resumable"
    assert a["steps"] == 4 and b["steps"] == 6 and a["method"] == "lora"
    losses = [json.loads(line)["dev_loss"] for line in (runs_root / "b" / "metrics.jsonl").read_text().splitlines()
              if "dev_loss" in json.loads(line)]
    assert b["best_dev_loss"] == round(min(losses), 4)
    assert a["rougeL"] == 14.5 and a["rougeL_ci"] == [1.25, 7.5] and b["rougeL"] is None
    assert a["data"] == b["data"] and a["data"]  # same training file, same fingerprint
    assert a["minutes"] is not None and a["minutes"] >= 0


def test_cli_table_and_compare(runs_root, tmp_path, capsys):
    assert main(["runs", str(runs_root)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:3] == ["name", "base", "method"] and "resumable" in out
    page = tmp_path / "cmp.html"
    assert main(["runs", "compare", str(runs_root / "a"), str(runs_root / "b"), "--out", str(page), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["config"]["train.lr"] == [0.01, 0.001] and result["config"]["train.max_steps"] == [4, 6]
    assert "model.name" not in result["config"]  # equal values are not differences
    assert result["metrics"]["steps"] == [4, 6] and result["delta"]["steps"] == [2]
    text = page.read_text()
    assert "data:image/png;base64," in text and "train.lr" in text and "<script" not in text


def test_bad_paths_are_one_sentence(runs_root, tmp_path):
    with pytest.raises(WeaverError, match="not a folder"):
        registry.find_runs(tmp_path / "missing")
    with pytest.raises(WeaverError, match="not a Weaver run"):
        registry.compare([runs_root / "a", runs_root / "notes"])
    with pytest.raises(WeaverError, match="at least two"):
        registry.compare([runs_root / "a"])
