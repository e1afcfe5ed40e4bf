"""train.logging: [mlflow] / [wandb] for real: a tiny run logs its config, its per-step losses and its adapter.

MLflow writes to a SQLite store under tmp (MLFLOW_TRACKING_URI) and is read back with its client; W&B runs
offline (WANDB_MODE=offline) and its transaction log (run-*.wandb, a LevelDB-style log of protobuf Records)
is read back with wandb's own protobuf classes. Both need `pip install 'weaver[track]'` (`make install`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import sys
from pathlib import Path

import pytest

from weaver.config import load_config
from weaver.errors import ConfigError
from weaver.tuning.callbacks import RunLogger
from weaver.tuning.run import tune

from .conftest import tiny_overrides


def _tune(tiny_model_dir, tiny_data, out: Path, logger: str) -> Path:
    overrides = tiny_overrides(tiny_model_dir, tiny_data, out, logging=f"[{logger}]", max_steps=3, eval_every=0,
                               save_every=0)
    return tune(load_config(None, overrides))


def _train_losses(run: Path) -> dict[int, float]:
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {e["step"]: e["train_loss"] for e in events if "train_loss" in e}


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory) -> str:
    """One SQLite store for the module: creating its tables takes seconds, so the tests share it."""
    pytest.importorskip("mlflow", reason="needs weaver[track]")
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


def _mlflow_run(name: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    ids = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(ids, filter_string=f"attributes.run_name = '{name}'")
    assert len(runs) == 1, [r.info.run_name for r in runs]
    return client, runs[0]


def test_mlflow_logs_config_losses_per_step_and_the_adapter(tiny_model_dir, tiny_data, tmp_path, monkeypatch,
                                                            mlflow_uri):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    run_dir = _tune(tiny_model_dir, tiny_data, tmp_path / "ml-run", "mlflow")
    client, run = _mlflow_run("ml-run")
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["train.lr"] == "0.01" and params["train.max_steps"] == "3" and params["data.max_seq_len"] == "64"
    assert params["model.name"] == str(tiny_model_dir) and params["train.logging"] == "['mlflow']"
    history = client.get_metric_history(run.info.run_id, "train_loss")
    assert {m.step: m.value for m in history} == pytest.approx(_train_losses(run_dir)) and len(history) == 3
    assert [m.step for m in client.get_metric_history(run.info.run_id, "dev_loss")] == [3]
    listed = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "adapter")}
    assert {"adapter_config.json", "adapter_model.safetensors"} <= listed
    got = Path(client.download_artifacts(run.info.run_id, "adapter/adapter_model.safetensors", str(tmp_path)))
    assert got.read_bytes() == (run_dir / "adapter" / "adapter_model.safetensors").read_bytes()


def test_mlflow_marks_a_failed_run(tmp_path, monkeypatch, mlflow_uri):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    logger = RunLogger(tmp_path, ["mlflow"], run_name="failed-run", params={"train": {"lr": 0.5}})
    logger.log({"step": 1, "train_loss": 2.0})
    logger.close(failed=True)
    _, run = _mlflow_run("failed-run")
    assert run.info.status == "FAILED" and run.data.params == {"train.lr": "0.5"}
    assert run.data.metrics == {"train_loss": 2.0}


def _wandb_records(path: Path):
    """The protobuf Records of a .wandb file: a ':W&B' header, then 32 KiB blocks of (crc, length, type) chunks."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, chunk = 7, b""
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a chunk header is zero padding
            pos += 32768 - pos % 32768
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = chunk + data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (1, 4):  # FULL or LAST: a whole record
            record = pb.Record()
            record.ParseFromString(chunk)
            chunk = b""
            yield record


@pytest.fixture
def wandb_offline(tmp_path, monkeypatch):
    """W&B offline with every directory under tmp; afterwards no wandb-core service may be left running."""
    wandb = pytest.importorskip("wandb", reason="needs weaver[track]")
    import psutil

    for var, sub in (("WANDB_DIR", "wandb-dir"), ("WANDB_DATA_DIR", "wandb-data"), ("WANDB_CACHE_DIR", "wandb-cache"),
                     ("WANDB_CONFIG_DIR", "wandb-config")):
        (tmp_path / sub).mkdir()
        monkeypatch.setenv(var, str(tmp_path / sub))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    yield tmp_path / "wandb-dir"
    wandb.teardown()
    left = [p.name() for p in psutil.Process().children(recursive=True) if "wandb" in p.name()]
    assert not left, f"wandb processes still running: {left}"


def test_wandb_offline_logs_config_losses_per_step_and_the_adapter(tiny_model_dir, tiny_data, tmp_path,
                                                                   wandb_offline):
    run_dir = _tune(tiny_model_dir, tiny_data, tmp_path / "wb-run", "wandb")
    (log_file,) = wandb_offline.glob("wandb/offline-run-*/run-*.wandb")
    records = list(_wandb_records(log_file))
    kinds = [r.WhichOneof("record_type") for r in records]
    (run,) = [r.run for r in records if r.HasField("run")]
    assert run.display_name == "wb-run"
    config = {item.key: json.loads(item.value_json) for item in run.config.update}
    assert config["train"]["lr"] == 0.01 and config["data"]["max_seq_len"] == 64
    assert config["model"]["name"] == str(tiny_model_dir)
    steps = {}
    for r in records:
        if r.HasField("history"):
            item = {i.key or ".".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
            if "train_loss" in item:
                steps[item["_step"]] = item["train_loss"]
    assert steps == pytest.approx(_train_losses(run_dir)) and sorted(steps) == [1, 2, 3]
    (artifact,) = [r.artifact for r in records if r.HasField("artifact")]
    assert artifact.type == "model" and artifact.name == "wb-run-adapter"
    digests = {e.path: e.digest for e in artifact.manifest.contents}
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        md5 = hashlib.md5((run_dir / "adapter" / name).read_bytes()).digest()
        assert digests[name] == base64.b64encode(md5).decode(), name
    assert kinds[-1] == "exit" and records[-1].exit.exit_code == 0


@pytest.mark.parametrize("tracker", ["mlflow", "wandb"])
def test_a_missing_tracker_names_the_extra(tracker, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, tracker, None)  # import fails as if the package were absent
    extra = r"`pip install 'weaver\[track\]'`"
    with pytest.raises(ConfigError, match=rf"asks for {tracker} but it is not installed: {extra}"):
        RunLogger(tmp_path, [tracker])
