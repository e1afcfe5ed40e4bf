"""Fixtures for tuning tests: a tiny model folder (tests/conftest.py) plus a small jsonl and a run config."""

from __future__ import annotations

import json
import random
import socket
from pathlib import Path

import pytest

WORDS = "apple river stone cloud market train paper window garden music light table".split()


def write_jsonl(path: Path, n: int, seed: int = 0) -> Path:
    """n short summarisation records with varied lengths."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 30)))
            out = " ".join(text.split()[:3])
            fh.write(json.dumps({"id": str(i), "instruction": "", "input": text, "output": out}) + "\n")
    return path


def tiny_overrides(model_dir: Path, data: Path, out: Path, **train) -> list[str]:
    """Command-line style overrides for a fast run on the tiny model."""
    base = {"max_steps": 6, "batch_size": 4, "eval_every": 3, "save_every": 3, "logging": "[]", "lr": 1e-2,
            "out_dir": str(out), "precision": "fp32", "top_layers": "none"}
    base.update(train)
    args = ["--model.name", str(model_dir), "--data.train", str(data), "--data.split", "[0.75, 0.25, 0.0]",
            "--data.max_seq_len", "64"]
    for key, value in base.items():
        args += [f"--train.{key}", str(value)]
    return args


@pytest.fixture
def tiny_data(tmp_path) -> Path:
    return write_jsonl(tmp_path / "train.jsonl", 40)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for a rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
