"""Read examples from data files into Records, reporting every malformed record by file, line and field.

    records = read_records("train.jsonl")                               # raises DataError on bad records
    records = read_records("data.csv", columns={"input": "article", "output": "summary"}, on_error="skip")

Record shapes (detected per record; LLaMA-Factory alpaca and sharegpt files load as they are):
  - flat / alpaca: {instruction, input, output, system?, history?: [[user, assistant], ...]}
  - sharegpt: {conversations: [{from: system|human|gpt, value}], system?}
  - OpenAI messages: {messages: [{role: system|user|assistant, content}]}
Optional everywhere: id, references (list of extra reference outputs), meta (object); other columns are
kept in `meta`. `columns` maps our field names to the file's (e.g. {"output": "summary"}).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from weaver.data.formats import iter_rows
from weaver.data.records import Record, blank_reason, is_blank
from weaver.data.rows import Problem
from weaver.data.rows import type_name as _type_name
from weaver.errors import ConfigError, DataError

log = logging.getLogger(__name__)

FIELDS = ("id", "instruction", "input", "output", "system", "history", "references", "meta", "messages",
          "conversations")
ROLES = {"user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant", "model": "assistant",
         "bot": "assistant", "system": "system"}
MAX_LISTED = 10
SKIP_HINT = "set --data.on_error skip to drop such records"
TOKEN_CHUNK = 2**16
"""Characters tokenized at once when counting a long text's tokens: bounds the tokenizer's memory."""


class RecordProblem(Exception):
    """Raised inside record parsing; turned into a Problem at the record's location."""

    def __init__(self, field: str | None, reason: str, kind: str):
        super().__init__(reason)
        self.field, self.reason, self.kind = field, reason, kind


@dataclass
class ReadResult:
    """Everything reading one file produced: good records, problems, and how many rows were seen."""

    path: str
    records: list[Record] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    rows: int = 0

    def summary(self) -> str:
        """"12 of 500 records in f.jsonl are malformed (7 empty, 5 invalid_json)"."""
        kinds = Counter(p.kind for p in self.problems)
        detail = ", ".join(f"{n} {k}" for k, n in kinds.most_common())
        return f"{len(self.problems)} of {self.rows} records in {self.path} are malformed ({detail})"


def read_records(
    path: str | Path,
    columns: dict[str, str] | None = None,
    on_error: str = "fail",
    *,
    tokenizer=None,
    max_output_tokens: int | None = None,
) -> list[Record]:
    """Read a data file (or datasets folder) into Records.

    Args:
        path: .jsonl/.json/.csv/.tsv/.parquet file or a datasets folder.
        columns: our field name -> the file's column name.
        on_error: "fail" raises on any malformed record; "skip" logs a summary and drops them.
        tokenizer: when given with max_output_tokens, outputs longer than that are malformed.
        max_output_tokens: token limit on one output.
    Returns:
        The records in file order.
    Raises:
        DataError: malformed records (with on_error="fail"), an unreadable file, or no records at all.
    """
    result = read_file(path, columns, tokenizer=tokenizer, max_output_tokens=max_output_tokens)
    return apply_policy(result, on_error)


def apply_policy(result: ReadResult, on_error: str) -> list[Record]:
    """Raise (fail) or log and drop (skip) the problems of a ReadResult; return the good records.

    Raises:
        DataError: with on_error="fail" and problems, or when no good record remains.
    """
    check_problems(result, on_error, len(result.records))
    return result.records


def check_problems(result: ReadResult, on_error: str, good: int) -> None:
    """apply_policy's rule for a read that counted its `good` records instead of keeping them (a streamed file).

    Raises:
        DataError: with on_error="fail" and problems, or when good is 0.
    """
    if on_error not in ("fail", "skip"):
        raise ConfigError(f"--data.on_error {on_error!r} is not one of fail, skip")
    if result.problems and on_error == "fail":
        raise DataError(problems_message(result))
    if result.problems:
        log.warning("%s; skipped them:\n  %s", result.summary(),
                    "\n  ".join(str(p) for p in result.problems[:MAX_LISTED]))
    if not good:
        raise DataError(f"{result.path}: no usable records ({result.rows} rows read)")


def problems_message(result: ReadResult) -> str:
    """The DataError text: a summary, the first problems with file:line, and how to skip them."""
    listed = "\n  ".join(str(p) for p in result.problems[:MAX_LISTED])
    more = len(result.problems) - MAX_LISTED
    tail = f"\n  ... and {more} more" if more > 0 else ""
    return f"{result.summary()}:\n  {listed}{tail}\n{SKIP_HINT}"


