"""Crash and resume: `weaver tune` killed (SIGKILL) at seeded random moments resumes onto the same adapter.

    .venv/bin/pytest -q tests/reliability/test_crash_resume.py            # 5 trials
    .venv/bin/pytest -q tests/reliability/test_crash_resume.py --long     # 20 trials

Builds on tests/tuning (one kill at a fixed step, a truncated checkpoint): here the kill lands at random
moments (before the first step, mid-save, mid-validation, while the final adapter is written), a poller
reads every file with a final name in checkpoints/, best/ and adapter/ while the run goes and asserts
each one is complete, and damaged checkpoints (bit flip, missing or broken manifest) and a full disk
during a save are survived.
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tuning.conftest import tiny_overrides, write_jsonl

from weaver.config import load_config
from weaver.tuning import checkpoint as ckpt
from weaver.tuning.run import tune

ROOT = Path(__file__).resolve().parents[2]
ARGS = dict(max_steps=6, save_every=1, eval_every=3, lr=5e-3)
WATCHED = ("checkpoints", "best", "adapter")
SEED = 20261129


def _overrides(model_dir: Path, data: Path, out: Path, **extra) -> list[str]:
    return tiny_overrides(model_dir, data, out, **{**ARGS, **extra})


def _tune(model_dir: Path, data: Path, out: Path, **extra) -> Path:
    return tune(load_config(None, _overrides(model_dir, data, out, **extra)))


def _assert_same_adapter(run: Path, reference: Path) -> None:
    a = load_file(str(run / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(reference / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and a
    for key in a:  # same trajectory; only float summation order may differ between thread counts
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)
    assert json.loads((run / "run.json").read_text())["steps"] == ARGS["max_steps"]


class CompletenessPoller(threading.Thread):
    """Reads every file with a final name under checkpoints/, best/, adapter/ until stopped; records broken ones.

    Files under a folder or with a name starting with '.' are temporaries (not yet renamed) and skipped.
    A file that disappears while being read (pruned, replaced) is fine; one that reads back broken is not.
    """

    def __init__(self, run_dir: Path, period: float = 0.03):
        super().__init__(daemon=True)
        self.run_dir, self.period = run_dir, period
        self.stop_event = threading.Event()
        self.broken: list[str] = []
        self.files_checked = 0

    def run(self) -> None:
        while not self.stop_event.is_set():
            self.scan()
            self.stop_event.wait(self.period)
        self.scan()

    def scan(self) -> None:
        for top in WATCHED:
            root = self.run_dir / top
            for path in sorted(root.rglob("*")) if root.is_dir() else []:
                if any(part.startswith(".") for part in path.relative_to(self.run_dir).parts) or path.is_dir():
                    continue
                try:
                    _read_complete(path)
                    self.files_checked += 1
                except FileNotFoundError:
                    continue
                except Exception as exc:  # noqa: BLE001 - any failure to read back is a half-written file
                    if path.exists():
                        self.broken.append(f"{path.relative_to(self.run_dir)}: {type(exc).__name__}: {exc}")


def _read_complete(path: Path) -> None:
    """Raise unless the file reads back whole (safetensors loads, JSON parses, the torch zip is intact)."""
    if path.suffix == ".safetensors":
        load_file(str(path))
    elif path.suffix == ".json":
        json.loads(path.read_text(encoding="utf-8"))
    elif path.suffix == ".pt":
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
            if bad is not None:
                raise ValueError(f"corrupt member {bad}")
    elif path.stat().st_size == 0:
        raise ValueError("empty file")


@pytest.fixture(scope="module")
def setup(tiny_model_dir, tmp_path_factory):
    """(model dir, data file, config file, the uninterrupted reference run)."""
    root = tmp_path_factory.mktemp("crash")
    data = write_jsonl(root / "train.jsonl", 40)
    config = root / "c.yaml"
    config.write_text("# weaver tune c.yaml\ndata:\n  task: summarize\n")
    reference = _tune(tiny_model_dir, data, root / "reference")
    return tiny_model_dir, data, config, reference


def _wait_for_event(run: Path, event: str, proc: subprocess.Popen, deadline: float) -> None:
    target = run / event
    while not target.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)


def _kill_trial(setup, out: Path, rng: random.Random) -> dict:
    """Start `weaver tune` in a subprocess, kill -9 it at a random moment while polling, resume in-process."""
    model_dir, data, config, reference = setup
    event = rng.choice(["config.yaml"] + [f"checkpoints/step-{k:06d}" for k in range(1, 7)] + ["best", "adapter"])
    jitter = rng.uniform(0.0, 0.4)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "weaver.cli", "tune", str(config), *_overrides(model_dir, data, out)]
    poller = CompletenessPoller(out)
    poller.start()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_for_event(out, event, proc, time.monotonic() + 300)
        time.sleep(jitter)
        killed = proc.poll() is None
        if killed:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        stderr = proc.stderr.read().decode(errors="replace")
        assert killed or proc.returncode == 0, stderr[-2000:]
        steps_at_kill = [p.name for p in sorted((out / "checkpoints").glob("step-*"))] if killed else []
        resumed = _tune(model_dir, data, out)
    finally:
        poller.stop_event.set()
        poller.join(timeout=30)
        if proc.poll() is None:
            proc.kill()
    assert not poller.broken, poller.broken[:5]
    _assert_same_adapter(resumed, reference)
    return {"event": event, "jitter_s": round(jitter, 3), "killed": killed, "checkpoints_at_kill": steps_at_kill,
            "files_checked": poller.files_checked}


def test_sigkill_at_random_moments_then_resume_equals_uninterrupted(setup, tmp_path, long_mode, figures):
    rng = random.Random(SEED)
    trials = 20 if long_mode else 5
    results = [_kill_trial(setup, tmp_path / f"trial{i}", rng) for i in range(trials)]
    killed = [r for r in results if r["killed"]]
    figures["crash_resume"] = {
        "trials": trials, "killed_mid_run": len(killed), "resumed_equal_to_uninterrupted": trials,
        "half_written_files_seen": 0, "files_read_back_complete": sum(r["files_checked"] for r in results),
        "kill_points": [f"{r['event']}+{r['jitter_s']}s" for r in results], "seed": SEED,
    }
    assert len(killed) >= trials // 2, results  # most trials must really interrupt the run


@pytest.mark.parametrize("damage", ["bit_flip", "manifest_missing", "manifest_garbage", "truncated_optimizer"])
def test_damaged_newest_checkpoint_falls_back_to_previous_good(setup, tmp_path, damage, caplog):
    model_dir, data, _, reference = setup
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    shutil.rmtree(run / "adapter")
    newest, previous = sorted((run / "checkpoints").glob("step-*"))[::-1][:2]
    if damage == "bit_flip":  # same size, different content: only the hash can tell
        raw = bytearray((newest / ckpt.WEIGHTS).read_bytes())
        raw[-5] ^= 0x01
        (newest / ckpt.WEIGHTS).write_bytes(bytes(raw))
    elif damage == "manifest_missing":
        (newest / ckpt.MANIFEST).unlink()
    elif damage == "manifest_garbage":
        (newest / ckpt.MANIFEST).write_text('{"files": ')
    else:
        blob = (newest / "optimizer.pt").read_bytes()
        (newest / "optimizer.pt").write_bytes(blob[: len(blob) // 2])
    assert ckpt.latest_checkpoint(run) == previous
    assert "corrupted" in caplog.text
    if damage != "bit_flip":  # resuming costs a run: once is enough to show the fallback is used end to end
        return
    # the run must continue from the previous good checkpoint and land on the uninterrupted adapter
    (run / "run.json").unlink()
    resumed = _tune(model_dir, data, run, resume="always")
    _assert_same_adapter(resumed, reference)


def _failing_writer(real, fail_on_call: int):
    """A safetensors save_file that writes half the file and raises ENOSPC on its fail_on_call-th call."""
    calls = {"n": 0}

    def save_file(tensors, filename, metadata=None):
        calls["n"] += 1
        if calls["n"] == fail_on_call:
            with open(filename, "wb") as fh:
                fh.write(b"\x00" * 64)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(filename))
        return real(tensors, filename, metadata=metadata)

    return save_file


def test_full_disk_during_save_keeps_previous_checkpoint_and_resumes(setup, tmp_path, monkeypatch, figures):
    model_dir, data, _, reference = setup
    run = tmp_path / "run"
    monkeypatch.setattr(ckpt, "save_file", _failing_writer(ckpt.save_file, fail_on_call=3))
    with pytest.raises(OSError) as info:
        _tune(model_dir, data, run)
    assert info.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert not (run / "checkpoints" / "step-000003").exists()  # no half-written checkpoint under a final name
    good = ckpt.latest_checkpoint(run)
    assert good is not None and good.name == "step-000002" and ckpt.verify(good)
    resumed = _tune(model_dir, data, run)
    _assert_same_adapter(resumed, reference)
    figures["full_disk"] = {"simulated_enospc_saves": 1, "previous_checkpoint_kept": True, "resumed_equal": True}


def test_failed_or_killed_saves_leave_no_temporary_folders(setup, tmp_path, monkeypatch):
    model_dir, data, _, _ = setup
    run = tmp_path / "run"
    monkeypatch.setattr(ckpt, "save_file", _failing_writer(ckpt.save_file, fail_on_call=3))
    with pytest.raises(OSError):
        _tune(model_dir, data, run)
    monkeypatch.undo()
    (run / "checkpoints" / ".step-000004.tmp999999").mkdir()  # what a SIGKILL mid-save leaves
    _tune(model_dir, data, run)
    leftovers = [p.name for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_full_disk_is_reported_as_one_clear_sentence(setup, tmp_path, monkeypatch, capsys):
    from weaver.cli import main

    model_dir, data, config, _ = setup
    monkeypatch.setattr(ckpt, "save_file", _failing_writer(ckpt.save_file, fail_on_call=2))
    code = main(["tune", str(config), *_overrides(model_dir, data, tmp_path / "run")])
    err = capsys.readouterr().err
    assert code != 0
    assert "No space left on device" in err and "internal error" not in err and "resume" in err
