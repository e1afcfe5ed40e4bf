"""Synthetic records (written by `weaver data synth`): reading unlabelled files, telling synthetic records
apart, and mixing them into a training set by weight.

    inputs = read_unlabelled("articles.jsonl", "input")        # self-training: inputs, their outputs discarded
    outputs = read_unlabelled("ads.jsonl", "output")           # back-translation: outputs without inputs
    is_synthetic(record)                                       # True when record.meta["synthetic"] is set
    train = mix_synthetic(real, synthetic, weight=0.5, seed=0)  # every real record + a seeded half of the rest

A synthetic record carries `meta.synthetic` (its mode, source and scores). Training takes it with the weight
`data.synthetic_weight`; dev and test never hold one (weaver.data.splits, weaver.eval.runner), so a model's
own text is never the reference it is scored against.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from pathlib import Path

from weaver.data.readers import (
    ReadResult,
    _check_columns,
    _check_id,
    _id,
    _map_columns,
    _meta,
    _text,
    apply_policy,
    check_problems,
    iter_with,
    read_with,
)
from weaver.data.records import Record
from weaver.data.rows import Problem
from weaver.errors import ConfigError

SYNTHETIC = "synthetic"
"""The meta key that marks a synthetic record; its value is a dict of how it was made and scored."""
FIELDS = ("input", "output")


def is_synthetic(record: Record) -> bool:
    """True when the record was written by a model (`meta.synthetic` is set and not false/empty)."""
    return bool(record.meta.get(SYNTHETIC))


def split_synthetic(records: list[Record]) -> tuple[list[Record], list[Record]]:
    """(real records, synthetic records), each in file order."""
    return [r for r in records if not is_synthetic(r)], [r for r in records if is_synthetic(r)]


def read_unlabelled(path: str | Path, field: str, columns: dict[str, str] | None = None,
                    on_error: str = "fail") -> list[Record]:
    """Read the rows of a file that hold `field` (a flat record; other fields are optional).

    Args:
        path: jsonl/json/csv/tsv/parquet file or a datasets folder.
        field: "input" (self-training and selection: each row's input, plus its instruction; an output the
            row carries is discarded) or "output" (back-translation: each row's output; its input is ignored).
        columns: our field name -> the file's column name (e.g. {"input": "dialogue"}).
        on_error: fail | skip, as for every reader.
    Returns:
        Records whose other field is "" (the one the model writes), in file order.
    Raises:
        ConfigError: an unknown field. DataError: malformed rows (with on_error fail), or none usable.
    """
    return apply_policy(read_with(path, _unlabelled_parser(path, field, columns)), on_error)


def stream_unlabelled(path: str | Path, field: str, columns: dict[str, str] | None = None, on_error: str = "fail",
                      limit: int | None = None) -> tuple[int, Iterator[Record]]:
    """read_unlabelled without holding the file in memory: (how many records, an iterator over them).

    A first pass parses every row and keeps only the count and the problems, so a malformed file is refused
    (on_error fail) before anything is generated from it, as read_unlabelled refuses it; the iterator reads the
    file again, lazily, yielding the good records (at most limit) in file order.

    Raises:
        ConfigError, DataError: as read_unlabelled.
    """
    parse = _unlabelled_parser(path, field, columns)
    result, good = ReadResult(str(path)), 0
    for item in iter_with(path, parse):
        result.rows += 1
        if isinstance(item, Problem):
            result.problems.append(item)
        else:
            good += 1
    check_problems(result, on_error, good)
    records = (item for item in iter_with(path, parse) if not isinstance(item, Problem))
    return (good if limit is None else min(good, limit)), itertools.islice(records, limit)


def _unlabelled_parser(path: str | Path, field: str, columns: dict[str, str] | None):
    if field not in FIELDS:
        raise ConfigError(f"field {field!r} is not one of {', '.join(FIELDS)}")
    _check_columns(columns or {})
    stem = Path(path).stem

    def parse(row: dict, where: str, n: int, seen: dict[str, str]) -> Record:
        row = _map_columns(row, columns or {})
        text = _text(row, field, required=True)
        record = Record(id=_id(row, f"{stem}-{n}"), instruction=_text(row, "instruction") if field == "input" else "",
                        input=text if field == "input" else "", output=text if field == "output" else "",
                        system=_text(row, "system") or None, meta=_meta(row), source=where)
        _check_id(record, row, seen)
        return record

    return parse


def mix_synthetic(real: list[Record], synthetic: list[Record], weight: float, seed: int) -> list[Record]:
    """The training set: every real record, then each synthetic one int(weight) times plus once more for a
    seeded share weight - int(weight) of them, so a synthetic record counts `weight` times a real one in
    expectation (0 leaves them out, 0.5 keeps a seeded half, 2 repeats each twice).

    Raises:
        ConfigError: a negative weight.
    """
    if weight < 0:
        raise ConfigError(f"data.synthetic_weight must be at least 0, got {weight}")
    whole, frac = int(weight), weight - int(weight)
    extra = sorted(random.Random(f"{seed}:synthetic").sample(range(len(synthetic)), round(frac * len(synthetic))))
    return [*real, *(r for r in synthetic for _ in range(whole)), *(synthetic[i] for i in extra)]
