"""CSV and TSV files, read record by record with Python's csv module.

    for where, row in iter_table(path, f, ","):    # f opened in binary mode; row: dict or Problem
        ...

CSV: the first row names the columns; fields may be quoted ("a, b"), a quoted field may span lines and
doubles its quotes (""). A record reports the line it starts on. A quote that is never closed, or a
quoted field that runs over several lines and leaves the row with the wrong number of fields, is the
sign of a stray quote swallowing the rows after it, and so are a multi-line field closed by a quote with
more text after it, and one of SWALLOW_LINES lines or more that mostly read as rows themselves: that row is
reported at its line and the lines it swallowed are read again as rows of their own, so every row counts.
TSV (.tsv/.tab): one record per line, fields separated by tabs, no quoting: quotes are kept as written
(a warning says how many fields look quoted). A record may be up to MAX_RECORD_BYTES long; a longer one
is reported at its line and skipped (csv.field_size_limit is raised to that limit for the process).
"""

from __future__ import annotations

import csv
import logging
import re
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from weaver.data.rows import MAX_RECORD_BYTES, Problem, Row, TooLong, physical_lines, too_long_reason
from weaver.errors import DataError

log = logging.getLogger(__name__)

_LONE_CR = re.compile(r"(?<=\r)(?!\n)")
"""Where a line ending in a lone carriage return splits (old Mac files), as csv's own newline='' reading."""


SWALLOW_LINES = 10
"""A quoted field with at least this many lines inside it, most of them shaped like rows, swallowed them."""
ROW_LIKE_SHARE = 0.8


class RecordTooLong(Exception):
    """The record starting at `start` is over MAX_RECORD_BYTES (`size` so far)."""

    def __init__(self, start: int, size: int, at_least: bool):
        super().__init__(start)
        self.start, self.size, self.at_least = start, size, at_least


class _Lines:
    """The text lines of a table for csv.reader, remembering the current record's lines so they can be
    read again; a record over MAX_RECORD_BYTES raises RecordTooLong (csv.reader then starts afresh)."""

    def __init__(self, path: Path, f: BinaryIO):
        self._path = path
        self._raw = physical_lines(f)
        self._queue: deque[tuple[int, str | TooLong]] = deque()
        self._number = 0
        self.taken: list[tuple[int, str]] = []
        """(line number, text) of the lines handed out since start_record()."""
        self.size = 0
        self.hit_end = False
        """True when the end of the file was reached inside the current record (an unclosed quote)."""

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        if not self._queue:
            self._read()
        if not self._queue:
            self.hit_end = True
            raise StopIteration
        n, text = self._queue.popleft()
        if isinstance(text, TooLong):
            if self.taken:  # the record it belongs to is the problem; the long line comes back on its own
                self._queue.appendleft((n, text))
                raise RecordTooLong(self.taken[0][0], self.size + text.size, at_least=True)
            raise RecordTooLong(n, text.size, at_least=False)
        self.taken.append((n, text))
        self.size += len(text)
        if self.size > MAX_RECORD_BYTES:
            raise RecordTooLong(self.taken[0][0], self.size, at_least=True)
        return text

    def start_record(self) -> None:
        """Forget the lines of the record just read."""
        self.taken, self.size, self.hit_end = [], 0, False

    def reread_after_first(self) -> None:
        """Hand out the current record's lines after its first one again (they were swallowed by it)."""
        self._queue.extendleft(reversed(self.taken[1:]))
        self.start_record()

    def _read(self) -> None:
        for _, raw in self._raw:
            if isinstance(raw, TooLong):
                self._number += 1
                self._queue.append((self._number, raw))
                return
            try:
                text = raw.decode("utf-8-sig" if self._number == 0 else "utf-8")
            except UnicodeDecodeError:
                raise DataError(f"{self._path}:{self._number + 1}: bytes that are not UTF-8; "
                                "save the file as UTF-8") from None
            for piece in _LONE_CR.split(text) if text.count("\r") > text.endswith("\r\n") else (text,):
                if piece:
                    self._number += 1
                    self._queue.append((self._number, piece))
            return


