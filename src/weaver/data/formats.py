"""File formats: turn a data file into raw rows, each with its location ("file:line") or a problem.

    for where, row in iter_rows(Path("train.jsonl")):   # row is a dict, or a Problem for a broken line
        ...

Supported: JSON Lines (.jsonl/.ndjson), JSON arrays or single objects (.json; a .json file holding
JSON Lines also works), CSV (.csv), TSV (.tsv/.tab), Parquet (.parquet/.pq) and local Hugging Face
`datasets` folders (written by `Dataset.save_to_disk`; needs `pip install datasets`). UTF-8 with or
without a byte-order mark. JSON array elements and CSV rows report the line they start on.

Files are streamed, never read whole: JSON Lines line by line, JSON arrays element by element (in linear
time), CSV/TSV record by record (weaver.data.tables), Parquet in batches. One record may be up to
MAX_RECORD_BYTES (32 MiB); a longer one is a malformed record at its line. A .json file holding one
value other than an array (e.g. {"data": [...]}) is read whole, up to MAX_JSON_DOCUMENT_BYTES (256 MiB).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from weaver.data.jsontext import JsonBroken, JsonText, TooBig
from weaver.data.rows import (
    BOM,
    MAX_JSON_DOCUMENT_BYTES,
    MAX_RECORD_BYTES,
    Problem,
    Row,
    TooLong,
    beyond_limits,
    check_unicode,
    not_object,
    open_data_file,
    physical_lines,
    too_long_reason,
)
from weaver.data.tables import iter_table
from weaver.errors import DataError

__all__ = ["Problem", "Row", "SUPPORTED", "iter_rows"]

JSONL = (".jsonl", ".ndjson", ".jsonlines")
JSON = (".json",)
CSV = (".csv",)
TSV = (".tsv", ".tab")
PARQUET = (".parquet", ".pq")
SUPPORTED = JSONL + JSON + CSV + TSV + PARQUET
PARQUET_BATCH = 1024
"""Parquet rows decoded at a time."""


def iter_rows(path: Path) -> Iterator[Row]:
    """Yield (location, raw dict or Problem) for every record in a data file or datasets folder.

    Args:
        path: the data file or folder.
    Returns:
        An iterator over (location "file:line", row dict | Problem).
    Raises:
        DataError: the file is missing, not a regular file, of an unknown type, or unreadable as a whole.
    """
    if path.is_dir():
        yield from _iter_datasets_folder(path)
        return
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED:
        if not path.exists():
            open_data_file(path)  # raises "does not exist"
        raise DataError(
            f"{path}: unknown data file type {suffix or '(none)'!r}; use one of {', '.join(SUPPORTED)} "
            "or a Hugging Face datasets folder"
        )
    if suffix in PARQUET:
        open_data_file(path).close()  # the same refusals (missing, FIFO, ...) as the other formats
        yield from _iter_parquet(path)
        return
    with open_data_file(path) as f:
        if suffix in JSONL:
            yield from _iter_jsonl(path, f)
        elif suffix in JSON:
            yield from _iter_json(path, f)
        else:
            yield from iter_table(path, f, "\t" if suffix in TSV else ",")


def _iter_jsonl(path: Path, f: BinaryIO) -> Iterator[Row]:
    for lineno, raw in physical_lines(f):
        where = f"{path}:{lineno}"
        if isinstance(raw, TooLong):
            yield where, Problem(where, None, too_long_reason(raw.size), "too_long")
            continue
        if lineno == 1 and raw.startswith(BOM):
            raw = raw[3:]
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
            check_unicode(obj, line)
        except json.JSONDecodeError as exc:
            yield where, Problem(where, None, f"invalid JSON ({exc.msg} at column {exc.colno})", "invalid_json")
            continue
        except (RecursionError, ValueError) as exc:
            kind = "encoding" if isinstance(exc, UnicodeError) else "invalid_json"
            yield where, Problem(where, None, beyond_limits(exc), kind)
            continue
        yield where, obj if isinstance(obj, dict) else not_object(where, obj)


def _iter_json(path: Path, f: BinaryIO) -> Iterator[Row]:
    text = JsonText(path, f)
    first = text.skip()
    if not first:
        return
    if first == "[":
        text.advance(1)
        yield from _iter_json_array(path, text)
        return
    line = text.line
    obj = _json_document(path, text)
    if text.skip():  # more values after the first: JSON Lines saved as .json
        f.seek(0)
        yield from _iter_jsonl(path, f)
        return
    rows = obj.get("data") if isinstance(obj, dict) else None
    if not isinstance(rows, list):  # one record in a .json file
        where = f"{path}:{line}"
        yield where, obj if isinstance(obj, dict) else not_object(where, obj)
        return
    for i, row in enumerate(rows, start=1):  # {"data": [...]} wrapper: report the item number
        where = f"{path}:item {i}"
        yield where, row if isinstance(row, dict) else not_object(where, row)


def _json_document(path: Path, text: JsonText) -> Any:
    """The first JSON value of a .json file that is not an array (read whole, up to MAX_JSON_DOCUMENT_BYTES)."""
    line = text.line
    try:
        obj, raw = text.decode(MAX_JSON_DOCUMENT_BYTES)
        check_unicode(obj, raw)
    except JsonBroken as exc:
        raise DataError(f"{path}:{exc.line}: invalid JSON ({exc.msg} at column {exc.col})") from None
    except TooBig:
        raise DataError(f"{path}: a JSON document over {MAX_JSON_DOCUMENT_BYTES // 2**20} MiB is not read whole; "
                        "save it as JSON Lines (one record per line) or as a JSON array of records, which are "
                        "read record by record") from None
    except (RecursionError, ValueError) as exc:
        raise DataError(f"{path}:{line}: {beyond_limits(exc)}") from None
    return obj


def _iter_json_array(path: Path, text: JsonText) -> Iterator[Row]:
    """Decode array elements one by one, each reporting the line it starts on."""
    while True:
        char = text.skip(commas=True)
        if not char:
            raise DataError(f"{path}:{text.line}: invalid JSON (the array is not closed with ']')")
        if char == "]":
            return
        where = f"{path}:{text.line}"
        try:
            obj, raw = text.decode(MAX_RECORD_BYTES)
        except JsonBroken as exc:
            raise DataError(
                f"{where}: invalid JSON ({exc}); "
                "a broken JSON array cannot be read past the error: fix it, or convert the file to JSON Lines"
            ) from None
        except TooBig:
            raise DataError(f"{where}: an array element over the limit of {MAX_RECORD_BYTES // 2**20} MiB for one "
                            "record; a JSON array cannot be read past it: shorten it, or convert the file to JSON "
                            "Lines, where such a record is skipped with --data.on_error skip") from None
        except (RecursionError, ValueError) as exc:
            raise DataError(f"{where}: {beyond_limits(exc)}; a JSON array cannot be read past it") from None
        try:
            check_unicode(obj, raw)
        except ValueError as exc:
            yield where, Problem(where, None, beyond_limits(exc), "encoding")
            continue
        yield where, obj if isinstance(obj, dict) else not_object(where, obj)


def _iter_parquet(path: Path) -> Iterator[Row]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    i = 0
    try:  # batch by batch, so memory holds one batch of rows, not the whole table
        for batch in pq.ParquetFile(path).iter_batches(batch_size=PARQUET_BATCH):
            for row in batch.to_pylist():
                i += 1
                yield f"{path}:row {i}", row
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path}: cannot read as Parquet ({exc})") from None


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
