"""Preference pairs for `train.objective: dpo`: a prompt, a chosen reply and a rejected one.

    pairs = read_pairs("pairs.jsonl", tokenizer=tok, max_output_tokens=256)   # DataError on bad records
    splits = load_pair_splits(cfg.data, tok)                                  # PairSplits(train, dev, test)

Record shapes (detected per record, every one reported by file:line when malformed):
  - flat: {instruction?, input?, chosen, rejected, system?, history?} (alpaca-style, LLaMA-Factory's ranking
    files, `weaver feedback export`'s pairs.jsonl with meta.task), or {prompt, chosen, rejected} (TRL's
    standard format: the prompt is the whole user turn, no task instruction is added);
  - LLaMA-Factory sharegpt: {conversations: [...user turn last], chosen: {from: gpt, value}, rejected: {...}};
  - TRL conversational: {prompt: [{role, content}, ...], chosen: [{role: assistant, content}], rejected: [...]},
    or the implicit-prompt form {chosen: [user..., assistant], rejected: [user..., assistant]} whose turns
    before the last one are the prompt (they must be the same on both sides).
A pair is malformed when a side is missing or empty, when chosen and rejected are the same text, or when a
side is longer than max_output_tokens. The prompt is a `Record` whose output is the chosen reply, so it is
rendered by weaver.data.tasks.render_prompt like every SFT example.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from weaver.config import DataConfig
from weaver.data.formats import iter_rows
from weaver.data.readers import ReadResult, RecordProblem, apply_policy, parse_row, read_with, token_count
from weaver.data.records import Record, blank_reason, fingerprint, input_key, is_blank, normalize_text
from weaver.data.rows import Problem
from weaver.data.rows import type_name as _type_name
from weaver.data.splits import split_records
from weaver.errors import ConfigError, DataError

SIDES = ("chosen", "rejected")


@dataclass
class PreferencePair:
    """One preference: the prompt (a Record whose output is the chosen reply) and the rejected reply."""

    record: Record
    rejected: str

    @property
    def chosen(self) -> str:
        return self.record.output

    def to_dict(self) -> dict[str, Any]:
        """The flat shape read_pairs accepts back ({id, instruction, input, chosen, rejected, ...})."""
        r = self.record
        out: dict[str, Any] = {"id": r.id, "instruction": r.instruction, "input": r.input, "chosen": r.output,
                               "rejected": self.rejected}
        if r.meta.get("chat"):
            out = {"id": r.id, "prompt": r.input, "chosen": r.output, "rejected": self.rejected}
        if r.system:
            out["system"] = r.system
        if r.history:
            out["history"] = [list(t) for t in r.history]
        meta = {k: v for k, v in r.meta.items() if k != "chat"}
        if meta:
            out["meta"] = meta
        return out


def looks_like_pairs(row: Any) -> bool:
    """True for a raw row that is a preference record (it has both chosen and rejected)."""
    return isinstance(row, dict) and all(side in row for side in SIDES)


def is_pairs_file(path: str | Path) -> bool:
    """True when the first record of a data file is a preference pair (chosen + rejected).

    Raises:
        DataError: the file is missing or unreadable as a whole.
    """
    for _, row in iter_rows(Path(path)):
        if isinstance(row, Problem):
            continue
        return looks_like_pairs(row)
    return False


def _side_text(row: dict, side: str) -> str:
    """The reply text of one side: a string, a {from/role, value/content} turn, or a one-turn message list."""
    value = row.get(side)
    if value is None:
        raise RecordProblem(side, f"missing: a preference record needs both chosen and rejected (the record has: "
                            f"{', '.join(sorted(map(str, row)))})", "missing")
    if isinstance(value, list):
        if len(value) != 1:
            raise RecordProblem(side, f"expected one assistant turn, got {len(value)} turns", "turns")
        value = value[0]
    if isinstance(value, dict):
        role = value.get("role", value.get("from"))
        if role not in ("assistant", "gpt", "model", "bot"):
            raise RecordProblem(side, f"expected an assistant turn, got role {role!r}", "role")
        value = value.get("content", value.get("value"))
    if not isinstance(value, str):
        raise RecordProblem(side, f"expected a string, got {_type_name(value)}", "type")
    if is_blank(value):
        raise RecordProblem(side, blank_reason(value), "empty")
    return value


def _split_implicit(row: dict) -> dict:
    """{chosen: [turns], rejected: [turns]} (TRL's implicit prompt) -> {messages: prompt, chosen, rejected}."""
    chosen, rejected = row["chosen"], row["rejected"]
    if not isinstance(rejected, list) or len(rejected) < 2:
        raise RecordProblem("rejected", "expected the same conversation as chosen with another final reply", "turns")
    if chosen[:-1] != rejected[:-1]:
        raise RecordProblem("rejected", "its turns before the final reply differ from chosen's: both sides must "
                            "share the prompt", "turns")
    rest = {k: v for k, v in row.items() if k not in SIDES}
    return {**rest, "messages": list(chosen[:-1]), "chosen": chosen[-1], "rejected": rejected[-1]}


def _prompt_row(row: dict, chosen: str) -> dict:
    """The SFT-shaped row whose parse gives the prompt Record (output = chosen)."""
    rest = {k: v for k, v in row.items() if k not in (*SIDES, "prompt")}
    prompt = row.get("prompt")
    if isinstance(prompt, list):
        return {**rest, "messages": [*prompt, {"role": "assistant", "content": chosen}]}
    for key in ("messages", "conversations"):
        if key in rest:
            turns = rest[key]
            if not isinstance(turns, list):
                raise RecordProblem(key, f"expected a list of turns, got {_type_name(turns)}", "type")
            return {**rest, key: [*turns, {"role": "assistant", "content": chosen}]}
    if prompt is not None:
        if not isinstance(prompt, str):
            raise RecordProblem("prompt", f"expected a string or a list of turns, got {_type_name(prompt)}", "type")
        if is_blank(prompt):
            raise RecordProblem("prompt", blank_reason(prompt), "empty")
        return {**rest, "messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": chosen}]}
    return {**rest, "output": chosen}


