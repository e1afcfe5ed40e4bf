"""Synthetic records: read from unlabelled files, mixed into training by data.synthetic_weight, and never in
dev, test or an evaluation's references."""

from __future__ import annotations

import json

import pytest

from weaver.config import DataConfig, load_config
from weaver.data.records import Record
from weaver.data.splits import load_splits
from weaver.data.synthetic import is_synthetic, mix_synthetic, read_unlabelled, stream_unlabelled
from weaver.errors import ConfigError, DataError


def rows(path, n, synthetic_every=0, prefix="r"):
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            row = {"id": f"{prefix}{i}", "input": f"{prefix} input text number {i}", "output": f"output {i}"}
            if synthetic_every and i % synthetic_every == 0:
                row["meta"] = {"synthetic": {"mode": "selftrain", "scores": {"logprob": -1.0}}}
            fh.write(json.dumps(row) + "\n")
    return str(path)


def test_read_unlabelled_takes_inputs_without_outputs_and_outputs_without_inputs(tmp_path):
    path = tmp_path / "u.jsonl"
    path.write_text('{"input": "a dialogue", "output": "a label to discard"}\n{"text": "only a column"}\n'
                    '{"output": "an ad without attributes"}\n')
    with pytest.raises(DataError, match=r"u.jsonl:2"):
        read_unlabelled(path, "input")
    inputs = read_unlabelled(path, "input", on_error="skip")
    assert [(r.input, r.output) for r in inputs] == [("a dialogue", "")]
    outputs = read_unlabelled(path, "output", on_error="skip")
    assert [(r.input, r.output) for r in outputs] == [("", "a label to discard"), ("", "an ad without attributes")]
    assert read_unlabelled(path, "input", columns={"input": "text"}, on_error="skip")[0].input == "only a column"


def test_stream_unlabelled_refuses_a_bad_file_first_then_reads_lazily(tmp_path, monkeypatch):
    import weaver.data.readers as readers

    path = tmp_path / "u.jsonl"
    path.write_text('{"input": "one"}\n{"input": "two"}\n{"text": "no input"}\n{"input": "three"}\n')
    with pytest.raises(DataError, match=r"u.jsonl:3"):  # before any record is handed out
        stream_unlabelled(path, "input")
    rows_read, real_iter_rows = [], readers.iter_rows

    def counting(p):
        for row in real_iter_rows(p):
            rows_read.append(row)
            yield row

    monkeypatch.setattr(readers, "iter_rows", counting)
    total, records = stream_unlabelled(path, "input", on_error="skip")
    assert total == 3 and len(rows_read) == 4  # the checking pass
    assert next(records).input == "one" and len(rows_read) == 5  # then one row at a time
    assert [r.input for r in records] == ["two", "three"]
    total, records = stream_unlabelled(path, "input", on_error="skip", limit=2)
    assert total == 2 and [r.id for r in records] == [r.id for r in read_unlabelled(path, "input", on_error="skip")][:2]
    with pytest.raises(DataError, match="no usable records"):
        stream_unlabelled(path, "output", on_error="skip")


def test_mix_synthetic_counts_each_synthetic_record_weight_times():
    real = [Record(f"r{i}", "", "x", "y") for i in range(3)]
    synth = [Record(f"s{i}", "", "x", "y", meta={"synthetic": {}}) for i in range(10)]
    assert len(mix_synthetic(real, synth, 0, 0)) == 3
    assert len(mix_synthetic(real, synth, 0.5, 0)) == 3 + 5
    mixed = mix_synthetic(real, synth, 2.5, 0)
    assert len(mixed) == 3 + 25 and mixed[:3] == real
    assert mix_synthetic(real, synth, 0.5, 0) == mix_synthetic(real, synth, 0.5, 0)  # seeded
    with pytest.raises(ConfigError):
        DataConfig(synthetic_weight=-1)


def test_synthetic_records_in_train_never_land_in_dev_or_test(tmp_path):
    train = rows(tmp_path / "train.jsonl", 60, synthetic_every=3)
    splits = load_splits(DataConfig(train=train, split=[0.6, 0.2, 0.2]))
    assert not any(is_synthetic(r) for r in splits.dev + splits.test)
    assert sum(is_synthetic(r) for r in splits.train) == 20
    none = load_splits(DataConfig(train=train, split=[0.6, 0.2, 0.2], synthetic_weight=0))
    assert not any(is_synthetic(r) for r in none.train)
    assert none.test == splits.test  # the held-out split does not depend on the synthetic weight


def test_a_synthetic_file_joins_train_only_and_drops_inputs_held_out(tmp_path):
    train, test = rows(tmp_path / "train.jsonl", 20), rows(tmp_path / "test.jsonl", 5, prefix="t")
    synth = tmp_path / "synth.jsonl"
    with open(synth, "w", encoding="utf-8") as fh:  # s0 shares its input with test record t0: a leak
        for i in range(4):
            fh.write(json.dumps({"id": f"s{i}", "input": "t input text number 0" if i == 0 else f"s input {i}",
                                 "output": f"model text {i}"}) + "\n")
    cfg = DataConfig(train=train, test=test, split=[0.9, 0.1, 0.0], synthetic=str(synth), synthetic_weight=2)
    splits = load_splits(cfg)
    marked = [r for r in splits.train if is_synthetic(r)]
    assert len(marked) == 2 * 3 and {r.id for r in marked} == {"s1", "s2", "s3"}
    assert splits.report["synthetic"]["leaks_or_duplicates_dropped"] == 1
    assert not any(is_synthetic(r) for r in splits.dev + splits.test)


def test_evaluation_never_uses_a_synthetic_record_as_a_reference(tmp_path):
    from weaver.eval.runner import load_test_records

    test = rows(tmp_path / "test.jsonl", 6, synthetic_every=2)
    cfg = load_config(None, ["--data.test", test])
    records = load_test_records(cfg)
    assert [r.id for r in records] == ["r1", "r3", "r5"]
    only = rows(tmp_path / "only.jsonl", 2, synthetic_every=1)
    with pytest.raises(ConfigError, match="not synthetic"):
        load_test_records(load_config(None, ["--data.test", only]))