def iter_table(path: Path, f: BinaryIO, delimiter: str) -> Iterator[Row]:
    """Yield (location "file:line", row dict or Problem) for every record of a CSV (",") or TSV ("\\t") file.

    Raises:
        DataError: bytes that are not UTF-8, or a header row that is too long or names columns twice.
    """
    tsv = delimiter == "\t"
    if csv.field_size_limit() < MAX_RECORD_BYTES:
        csv.field_size_limit(MAX_RECORD_BYTES)
    lines = _Lines(path, f)
    reader = csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE) if tsv else csv.reader(lines)
    header = _header(path, reader, lines)
    if header is None:
        return
    quoted = 0
    while True:
        lines.start_record()
        try:
            cells = next(reader)
        except StopIteration:
            break
        except RecordTooLong as exc:
            where = f"{path}:{exc.start}"
            yield where, Problem(where, None, too_long_reason(exc.size, at_least=exc.at_least), "too_long")
            if len(lines.taken) > 1:
                lines.reread_after_first()
            continue
        except csv.Error as exc:
            where = f"{path}:{lines.taken[0][0] if lines.taken else '?'}"
            yield where, Problem(where, None, f"cannot be read as {'TSV' if tsv else 'CSV'} ({exc})", "columns")
            continue
        where = f"{path}:{lines.taken[0][0]}"
        if not any(c.strip() for c in cells):
            continue
        swallowed = _swallowed(lines, len(cells), len(header))
        if swallowed:
            yield where, Problem(where, None, swallowed, "quote")
            lines.reread_after_first()
            continue
        if len(cells) != len(header):
            yield where, Problem(where, None, f"row has {len(cells)} fields but the header has {len(header)} "
                                 "(check quoting and delimiters)", "columns")
            continue
        quoted += tsv and any(len(c) > 1 and c[0] == c[-1] == '"' for c in cells)
        yield where, dict(zip(header, cells))
    if quoted:
        log.warning("%s: fields wrapped in quotes in %d rows; TSV has no quoting, so the quotes are kept as "
                    "part of the text (remove them, or save the file as CSV)", path, quoted)


def _header(path: Path, reader, lines: _Lines) -> list[str] | None:
    """The column names of the first row (None for an empty file)."""
    try:
        header = next(reader)
    except StopIteration:
        return None
    except RecordTooLong:
        raise DataError(f"{path}:1: the header row is over {MAX_RECORD_BYTES // 2**20} MiB; is this a table?") from None
    except csv.Error as exc:
        raise DataError(f"{path}:1: the header row cannot be read ({exc})") from None
    header = [h.strip() for h in header]
    if len(set(header)) != len(header) or "" in header:
        raise DataError(f"{path}:1: the header row has empty or repeated column names: {header}")
    if lines.hit_end and lines.taken[-1][0] > 1:
        raise DataError(f"{path}:1: a quote (\") in the header row is never closed, so the header swallows the "
                        "whole file; remove the stray quote")
    return header


def _swallowed(lines: _Lines, cells: int, columns: int) -> str | None:
    """Why the record just read looks like a stray quote swallowing the lines after it (None if it does not).

    Signs: the quote is never closed; a field spanning lines leaves the row with the wrong number of fields,
    or is closed by a quote that is not followed by a comma or the line's end (strict CSV refuses it); or
    it spans SWALLOW_LINES lines or more, most of which read as rows of the header's width on their own.
    """
    start, end = lines.taken[0][0], lines.taken[-1][0]
    again = "; they are read as rows of their own (remove the stray quote, or double it as \"\")"
    if lines.hit_end:
        if start == end:
            return "a quote (\") opened on this line is never closed (remove the stray quote, or double it as \"\")"
        return f"a quote (\") opened on this line is never closed, so it swallowed {_span(start + 1, end)}" + again
    if end == start:
        return None
    if cells != columns:
        return (f"row has {cells} fields but the header has {columns}, with a quoted field running from line "
                f"{start} to {end}: a stray quote probably swallowed {_span(start + 1, end)}" + again)
    texts = [text for _, text in lines.taken]
    try:
        list(csv.reader(texts, strict=True))
    except csv.Error:
        return (f"a quoted field running from line {start} to {end} is closed by a quote followed by more text: "
                f"a stray quote probably swallowed {_span(start + 1, end)}" + again)
    inner = [cells for cells in csv.reader(texts[1:-1]) if cells]
    like_rows = sum(len(cells) == columns for cells in inner)
    if len(texts) - 2 >= SWALLOW_LINES and like_rows >= ROW_LIKE_SHARE * len(inner):
        return (f"a quoted field runs from line {start} to {end}, and {like_rows} of the lines inside it read as "
                f"rows of {columns} fields: a stray quote probably swallowed them" + again)
    return None


def _span(first: int, last: int) -> str:
    return f"line {first}" if first == last else f"lines {first}-{last}"