def parse_pair(row: dict, where: str, columns: dict[str, str], default_id: str) -> PreferencePair:
    """Turn one raw row into a PreferencePair, or raise RecordProblem naming the field and the reason."""
    if isinstance(row.get("chosen"), list) and len(row["chosen"]) > 1 and "prompt" not in row:
        row = _split_implicit(row)
    chosen, rejected = _side_text(row, "chosen"), _side_text(row, "rejected")
    if normalize_text(chosen) == normalize_text(rejected):
        raise RecordProblem("rejected", "is the same text as chosen: a pair must show a preference between two "
                            "different replies", "same")
    record = parse_row(_prompt_row(row, chosen), where, columns, default_id)
    if "prompt" in row:
        record.meta.pop("prompt", None)
    return PreferencePair(record, rejected)


def _check_lengths(pair: PreferencePair, tokenizer, max_output_tokens: int | None) -> None:
    if tokenizer is None or not max_output_tokens:
        return
    for side, text in (("chosen", pair.chosen), ("rejected", pair.rejected)):
        n, exact = token_count(tokenizer, text, stop_above=max_output_tokens)
        if n > max_output_tokens:
            raise RecordProblem(side, f"is {'' if exact else 'at least '}{n} tokens, over the limit of "
                                f"{max_output_tokens} (raise --data.max_output_tokens or shorten it)", "too_long")


