"""The text of a JSON file read a chunk at a time, so a large array is decoded element by element.

    text = JsonText(path, f)             # f: the file opened in binary mode
    if text.skip() == "[":               # next non-space character ("" at the end of the file)
        text.advance(1)
        obj, raw = text.decode(MAX_RECORD_BYTES)   # the value at the read position and its text
        where = text.line                          # line number of the read position, kept up to date

Time is linear in the file's size (line numbers are counted once, as the read position moves) and
memory holds one value plus a 1 MiB chunk; a value over its cap raises TooBig instead of growing the
buffer further. UTF-8 with or without a byte-order mark.
"""

from __future__ import annotations

import codecs
import json
import re
from pathlib import Path
from typing import Any, BinaryIO

from weaver.data.rows import CHUNK
from weaver.errors import DataError

_SPACE = re.compile(r"[ \t\r\n]*")
_SPACE_OR_COMMA = re.compile(r"[ \t\r\n,]*")
_MARGIN = 16
"""A decode error further than this from the end of the buffer cannot be cured by reading more: JSON is
decided left to right, and the longest token that can be cut short (-Infinity, \\uXXXX) is shorter."""


class JsonBroken(Exception):
    """The JSON is invalid at (line, column) of the file."""

    def __init__(self, msg: str, line: int, col: int):
        super().__init__(f"{msg} at line {line} column {col}")
        self.msg, self.line, self.col = msg, line, col


class TooBig(Exception):
    """The value at the read position is longer than the cap given to decode()."""


class JsonText:
    """The decoded text of a binary file, held from the read position on, with its line number."""

    def __init__(self, path: Path, f: BinaryIO):
        self.path, self.f = path, f
        self.buf, self.pos = "", 0
        self.line = 1
        """Line number of the read position."""
        self.eof = False
        self._utf8 = codecs.getincrementaldecoder("utf-8-sig")()
        self._json = json.JSONDecoder()
        self._base_line, self._base_col = 1, 0  # line of buf[0], and characters before it on that line
        self._byte_lines = 0  # newlines in the bytes decoded so far, to place a UTF-8 error

    def advance(self, n: int) -> None:
        """Move the read position n characters on (within the buffer), counting the newlines passed."""
        end = self.pos + n
        self.line += self.buf.count("\n", self.pos, end)
        self.pos = end

    def skip(self, commas: bool = False) -> str:
        """Skip whitespace (and commas) and return the next character, or "" at the end of the file."""
        pattern = _SPACE_OR_COMMA if commas else _SPACE
        while True:
            self.advance(pattern.match(self.buf, self.pos).end() - self.pos)
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self._fill(CHUNK):
                return ""

    def decode(self, cap: int) -> tuple[Any, str]:
        """Decode the JSON value at the read position and move past it.

        Returns:
            (the value, its JSON text).
        Raises:
            JsonBroken: invalid JSON. TooBig: the value is longer than cap characters.
            RecursionError, ValueError: nested too deeply, or a number with too many digits.
            DataError: bytes that are not UTF-8.
        """
        while True:
            try:
                obj, end = self._json.raw_decode(self.buf, self.pos)
                if end < len(self.buf) or self.eof:  # a number ending the buffer may go on in the next chunk
                    break
            except json.JSONDecodeError as exc:
                final = exc.pos + _MARGIN < len(self.buf) and not exc.msg.startswith("Unterminated string")
                if self.eof or final:
                    raise self._broken(exc) from None
            if len(self.buf) - self.pos > cap:
                raise TooBig
            self._fill(len(self.buf) - self.pos)  # double what is held, so a long value is re-parsed O(log n) times
        if end - self.pos > cap:
            raise TooBig
        raw = self.buf[self.pos:end]
        self.advance(end - self.pos)
        return obj, raw

    def _broken(self, exc: json.JSONDecodeError) -> JsonBroken:
        line = self._base_line + exc.lineno - 1
        return JsonBroken(exc.msg, line, exc.colno + (self._base_col if exc.lineno == 1 else 0))

    def _fill(self, want: int) -> bool:
        """Drop the text before the read position and append at least `want` more bytes' worth; False at EOF."""
        if self.eof:
            return False
        self._compact()
        data = self.f.read(max(CHUNK, want))
        try:
            text = self._utf8.decode(data, final=not data)
        except UnicodeDecodeError as exc:  # the undecoded tail held back from the last chunk has no newline
            line = self._byte_lines + exc.object[: exc.start].count(b"\n") + 1
            raise DataError(f"{self.path}:{line}: bytes that are not UTF-8; save the file as UTF-8") from None
        self._byte_lines += data.count(b"\n")
        self.buf += text
        self.eof = not data
        return True

    def _compact(self) -> None:
        if not self.pos:
            return
        newlines = self.buf.count("\n", 0, self.pos)
        if newlines:
            self._base_line += newlines
            self._base_col = self.pos - self.buf.rfind("\n", 0, self.pos) - 1
        else:
            self._base_col += self.pos
        self.buf, self.pos = self.buf[self.pos:], 0
