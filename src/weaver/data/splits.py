"""Train/dev/test splits: given files, or a seeded split of one file; de-duplicated and leak-checked.

    splits = load_splits(cfg.data)          # Splits(train, dev, test, report)
    splits.report["leaks"]                  # {"dev": 0, "test": 2}: inputs shared with train

When dev or test files are not given they are carved from `data.train` by `data.split` ratios with
`data.seed`. Records are grouped by input before the split, so one input never lands in two splits.
Exact duplicates (same question, same answer) are dropped within each split; dev/test records whose
input also appears in train are reported, and dropped when `data.drop_leaks` is true. `data.limit_train`
keeps a seeded sample of the training set; `data.limit_dev` keeps the first N dev records.
Augmentation (`data.augment`) is applied to the training split only, after limiting. Synthetic records
(meta.synthetic: in data.train, or the file data.synthetic) join the training split last, weighted by
data.synthetic_weight (weaver.data.synthetic.mix_synthetic); they never land in dev or test, and one that
shares its input with a dev or test record is dropped.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from weaver.config import DataConfig
from weaver.data.readers import apply_policy, read_file, read_records
from weaver.data.records import Record, content_key, fingerprint, input_key
from weaver.data.synthetic import SYNTHETIC, mix_synthetic, split_synthetic
from weaver.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass
class Splits:
    """The three splits and a report of how they were made."""

    train: list[Record]
    dev: list[Record]
    test: list[Record]
    report: dict[str, Any] = field(default_factory=dict)


def split_records(records: list[Record], ratios: list[float], seed: int) -> tuple[list[Record], ...]:
    """Split records into len(ratios) parts by a seeded shuffle of their distinct inputs.

    Args:
        records: the records to split.
        ratios: fractions summing to 1 (e.g. [0.8, 0.1, 0.1]).
        seed: shuffle seed; the same seed and records give the same split.
    Returns:
        One list per ratio; records sharing an input always land in the same part, in file order.
    """
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        groups.setdefault(input_key(r), []).append(i)
    keys = sorted(groups)
    random.Random(seed).shuffle(keys)
    total, bounds, acc = len(keys), [], 0.0
    for ratio in ratios:
        acc += ratio
        bounds.append(round(acc * total))
    bounds[-1] = total
    parts, start = [], 0
    for end in bounds:
        idx = sorted(i for k in keys[start:end] for i in groups[k])
        parts.append([records[i] for i in idx])
        start = end
    return tuple(parts)


def dedup(records: list[Record]) -> tuple[list[Record], int]:
    """Drop exact duplicates (same system, instruction, input and output), keeping the first.

    Returns:
        (kept records, number dropped).
    """
    seen: set[str] = set()
    kept = []
    for r in records:
        key = content_key(r)
        if key not in seen:
            seen.add(key)
            kept.append(r)
    return kept, len(records) - len(kept)


def find_leaks(train: list[Record], other: list[Record]) -> list[Record]:
    """The records of `other` whose input also appears in train."""
    train_inputs = {input_key(r) for r in train}
    return [r for r in other if input_key(r) in train_inputs]


def _read(path: str, data_cfg: DataConfig, tokenizer, report: dict, check_length: bool) -> list[Record]:
    result = read_file(path, data_cfg.columns, tokenizer=tokenizer if check_length else None,
                       max_output_tokens=data_cfg.max_output_tokens)
    records = apply_policy(result, data_cfg.on_error)
    if result.problems:
        report["skipped"][path] = {"count": len(result.problems), "first": [str(p) for p in result.problems[:10]],
                                   "kinds": dict(Counter(p.kind for p in result.problems))}
    return records


def _carve(data_cfg: DataConfig, train: list[Record], dev, test):
    """Fill in the missing dev/test from train by data.split ratios."""
    tr, dv, ts = data_cfg.split
    if dev is not None and test is not None:
        return train, dev, test
    if dev is None and test is None:
        return split_records(train, [tr, dv, ts], data_cfg.seed)
    if dev is None:
        train, dev = split_records(train, [tr / (tr + dv), dv / (tr + dv)], data_cfg.seed) if dv else (train, [])
    else:
        train, test = split_records(train, [tr / (tr + ts), ts / (tr + ts)], data_cfg.seed) if ts else (train, [])
    return train, dev, test


def load_splits(data_cfg: DataConfig, tokenizer=None, translate=None) -> Splits:
    """Read, split, de-duplicate, leak-check, limit and augment the data described by data_cfg.

    Args:
        data_cfg: files, split ratios, seed, limits, on_error and augmentation settings.
        tokenizer: when given, training outputs longer than data.max_output_tokens are malformed records.
        translate: the back-translator for data.augment.backtranslate (see weaver.data.augment.augment_records).
    Returns:
        Splits(train, dev, test, report); report holds counts, duplicates, leaks, skipped records and a
        fingerprint of each split.
    Raises:
        ConfigError: no training file. DataError: malformed records (with on_error=fail).
    """
    if not data_cfg.train:
        raise ConfigError("no training data: set --data.train FILE (jsonl/json/csv/tsv/parquet)")
    report: dict[str, Any] = {"files": {"train": data_cfg.train, "dev": data_cfg.dev, "test": data_cfg.test},
                              "seed": data_cfg.seed, "skipped": {}}
    train = _read(data_cfg.train, data_cfg, tokenizer, report, check_length=True)
    dev = _read(data_cfg.dev, data_cfg, tokenizer, report, False) if data_cfg.dev else None
    test = _read(data_cfg.test, data_cfg, tokenizer, report, False) if data_cfg.test else None
    report["carved"] = [name for name, part in (("dev", dev), ("test", test)) if part is None]
    train, synthetic = split_synthetic(train)  # a model's own text is never carved into dev or test
    train, dev, test = _carve(data_cfg, train, dev, test)
    parts = {"train": train, "dev": dev, "test": test}
    report["synthetic"] = {"dropped_from": {}}
    for name in ("dev", "test"):
        parts[name], dropped = split_synthetic(parts[name])
        report["synthetic"]["dropped_from"][name] = len(dropped)
        if dropped:
            log.warning("%d %s records are synthetic (meta.synthetic): dropped, a model's text is no reference",
                        len(dropped), name)
    report["duplicates"] = {}
    for name in parts:
        parts[name], report["duplicates"][name] = dedup(parts[name])
    report["leaks"], report["leaks_dropped"] = {}, data_cfg.drop_leaks
    for name in ("dev", "test"):
        leaked = find_leaks(parts["train"], parts[name])
        report["leaks"][name] = len(leaked)
        if leaked and data_cfg.drop_leaks:
            ids = {id(r) for r in leaked}
            parts[name] = [r for r in parts[name] if id(r) not in ids]
        elif leaked:
            log.warning("%d %s records share their input with train (set --data.drop_leaks true to drop them)",
                        len(leaked), name)
    parts["train"], parts["dev"] = _limit(parts["train"], parts["dev"], data_cfg)
    if data_cfg.augment:
        from weaver.data.augment import augment_records

        parts["train"], report["augment"] = augment_records(parts["train"], data_cfg.augment, data_cfg.seed,
                                                            translate)
    parts["train"] = _add_synthetic(parts, synthetic, data_cfg, report["synthetic"])
    report["counts"] = {name: len(part) for name, part in parts.items()}
    report["fingerprint"] = {name: fingerprint(part) for name, part in parts.items()}
    return Splits(parts["train"], parts["dev"], parts["test"], report)


def _add_synthetic(parts: dict[str, list[Record]], synthetic: list[Record], data_cfg: DataConfig,
                   report: dict) -> list[Record]:
    """The training split with the synthetic records (data.train's marked ones + data.synthetic's) mixed in by
    data.synthetic_weight; those sharing their input with dev or test, or a real training record, are dropped."""
    if data_cfg.synthetic:
        extra = read_records(data_cfg.synthetic, data_cfg.columns or None, data_cfg.on_error)
        for r in extra:
            r.meta.setdefault(SYNTHETIC, {"file": data_cfg.synthetic})
        synthetic = synthetic + extra
    held = {input_key(r) for name in ("dev", "test") for r in parts[name]}
    seen = {content_key(r) for r in parts["train"]}
    kept = []
    for r in synthetic:
        if input_key(r) not in held and content_key(r) not in seen:
            seen.add(content_key(r))
            kept.append(r)
    report.update(records=len(synthetic), leaks_or_duplicates_dropped=len(synthetic) - len(kept),
                  weight=data_cfg.synthetic_weight)
    mixed = mix_synthetic(parts["train"], kept, data_cfg.synthetic_weight, data_cfg.seed)
    report["in_train"] = len(mixed) - len(parts["train"])
    return mixed


def _limit(train: list[Record], dev: list[Record], data_cfg: DataConfig) -> tuple[list[Record], list[Record]]:
    if data_cfg.limit_train is not None and data_cfg.limit_train < len(train):
        order = list(range(len(train)))
        random.Random(data_cfg.seed).shuffle(order)
        train = [train[i] for i in sorted(order[: data_cfg.limit_train])]
    if data_cfg.limit_dev is not None:
        dev = dev[: data_cfg.limit_dev]
    return train, dev