def read_file(
    path: str | Path, columns: dict[str, str] | None = None, *, tokenizer=None, max_output_tokens: int | None = None
) -> ReadResult:
    """Read a file, collecting good records and problems without raising for record-level problems.

    Raises:
        DataError: the file is missing or unreadable as a whole.
    """
    _check_columns(columns or {})

    def parse(row: dict, where: str, n: int, seen: dict[str, str]) -> Record:
        record = parse_row(row, where, columns or {}, default_id=f"{Path(path).stem}-{n}")
        _check_length(record, tokenizer, max_output_tokens)
        _check_id(record, row, seen)
        return record

    return read_with(path, parse)


def read_with(path: str | Path, parse) -> ReadResult:
    """The one row loop of every reader: `parse(row, where, row_number, seen_ids)` returns an item or raises
    RecordProblem, which becomes a Problem at that file:line; bad rows never stop the read.

    Raises:
        DataError: the file is missing, unreadable as a whole, or holds no records.
    """
    result = ReadResult(str(path))
    for item in iter_with(path, parse):
        result.rows += 1
        (result.problems if isinstance(item, Problem) else result.records).append(item)
    return result


def iter_with(path: str | Path, parse) -> Iterator:
    """read_with's row loop, lazily: each row's parsed item or its Problem, in file order (one per row).

    Raises:
        DataError: the file is missing, unreadable as a whole, or holds no records.
    """
    path = Path(path)
    rows, seen_ids = 0, {}
    for where, row in iter_rows(path):
        rows += 1
        if isinstance(row, Problem):
            yield row
            continue
        try:
            item = parse(row, where, rows, seen_ids)
        except RecordProblem as exc:
            item = Problem(where, exc.field, exc.reason, exc.kind)
        yield item
    if rows == 0:
        raise DataError(f"{path}: the file holds no records")


def _check_columns(columns: dict[str, str]) -> None:
    for ours, theirs in columns.items():
        if ours not in FIELDS:
            raise ConfigError(f"--data.columns: unknown field {ours!r}; map one of {', '.join(FIELDS)}")
        if not isinstance(theirs, str) or not theirs:
            raise ConfigError(f"--data.columns: {ours!r} must map to a column name, got {theirs!r}")


def _check_id(record: Record, row: dict, seen: dict[str, str]) -> None:
    if "id" not in row:
        return
    if record.id in seen:
        raise RecordProblem("id", f"duplicate id {record.id!r} (first at {seen[record.id]})", "duplicate")
    seen[record.id] = record.source


def _check_length(record: Record, tokenizer, max_output_tokens: int | None) -> None:
    if tokenizer is None or not max_output_tokens:
        return
    n, exact = token_count(tokenizer, record.output, stop_above=max_output_tokens)
    if n > max_output_tokens:
        raise RecordProblem("output", f"is {'' if exact else 'at least '}{n} tokens, over the limit of "
                            f"{max_output_tokens} (raise --data.max_output_tokens or shorten it)", "too_long")


