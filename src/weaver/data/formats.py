"""File formats: turn a data file into raw rows, each with its location ("file:line") or a problem.

    for where, row in iter_rows(Path("train.jsonl")):   # row is a dict, or a Problem for a broken line
        ...

Supported: JSON Lines (.jsonl/.ndjson), JSON arrays or single objects (.json; a .json file holding
JSON Lines also works), CSV (.csv), TSV (.tsv/.tab), Parquet (.parquet/.pq) and local Hugging Face
`datasets` folders (written by `Dataset.save_to_disk`; needs `pip install datasets`). UTF-8 with or
without a byte-order mark. JSON array elements and CSV rows report the line they start on.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from weaver.errors import DataError

JSONL = (".jsonl", ".ndjson", ".jsonlines")
JSON = (".json",)
CSV = (".csv",)
TSV = (".tsv", ".tab")
PARQUET = (".parquet", ".pq")
SUPPORTED = JSONL + JSON + CSV + TSV + PARQUET


@dataclass
class Problem:
    """One thing wrong with one record: where, which field, and why."""

    where: str
    field: str | None
    reason: str
    kind: str = "invalid"
    """A short category for summaries: invalid_json, missing, empty, type, encoding, duplicate, ..."""

    def __str__(self) -> str:
        return f"{self.where}: {self.field}: {self.reason}" if self.field else f"{self.where}: {self.reason}"


Row = tuple[str, "dict[str, Any] | Problem"]


def iter_rows(path: Path) -> Iterator[Row]:
    """Yield (location, raw dict or Problem) for every record in a data file or datasets folder.

    Args:
        path: the data file or folder.
    Returns:
        An iterator over (location "file:line", row dict | Problem).
    Raises:
        DataError: the file is missing, of an unknown type, or unreadable as a whole.
    """
    if path.is_dir():
        yield from _iter_datasets_folder(path)
        return
    if not path.is_file():
        raise DataError(f"data file {str(path)!r} does not exist; check the path given to --data.train/dev/test")
    suffix = path.suffix.lower()
    if suffix in JSONL:
        yield from _iter_jsonl(path, path.read_bytes())
    elif suffix in JSON:
        yield from _iter_json(path)
    elif suffix in CSV + TSV:
        yield from _iter_csv(path, "\t" if suffix in TSV else ",")
    elif suffix in PARQUET:
        yield from _iter_parquet(path)
    else:
        raise DataError(
            f"{path}: unknown data file type {suffix or '(none)'!r}; use one of {', '.join(SUPPORTED)} "
            "or a Hugging Face datasets folder"
        )


def _iter_jsonl(path: Path, data: bytes) -> Iterator[Row]:
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        where = f"{path}:{lineno}"
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield where, Problem(where, None, f"bytes that are not UTF-8 at column {exc.start + 1} "
                                 "(save the file as UTF-8)", "encoding")
            continue
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            _check_unicode(obj, line)
        except json.JSONDecodeError as exc:
            yield where, Problem(where, None, f"invalid JSON ({exc.msg} at column {exc.colno})", "invalid_json")
            continue
        except (RecursionError, ValueError) as exc:
            kind = "encoding" if isinstance(exc, UnicodeError) else "invalid_json"
            yield where, Problem(where, None, _beyond_limits(exc), kind)
            continue
        yield where, obj if isinstance(obj, dict) else _not_object(where, obj)


def _check_unicode(obj: Any, raw: str) -> None:
    """Raise UnicodeEncodeError when a \\ud800-\\udfff escape in raw left an unpaired surrogate in obj."""
    if "\\ud" in raw.lower():
        json.dumps(obj, ensure_ascii=False).encode("utf-8")


def _beyond_limits(exc: Exception) -> str:
    """Why JSON that parses still cannot be used: too deeply nested, a huge integer, a lone surrogate."""
    if isinstance(exc, RecursionError):
        return "invalid JSON (nested too deeply to read)"
    if isinstance(exc, UnicodeError):
        return "text holds an unpaired UTF-16 surrogate escape (\\ud800-\\udfff), which is not valid Unicode"
    if "digits" in str(exc):  # Python refuses integers longer than sys.get_int_max_str_digits()
        return "invalid JSON (a number with thousands of digits)"
    return f"invalid JSON ({exc})"


def _not_object(where: str, obj: Any) -> Problem:
    return Problem(where, None, f"expected a JSON object {{...}}, got {_type_name(obj)}", "type")


def _type_name(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def _decode_whole(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: bytes that are not UTF-8; save the file as UTF-8") from None


def _iter_json(path: Path) -> Iterator[Row]:
    text = _decode_whole(path)
    start = len(text) - len(text.lstrip())
    if start == len(text):
        return
    if text[start] != "[":
        try:
            obj = json.loads(text)
            _check_unicode(obj, text)
        except json.JSONDecodeError as exc:
            if exc.msg == "Extra data":  # JSON Lines saved as .json
                yield from _iter_jsonl(path, path.read_bytes())
                return
            raise DataError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg} at column {exc.colno})") from None
        except (RecursionError, ValueError) as exc:
            raise DataError(f"{path}:{text.count(chr(10), 0, start) + 1}: {_beyond_limits(exc)}") from None
        rows = obj.get("data") if isinstance(obj, dict) else None
        if not isinstance(rows, list):  # one record in a .json file
            where = f"{path}:{text.count(chr(10), 0, start) + 1}"
            yield where, obj if isinstance(obj, dict) else _not_object(where, obj)
            return
        for i, row in enumerate(rows, start=1):  # {"data": [...]} wrapper: report the item number
            where = f"{path}:item {i}"
            yield where, row if isinstance(row, dict) else _not_object(where, row)
        return
    yield from _iter_json_array(path, text, start)


def _iter_json_array(path: Path, text: str, start: int) -> Iterator[Row]:
    """Decode array elements one by one so each reports the line it starts on."""
    decoder = json.JSONDecoder()
    i = start + 1
    n = len(text)
    while True:
        while i < n and text[i] in " \t\r\n,":
            i += 1
        if i >= n:
            raise DataError(f"{path}:{text.count(chr(10)) + 1}: invalid JSON (the array is not closed with ']')")
        if text[i] == "]":
            return
        line = text.count("\n", 0, i) + 1
        where = f"{path}:{line}"
        try:
            obj, end = decoder.raw_decode(text, i)
        except json.JSONDecodeError as exc:
            raise DataError(
                f"{where}: invalid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
                "a broken JSON array cannot be read past the error: fix it, or convert the file to JSON Lines"
            ) from None
        except (RecursionError, ValueError) as exc:
            raise DataError(f"{where}: {_beyond_limits(exc)}; a JSON array cannot be read past it") from None
        try:
            _check_unicode(obj, text[i:end])
        except ValueError as exc:
            yield where, Problem(where, None, _beyond_limits(exc), "encoding")
            i = end
            continue
        i = end
        yield where, obj if isinstance(obj, dict) else _not_object(where, obj)


def _iter_csv(path: Path, delimiter: str) -> Iterator[Row]:
    text = _decode_whole(path)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        return
    header = [h.strip() for h in header]
    if len(set(header)) != len(header) or "" in header:
        raise DataError(f"{path}:1: the header row has empty or repeated column names: {header}")
    line = reader.line_num + 1
    for cells in reader:
        where = f"{path}:{line}"
        line = reader.line_num + 1
        if not any(c.strip() for c in cells):
            continue
        if len(cells) != len(header):
            yield where, Problem(where, None, f"row has {len(cells)} fields but the header has {len(header)} "
                                 "(check quoting and delimiters)", "columns")
            continue
        yield where, dict(zip(header, cells))


def _iter_parquet(path: Path) -> Iterator[Row]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path}: cannot read as Parquet ({exc})") from None
    for i, row in enumerate(table.to_pylist(), start=1):
        yield f"{path}:row {i}", row


def _iter_datasets_folder(path: Path) -> Iterator[Row]:
    try:
        import datasets
    except ImportError:
        raise DataError(
            f"{path} is a folder; reading Hugging Face datasets folders needs `pip install datasets` "
            "(or export the data to JSON Lines)"
        ) from None
    try:
        ds = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise DataError(f"{path}: not a folder written by datasets' save_to_disk ({exc})") from None
    if isinstance(ds, datasets.DatasetDict):
        if "train" not in ds and len(ds) != 1:
            raise DataError(f"{path} holds splits {sorted(ds)}; point at one of them, e.g. {path / sorted(ds)[0]}")
        ds = ds["train"] if "train" in ds else next(iter(ds.values()))
    for i, row in enumerate(ds, start=1):
        yield f"{path}:row {i}", dict(row)
