"""Raw rows shared by the file-format readers: Problem, the size limit of one record, and bounded reading.

    with open_data_file(path) as f:                 # DataError for a missing file, a FIFO, a device, ...
        for lineno, line in physical_lines(f):      # bytes, or TooLong for a line over MAX_RECORD_BYTES
            ...

Every reader (weaver.data.formats, .tables, .jsontext) reads a file piece by piece and never holds more
than one record (at most MAX_RECORD_BYTES) plus a read chunk, so a huge or endless file cannot exhaust
memory: a record over the limit is reported at its `file:line` and reading goes on after it.
"""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from weaver.errors import DataError

MAX_RECORD_BYTES = 32 * 2**20
"""The longest record read (a JSONL line, a CSV/TSV record, a JSON array element): 32 MiB, millions of
tokens, far past any model's context. A longer one is a malformed record, so memory stays bounded by it."""
MAX_JSON_DOCUMENT_BYTES = 256 * 2**20
"""The largest .json file that is one JSON value other than an array (e.g. {"data": [...]}); arrays and
JSON Lines are read record by record and have no limit."""
CHUNK = 2**20
"""Bytes read at a time."""
BOM = b"\xef\xbb\xbf"


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


@dataclass(frozen=True)
class TooLong:
    """A line longer than MAX_RECORD_BYTES, read through without being kept: only its size."""

    size: int


def too_long_reason(size: int, *, at_least: bool = False) -> str:
    """The Problem text for a record of `size` bytes (or characters) over MAX_RECORD_BYTES."""
    amount = f"{'at least ' if at_least else ''}{size / 2**20:.1f} MiB"
    return (f"the record is {amount}, over the limit of {MAX_RECORD_BYTES // 2**20} MiB for one record "
            "(no model's context holds that much): split or shorten it")


def open_data_file(path: Path) -> BinaryIO:
    """Open a data file for binary reading.

    Raises:
        DataError: the path does not exist, is not a regular file (a FIFO, a device, a socket), or cannot be
            opened; FIFOs are refused before opening, since opening one blocks until something writes to it.
    """
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise DataError(f"data file {str(path)!r} does not exist; check the path given to --data.train/dev/test"
                        ) from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if not stat.S_ISREG(mode):
        kind = ("a named pipe (FIFO)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
                else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a file")
        raise DataError(f"{path} is {kind}, not a regular file; write the data to a file and pass that path")
    try:
        # unbuffered: the readers read 1 MiB chunks themselves, and a BufferedReader's copies made a 2 GiB
        # line take 8 s to read through instead of 0.5 s; the caller closes the file (iter_rows' `with`)
        return open(path, "rb", buffering=0)  # noqa: SIM115
    except OSError as exc:
        raise DataError(f"{path}: cannot open it ({exc.strerror or exc})") from None


def physical_lines(f: BinaryIO, limit: int = MAX_RECORD_BYTES) -> Iterator[tuple[int, bytes | TooLong]]:
    """Yield (line number, bytes of the line with its b"\\n") for every line of f, split at b"\\n" only.

    A line over `limit` bytes is read through in chunks, never held whole, and yielded as TooLong(size).
    (Own buffering: BufferedReader.readline(size) copies in 8 KiB steps, 20x slower on a long line.)
    """
    buf, start, seen, lineno, eof = bytearray(), 0, 0, 0, False
    while True:
        nl = buf.find(b"\n", seen)
        if nl >= 0:
            lineno += 1
            yield lineno, TooLong(nl + 1 - start) if nl - start > limit else bytes(buf[start:nl + 1])
            start = seen = nl + 1
            continue
        seen = len(buf)
        if seen - start > limit:
            lineno += 1
            size, rest = _read_through_line(f, seen - start)
            yield lineno, TooLong(size)
            buf, start, seen = bytearray(rest), 0, 0
            continue
        if eof:
            if start < len(buf):
                yield lineno + 1, bytes(buf[start:])
            return
        del buf[:start]  # once per chunk read: linear in the file's size
        seen, start = seen - start, 0
        data = f.read(CHUNK)
        eof = not data
        buf += data


def _read_through_line(f: BinaryIO, size: int) -> tuple[int, bytes]:
    """Read to the end of the current line: (its total size, the bytes after its newline)."""
    chunk = bytearray(CHUNK)  # one buffer reused: no fresh megabyte (and its page faults) per read
    while n := f.readinto(chunk):
        nl = chunk.find(b"\n", 0, n)
        if nl >= 0:
            return size + nl + 1, bytes(chunk[nl + 1:n])
        size += n
    return size, b""


def check_unicode(obj: Any, raw: str) -> None:
    """Raise UnicodeEncodeError when a \\ud800-\\udfff escape in raw left an unpaired surrogate in obj."""
    if "\\ud" in raw.lower():
        json.dumps(obj, ensure_ascii=False).encode("utf-8")


def beyond_limits(exc: Exception) -> str:
    """Why JSON that parses still cannot be used: too deeply nested, a huge integer, a lone surrogate."""
    if isinstance(exc, RecursionError):
        return "invalid JSON (nested too deeply to read)"
    if isinstance(exc, UnicodeError):
        return "text holds an unpaired UTF-16 surrogate escape (\\ud800-\\udfff), which is not valid Unicode"
    if "digits" in str(exc):  # Python refuses integers longer than sys.get_int_max_str_digits()
        return "invalid JSON (a number with thousands of digits)"
    return f"invalid JSON ({exc})"


def type_name(value: Any) -> str:
    """"an object", "a list", "a string", ... for messages about a value of the wrong type."""
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def not_object(where: str, obj: Any) -> Problem:
    """The Problem for a JSON value that is not an object where a record was expected."""
    return Problem(where, None, f"expected a JSON object {{...}}, got {type_name(obj)}", "type")