def read_pair_file(path: str | Path, columns: dict[str, str] | None = None, *, tokenizer=None,
                   max_output_tokens: int | None = None) -> ReadResult:
    """Read a pairs file, collecting good pairs (in `records`) and problems without raising for bad records.

    Raises:
        DataError: the file is missing, unreadable as a whole, or holds no records.
    """
    def parse(row: dict, where: str, n: int, seen: dict[str, str]) -> PreferencePair:
        pair = parse_pair(row, where, columns or {}, default_id=f"{Path(path).stem}-{n}")
        _check_lengths(pair, tokenizer, max_output_tokens)
        if "id" in row and pair.record.id in seen:
            raise RecordProblem("id", f"duplicate id {pair.record.id!r} (first at {seen[pair.record.id]})",
                                "duplicate")
        seen[pair.record.id] = where
        return pair

    return read_with(path, parse)


def read_pairs(path: str | Path, columns: dict[str, str] | None = None, on_error: str = "fail", *,
               tokenizer=None, max_output_tokens: int | None = None) -> list[PreferencePair]:
    """Read a preference-pairs file.

    Args:
        path: .jsonl/.json/.csv/.tsv/.parquet file or a datasets folder.
        columns: our field name -> the file's column name (as for SFT files).
        on_error: "fail" raises on any malformed pair; "skip" logs a summary and drops them.
        tokenizer, max_output_tokens: with both, a side longer than max_output_tokens tokens is malformed.
    Returns:
        The pairs in file order.
    Raises:
        DataError: malformed pairs (on_error="fail"), an unreadable file, or no pair at all.
    """
    return apply_policy(read_pair_file(path, columns, tokenizer=tokenizer, max_output_tokens=max_output_tokens),
                        on_error)


@dataclass
class PairSplits:
    """Train/dev/test preference pairs and a report of how they were made."""

    train: list[PreferencePair]
    dev: list[PreferencePair]
    test: list[PreferencePair]
    report: dict[str, Any] = field(default_factory=dict)


def _split(pairs: list[PreferencePair], ratios: list[float], seed: int) -> tuple[list[PreferencePair], ...]:
    """Seeded split by prompt (weaver.data.splits.split_records): pairs of one prompt stay in one part."""
    by_record = {id(p.record): p for p in pairs}
    return tuple([by_record[id(r)] for r in part] for part in split_records([p.record for p in pairs], ratios, seed))


def _dedup(pairs: list[PreferencePair]) -> tuple[list[PreferencePair], int]:
    seen, kept = set(), []
    for p in pairs:
        key = (input_key(p.record), normalize_text(p.record.instruction), normalize_text(p.chosen),
               normalize_text(p.rejected))
        if key not in seen:
            seen.add(key)
            kept.append(p)
    return kept, len(pairs) - len(kept)


def _read(path: str, data_cfg: DataConfig, tokenizer) -> list[PreferencePair]:
    return read_pairs(path, data_cfg.columns or None, data_cfg.on_error, tokenizer=tokenizer,
                      max_output_tokens=data_cfg.max_output_tokens)