def token_count(tokenizer, text: str, stop_above: int | None = None) -> tuple[int, bool]:
    """The number of tokens in text, tokenizing TOKEN_CHUNK characters at a time so that a long text never
    costs more memory than one chunk (cut before a space, so words are not split; exact but for a token or so
    per chunk in text without spaces).

    Args:
        tokenizer: a Hugging Face tokenizer.
        text: the text.
        stop_above: stop counting once the count passes this (the count is then a lower bound).
    Returns:
        (count, exact): exact is False when counting stopped early.
    """
    n, i = 0, 0
    while i < len(text):
        j = min(len(text), i + TOKEN_CHUNK)
        if j < len(text):
            cut = text.rfind(" ", i + TOKEN_CHUNK // 2, j)
            j = cut if cut > i else j
        n += len(tokenizer(text[i:j], add_special_tokens=False)["input_ids"])
        i = j
        if stop_above is not None and n > stop_above:
            return n, i >= len(text)
    return n, True


def parse_row(row: dict[str, Any], where: str, columns: dict[str, str], default_id: str) -> Record:
    """Turn one raw row into a Record, or raise RecordProblem naming the field and the reason."""
    row = _map_columns(row, columns)
    if "messages" in row or "conversations" in row:
        key = "messages" if "messages" in row else "conversations"
        record = _parse_chat(row, key)
    else:
        record = _parse_flat(row)
    record.id = _id(row, default_id)
    record.references = _str_list(row, "references")
    record.meta = {**_meta(row), **record.meta}
    record.source = where
    return record


def _map_columns(row: dict[str, Any], columns: dict[str, str]) -> dict[str, Any]:
    if not columns:
        return row
    out = {k: v for k, v in row.items() if k not in columns.values()}
    for ours, theirs in columns.items():
        if theirs not in row:
            if ours in ("output", "input"):
                raise RecordProblem(theirs, f"column {theirs!r} (mapped to {ours}) is missing", "missing")
            continue
        out[ours] = row[theirs]
    return out


def _text(row: dict, name: str, required: bool = False) -> str:
    value = row.get(name)
    if value is None:
        if required:
            have = ", ".join(sorted(map(str, row))) or "nothing"
            raise RecordProblem(name, f"missing (the record has: {have}); map yours with "
                                f"--data.columns '{{\"{name}\": \"<column>\"}}'", "missing")
        return ""
    if not isinstance(value, str):
        raise RecordProblem(name, f"expected a string, got {_type_name(value)}", "type")
    if required and is_blank(value):
        raise RecordProblem(name, blank_reason(value), "empty")
    return value


def _parse_flat(row: dict) -> Record:
    output = _text(row, "output", required=True)
    instruction, text = _text(row, "instruction"), _text(row, "input")
    if is_blank(instruction) and is_blank(text):
        raise RecordProblem("input", "both instruction and input are empty: nothing to ask the model", "empty")
    system = _text(row, "system") or None
    return Record(id="", instruction=instruction, input=text, output=output, system=system,
                  history=_history(row.get("history")))


def _history(value: Any) -> list[tuple[str, str]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise RecordProblem("history", f"expected a list of [user, assistant] pairs, got {_type_name(value)}", "type")
    turns = []
    for i, pair in enumerate(value):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2 or not all(isinstance(t, str) for t in pair):
            raise RecordProblem(f"history[{i}]", "expected a [user, assistant] pair of strings", "type")
        turns.append((pair[0], pair[1]))
    return turns


def _turns(row: dict, key: str) -> list[tuple[str, str]]:
    value = row[key]
    if not isinstance(value, list) or not value:
        raise RecordProblem(key, f"expected a non-empty list of turns, got {_type_name(value)}", "type")
    out = []
    for i, turn in enumerate(value):
        name = f"{key}[{i}]"
        if not isinstance(turn, dict):
            raise RecordProblem(name, f"expected an object, got {_type_name(turn)}", "type")
        role = turn.get("role", turn.get("from"))
        content = turn.get("content", turn.get("value"))
        if role not in ROLES:
            raise RecordProblem(name, f"role {role!r} is not supported (use system, user/human, assistant/gpt)",
                                "role")
        if not isinstance(content, str):
            raise RecordProblem(name, f"content must be a string, got {_type_name(content)}", "type")
        out.append((ROLES[role], content))
    return out


def _parse_chat(row: dict, key: str) -> Record:
    turns = _turns(row, key)
    system = _text(row, "system") or None
    if turns[0][0] == "system":
        system = turns.pop(0)[1]
    if len(turns) < 2 or len(turns) % 2:
        raise RecordProblem(key, "expected alternating user/assistant turns ending with the assistant's reply", "turns")
    for i, (role, _) in enumerate(turns):
        if role != ("user" if i % 2 == 0 else "assistant"):
            raise RecordProblem(f"{key}[{i}]", f"expected a {'user' if i % 2 == 0 else 'assistant'} turn here, "
                                f"got {role}", "turns")
    output = turns[-1][1]
    if is_blank(output):
        raise RecordProblem(f"{key}[{len(turns) - 1}]", f"the final assistant reply {blank_reason(output)}", "empty")
    if is_blank(turns[-2][1]):
        raise RecordProblem(f"{key}[{len(turns) - 2}]", f"the final user turn {blank_reason(turns[-2][1])}", "empty")
    history = [(turns[i][1], turns[i + 1][1]) for i in range(0, len(turns) - 2, 2)]
    return Record(id="", instruction="", input=turns[-2][1], output=output, system=system, history=history,
                  meta={"chat": True})


def _id(row: dict, default: str) -> str:
    value = row.get("id")
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise RecordProblem("id", f"expected a string or integer, got {_type_name(value)}", "type")
    if isinstance(value, str) and is_blank(value):
        raise RecordProblem("id", blank_reason(value), "empty")
    return str(value)


def _str_list(row: dict, name: str) -> list[str]:
    value = row.get(name)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RecordProblem(name, "expected a list of strings", "type")
    return list(value)


def _meta(row: dict) -> dict[str, Any]:
    value = row.get("meta")
    if value is not None and not isinstance(value, dict):
        raise RecordProblem("meta", f"expected an object, got {_type_name(value)}", "type")
    meta = dict(value or {})
    for key, extra in row.items():
        if key not in FIELDS and key not in meta and key != "tools":
            meta[key] = extra
    return meta
