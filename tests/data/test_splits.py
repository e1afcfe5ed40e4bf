"""Splits: reproducible by seed, grouped by input (leak-free), de-duplicated, leaks reported and dropped."""

from __future__ import annotations

import json

import pytest

from weaver.config import DataConfig
from weaver.data.records import input_key
from weaver.data.splits import load_splits
from weaver.errors import ConfigError, DataError


def _write(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return str(path)


@pytest.fixture
def one_file(tmp_path):
    rows = [{"input": f"text number {i}", "output": f"out {i}"} for i in range(200)]
    rows += [{"input": f"text number {i}", "output": f"another reference {i}"} for i in range(0, 40, 2)]
    rows += [{"input": "text number 7", "output": "out 7"}] * 3  # exact duplicates
    return _write(tmp_path / "all.jsonl", rows)


def test_seeded_split_is_reproducible_and_leak_free(one_file):
    a = load_splits(DataConfig(train=one_file, seed=1))
    b = load_splits(DataConfig(train=one_file, seed=1))
    c = load_splits(DataConfig(train=one_file, seed=2))
    ids = lambda s: [[r.source for r in part] for part in (s.train, s.dev, s.test)]  # noqa: E731
    assert ids(a) == ids(b) and ids(a) != ids(c)
    train_inputs = {input_key(r) for r in a.train}
    assert not any(input_key(r) in train_inputs for r in a.dev + a.test)
    assert not {input_key(r) for r in a.dev} & {input_key(r) for r in a.test}
    assert a.report["leaks"] == {"dev": 0, "test": 0}
    assert sum(a.report["duplicates"].values()) == 3
    assert a.report["counts"] == {"train": len(a.train), "dev": len(a.dev), "test": len(a.test)}
    assert 150 <= len(a.train) <= 175 and 15 <= len(a.dev) <= 30
    assert a.report["fingerprint"] == b.report["fingerprint"]


def test_given_files_leaks_reported_and_dropped(tmp_path):
    train = _write(tmp_path / "train.jsonl", [{"input": f"t{i}", "output": "o"} for i in range(10)])
    dev = _write(tmp_path / "dev.jsonl", [{"input": "T1 ", "output": "x"}, {"input": "d1", "output": "y"}])
    test = _write(tmp_path / "test.jsonl", [{"input": "z", "output": "y"}, {"input": "t2", "output": "q"}])
    kept = load_splits(DataConfig(train=train, dev=dev, test=test, drop_leaks=False))
    assert kept.report["leaks"] == {"dev": 1, "test": 1} and len(kept.dev) == 2
    dropped = load_splits(DataConfig(train=train, dev=dev, test=test))
    assert [r.input for r in dropped.dev] == ["d1"] and [r.input for r in dropped.test] == ["z"]
    assert dropped.report["carved"] == []


def test_only_dev_given_carves_test_from_train(tmp_path):
    train = _write(tmp_path / "train.jsonl", [{"input": f"t{i}", "output": "o"} for i in range(100)])
    dev = _write(tmp_path / "dev.jsonl", [{"input": "d", "output": "y"}])
    s = load_splits(DataConfig(train=train, dev=dev, split=[0.8, 0.1, 0.1]))
    assert len(s.dev) == 1 and len(s.test) == 11 and len(s.train) == 89 and s.report["carved"] == ["test"]


def test_limits(one_file):
    s = load_splits(DataConfig(train=one_file, limit_train=20, limit_dev=5, seed=4))
    assert len(s.train) == 20 and len(s.dev) == 5
    again = load_splits(DataConfig(train=one_file, limit_train=20, limit_dev=5, seed=4))
    assert [r.source for r in s.train] == [r.source for r in again.train]


def test_skip_is_reported_and_fail_raises(tmp_path):
    train = _write(tmp_path / "train.jsonl", [{"input": f"t{i}", "output": "o" if i % 10 else ""} for i in range(50)])
    with pytest.raises(DataError, match="on_error skip"):
        load_splits(DataConfig(train=train))
    s = load_splits(DataConfig(train=train, on_error="skip"))
    assert s.report["skipped"][train]["count"] == 5 and s.report["skipped"][train]["kinds"] == {"empty": 5}
    assert sum(s.report["counts"].values()) == 45


def test_long_training_outputs_are_malformed_with_a_tokenizer(tmp_path, tokenizer):
    train = _write(tmp_path / "train.jsonl", [{"input": "a", "output": "word " * 40}, {"input": "b", "output": "ok"}])
    with pytest.raises(DataError, match=r"train\.jsonl:1: output: is \d+ tokens"):
        load_splits(DataConfig(train=train, max_output_tokens=16), tokenizer=tokenizer)


def test_no_training_file_names_the_flag():
    with pytest.raises(ConfigError, match="--data.train"):
        load_splits(DataConfig())