def load_pair_splits(data_cfg: DataConfig, tokenizer=None) -> PairSplits:
    """Read, split by prompt, de-duplicate, leak-check and limit preference pairs (as load_splits does for SFT).

    A data.test file that holds SFT records rather than pairs is left to evaluation (the test split is empty).

    Args:
        data_cfg: files, split ratios, seed, limits and on_error.
        tokenizer: when given, a side longer than data.max_output_tokens is a malformed pair.
    Returns:
        PairSplits; report holds counts, duplicates, leaks and a fingerprint of each split.
    Raises:
        ConfigError: no training file. DataError: malformed pairs (with on_error=fail).
    """
    if not data_cfg.train:
        raise ConfigError("no training pairs: set --data.train FILE (a preference-pairs file)")
    for flag, path in (("train", data_cfg.train), ("dev", data_cfg.dev)):
        if path and not is_pairs_file(path):
            fix = ("make pairs from it with `weaver data pairs`, or set --train.objective sft" if flag == "train" else
                   "pass a pairs file, or --data.dev none to carve dev pairs from --data.train")
            raise ConfigError(f"--data.{flag} {path} holds records without chosen and rejected replies, but "
                              f"train.objective dpo trains on preference pairs: {fix}")
    train = _read(data_cfg.train, data_cfg, tokenizer)
    dev = _read(data_cfg.dev, data_cfg, tokenizer) if data_cfg.dev else None
    test = None
    if data_cfg.test:  # an SFT-shaped test file is evaluation data (weaver eval reads it), not pairs
        test = _read(data_cfg.test, data_cfg, tokenizer) if is_pairs_file(data_cfg.test) else []
    tr, dv, ts = data_cfg.split
    if dev is None and test is None:
        train, dev, test = _split(train, [tr, dv, ts], data_cfg.seed)
    elif dev is None:
        train, dev = _split(train, [tr / (tr + dv), dv / (tr + dv)], data_cfg.seed) if dv else (train, [])
    elif test is None:
        train, test = _split(train, [tr / (tr + ts), ts / (tr + ts)], data_cfg.seed) if ts else (train, [])
    parts = {"train": train, "dev": dev, "test": test}
    report: dict[str, Any] = {"files": {"train": data_cfg.train, "dev": data_cfg.dev, "test": data_cfg.test},
                              "duplicates": {}, "leaks": {}}
    for name in parts:
        parts[name], report["duplicates"][name] = _dedup(parts[name])
    train_keys = {input_key(p.record) for p in parts["train"]}
    for name in ("dev", "test"):
        leaked = [p for p in parts[name] if input_key(p.record) in train_keys]
        report["leaks"][name] = len(leaked)
        if leaked and data_cfg.drop_leaks:
            parts[name] = [p for p in parts[name] if input_key(p.record) not in train_keys]
    if data_cfg.limit_train is not None and data_cfg.limit_train < len(parts["train"]):
        order = list(range(len(parts["train"])))
        random.Random(data_cfg.seed).shuffle(order)
        parts["train"] = [parts["train"][i] for i in sorted(order[: data_cfg.limit_train])]
    if data_cfg.limit_dev is not None:
        parts["dev"] = parts["dev"][: data_cfg.limit_dev]
    report["counts"] = {name: len(part) for name, part in parts.items()}
    report["fingerprint"] = {name: _fingerprint(part) for name, part in parts.items()}
    return PairSplits(parts["train"], parts["dev"], parts["test"], report)


def _fingerprint(pairs: list[PreferencePair]) -> str:
    """SHA-256 over the prompts, chosen and rejected replies."""
    shadow = [Record(p.record.id, p.record.instruction, p.record.input, f"{p.chosen}\x1f{p.rejected}",
                     p.record.system, p.record.history) for p in pairs]
    return fingerprint(shadow)


def encode_pair(tokenizer, prompt: str, pair: PreferencePair, max_seq_len: int) -> dict[str, dict[str, list[int]]]:
    """{"chosen": encoded, "rejected": encoded}: prompt + each reply + EOS, labels -100 on the prompt.

    The prompt is cut once (weaver.data.tokenize.truncate_middle) to what the longer reply leaves of
    max_seq_len, so both sides continue exactly the same prompt tokens; replies are never cut.
    Raises:
        DataError: no EOS token, or a reply that leaves no room for the prompt in max_seq_len.
    """
    from weaver.data.tokenize import IGNORE, truncate_middle

    if tokenizer.eos_token_id is None:
        raise DataError("the tokenizer has no EOS token, so training targets cannot be terminated")
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    sides = {side: tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
             for side, text in (("chosen", pair.chosen), ("rejected", pair.rejected))}
    budget = max_seq_len - max(len(ids) for ids in sides.values())
    if budget < min(8, len(prompt_ids)):
        raise DataError(f"{pair.record.source or pair.record.id}: a reply of {max(map(len, sides.values())) - 1} "
                        f"tokens leaves no room for the prompt in --data.max_seq_len {max_seq_len}; raise it or lower "
                        "--data.max_output_tokens so such pairs are reported")
    prompt_ids = truncate_middle(prompt_ids, budget)
    return {side: {"input_ids": prompt_ids + ids, "labels": [IGNORE] * len(prompt_ids) + ids}
            for side, ids in sides.items()}
