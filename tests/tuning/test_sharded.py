"""train.distributed fsdp: 2 CPU processes (gloo) shard the weights and optimizer state with torch's FSDP2; a run
killed with SIGKILL resumes from its sharded checkpoint and ends with the weights of an uninterrupted run, and the
sharded full fine-tuning equals one process doing the same global batch."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from weaver.config import TrainConfig, load_config
from weaver.errors import ConfigError
from weaver.tuning.run import tune

from .conftest import free_port, tiny_overrides

ROOT = Path(__file__).resolve().parents[2]
FINAL = {"lora": "adapter/adapter_model.safetensors", "full": "model/model.safetensors"}


def _launch(config: Path, overrides: list[str]) -> subprocess.Popen:
    """`torchrun --nproc_per_node 2 -m weaver.cli tune`."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           "-m", "weaver.cli", "tune", str(config), *overrides]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _kill(proc: subprocess.Popen) -> None:
    """SIGKILL the launcher and its workers (torchrun starts each worker in a session of its own)."""
    import psutil

    tree = [proc.pid, *(c.pid for c in psutil.Process(proc.pid).children(recursive=True))]
    for pid in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.communicate()


def _finish(proc: subprocess.Popen) -> None:
    try:
        _, err = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        _kill(proc)
        raise
    assert proc.returncode == 0, err[-3000:]


def _assert_same(a_file: Path, b_file: Path) -> None:
    a, b = load_file(str(a_file)), load_file(str(b_file))
    assert a.keys() == b.keys() and a
    for key in a:
        # same trajectory; only float summation order may differ
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["lora", "full"])
def test_fsdp_killed_then_resumed_equals_uninterrupted(tiny_model_dir, tiny_data, tmp_path, method):
    args = dict(method=method, distributed="fsdp", max_steps=8, save_every=1, eval_every=4, batch_size=2,
                **(dict(lr=5e-3, lora_dropout=0.1) if method == "lora" else dict(lr=1e-3)))
    # LoRA's dropout draws from each process's RNG, which its checkpoint restores; full fine-tuning has no dropout,
    # so that one process can take the same trajectory below
    config = tmp_path / "c.yaml"
    config.write_text("data:\n  task: summarize\n")
    killed = tmp_path / "killed"
    proc = _launch(config, tiny_overrides(tiny_model_dir, tiny_data, killed, **args))
    deadline = time.time() + 240
    while not (killed / "checkpoints" / "step-000004").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read()[-2000:]}"
    _kill(proc)  # the launcher and both workers, mid-run
    done = sorted(p for p in (killed / "checkpoints").glob("step-*"))
    assert done and done[-1].name < "step-000008", done
    shards = sorted(p.name for p in done[-1].glob("__*.distcp"))
    assert shards == ["__0_0.distcp", "__1_0.distcp"]  # each process wrote its own shard
    if len(done) > 1:  # a damaged newest checkpoint is skipped and the one before used: still the same trajectory
        with open(done[-1] / shards[1], "r+b") as fh:
            fh.truncate(16)

    _finish(_launch(config, tiny_overrides(tiny_model_dir, tiny_data, killed, resume="always", **args)))
    straight = tmp_path / "straight"
    _finish(_launch(config, tiny_overrides(tiny_model_dir, tiny_data, straight, **args)))
    _assert_same(killed / FINAL[method], straight / FINAL[method])
    facts = json.loads((killed / "run.json").read_text())
    assert facts["steps"] == 8 and facts["processes"] == 2
    if method == "full":
        # the sharded math is data parallelism's: one process on the same global batch (2 micro-batches per step)
        one = tune(load_config(config, tiny_overrides(tiny_model_dir, tiny_data, tmp_path / "one",
                                                      **{**args, "distributed": "accelerate", "grad_accum": 2})))
        _assert_same(straight / FINAL[method], one / FINAL[method])
        init = load_file(str(tiny_model_dir / "model.safetensors"))
        final = load_file(str(straight / FINAL[method]))
        assert max(float((final[k] - init[k]).abs().max()) for k in final) > 1e-3  # it trained
        # each process's shard holds about half of the weights and the optimizer state
        sizes = [p.stat().st_size for p in sorted((straight / "checkpoints" / "step-000008").glob("__*.distcp"))]
        assert len(sizes) == 2 and max(sizes) < 0.6 * sum(sizes), sizes


def test_fsdp_needs_several_processes(tiny_model_dir, tiny_data, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("data:\n  task: summarize\n")
    cfg = load_config(config, tiny_overrides(tiny_model_dir, tiny_data, tmp_path / "run", distributed="fsdp"))
    with pytest.raises(ConfigError, match="torchrun --nproc_per_node 2"):
        tune(cfg)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("key", "value"), [("objective", "dpo"), ("metric", "rougeL"), ("method", "adalora"),
                                            ("method", "prefix"), ("method", "adapter"),
                                            ("frozen_dtype", "nf4")])
def test_fsdp_refuses_what_it_cannot_shard(key, value):
    with pytest.raises(ConfigError, match=f"--train.{key} {value} does not work with --train.distributed fsdp"):
        TrainConfig(distributed="fsdp", **{key: value})


def test_an_unknown_distributed_mode_is_refused():
    with pytest.raises(ConfigError, match="train.distributed"):
        TrainConfig(distributed="zero3")


@pytest.mark.slow
@pytest.mark.parametrize("distributed", ["accelerate", "fsdp"])
def test_two_processes_validate_a_dev_set_of_one_batch(tiny_model_dir, tiny_data, tmp_path, distributed):
    """10 dev examples in one batch: the second process has none, yet runs the forward with the first (DDP broadcasts
    buffers and FSDP gathers weights in every forward; a process that skipped it left the other waiting for ever)."""
    config = tmp_path / "c.yaml"
    config.write_text("data:\n  task: summarize\n")
    out = tmp_path / "run"
    proc = _launch(config, tiny_overrides(tiny_model_dir, tiny_data, out, distributed=distributed, batch_size=16,
                                          max_steps=2, eval_every=1, save_every=2))
    try:
        _, err = proc.communicate(timeout=150)
    except subprocess.TimeoutExpired:
        _kill(proc)
        raise AssertionError("the validation with one dev batch for two processes hung") from None
    assert proc.returncode == 0, err[-3000:]
    dev = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if "dev_loss" in line]
    assert [e["step"] for e in dev] == [1, 2] and all(e["dev_loss"] > 0 for e in dev)


class _Plant:
    """Unpickling this creates `marker`: proof that a pickle ran code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_planted_sharded_checkpoint_runs_no_code(tmp_path):
    """DCP's own reader unpickles .metadata and its planner unpickles non-tensor values; Weaver's reads data only."""
    import pickle

    import torch.distributed.checkpoint as dcp

    from weaver.tuning.checkpoint import CheckpointError
    from weaver.tuning.sharded import safe_load

    good = tmp_path / "good"
    dcp.save({"w": torch.ones(3), "lr": 0.5}, checkpoint_id=good)  # what a sharded checkpoint holds: tensors, values
    states = {"w": torch.zeros(3), "lr": 0.0}
    safe_load(states, good)
    assert torch.equal(states["w"], torch.ones(3)) and states["lr"] == 0.5

    in_value = tmp_path / "value"
    dcp.save({"w": torch.ones(3), "lr": _Plant(tmp_path / "ran-from-value")}, checkpoint_id=in_value)
    with pytest.raises(CheckpointError, match="unpickling can run code"):
        safe_load({"w": torch.zeros(3), "lr": 0.0}, in_value)
    in_metadata = tmp_path / "metadata"
    dcp.save({"w": torch.ones(3)}, checkpoint_id=in_metadata)
    (in_metadata / ".metadata").write_bytes(pickle.dumps(_Plant(tmp_path / "ran-from-metadata")))
    with pytest.raises(CheckpointError, match="unpickling can run code"):
        safe_load({"w": torch.zeros(3)}, in_metadata)
    assert not (tmp_path / "ran-from-value").exists() and not (tmp_path / "ran-from-metadata").exists()
