"""The one in-memory shape of a training/eval example, whatever file format or record shape it came from.

    Record(id="a1", instruction="Summarize.", input="Long text ...", output="Short text.", source="train.jsonl:3")

Readers (weaver.data.readers) build Records; task templates (weaver.data.tasks) turn them into prompts.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Record:
    """One example: what the user asks (instruction + input, after optional system/history) and the answer."""

    id: str
    instruction: str
    input: str
    output: str
    system: str | None = None
    history: list[tuple[str, str]] = field(default_factory=list)
    """Prior (user, assistant) turns of a conversation, oldest first."""
    references: list[str] = field(default_factory=list)
    """Extra reference outputs for evaluation (e.g. dialogsum test has three)."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Anything else the file carried (extra columns, `meta`), plus `augmented` / `chat` markers."""
    source: str = ""
    """Where the record came from, as "file:line" (or "file:row N")."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict in the alpaca-like shape the readers accept back."""
        out = asdict(self)
        out["history"] = [list(turn) for turn in self.history]
        return out


_SPACE = re.compile(r"\s+")
_BLANK = re.compile(
    "[\\s\x00-\x1f\x7f-\x9f\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e"
    "\u2060-\u206f\u2800\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufff8\U0001bca0-\U0001bca3\U0001d173-\U0001d17a"
    "\U000e0000-\U000e0fff]*"
)
"""Characters that show nothing: whitespace, control characters, Unicode's default-ignorable code points
(zero-width space and joiners, bidi marks, soft hyphen, variation selectors, tags) and blank fillers
(Hangul fillers, the blank Braille pattern)."""


def is_blank(text: str) -> bool:
    """True when text shows nothing: empty, or only whitespace and invisible characters such as U+200B."""
    return _BLANK.fullmatch(text) is not None


def blank_reason(text: str) -> str:
    """"is empty", naming the invisible character when text is not plain whitespace (e.g. U+200B)."""
    rest = text.strip()
    if not rest:
        return "is empty"
    return f"is empty (it holds only invisible characters, such as U+{ord(rest[0]):04X})"


def normalize_text(text: str) -> str:
    """Canonical form for duplicate and leak detection: NFKC, lower case, single spaces, stripped."""
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text)).strip().lower()


def input_key(record: Record) -> str:
    """The key two records share when they ask the same thing (used for leak checks and grouped splits)."""
    turns = " ".join(f"{u} {a}" for u, a in record.history)
    return normalize_text(f"{turns} {record.input}" if turns else record.input or record.instruction)


def content_key(record: Record) -> str:
    """The key two records share when they are exact duplicates (same question and same answer)."""
    return "\x1f".join(
        [normalize_text(record.system or ""), normalize_text(record.instruction), input_key(record),
         normalize_text(record.output)]
    )


def fingerprint(records: list[Record]) -> str:
    """SHA-256 over the records' content, so a run can say exactly which data it saw."""
    digest = hashlib.sha256()
    for r in records:
        digest.update(json.dumps([r.system, r.history, r.instruction, r.input, r.output], ensure_ascii=False).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def cjk_share(text: str) -> float:
    """Fraction of letters in text that are CJK ideographs (0.0 for text without letters)."""
    letters = sum(map(str.isalpha, text))  # counted, not listed: a long text costs no extra memory
    if not letters:
        return 0.0
    cjk = sum(1 for c in text if ("\u3400" <= c <= "\u9fff" or "\uf900" <= c <= "\ufaff") and c.isalpha())
    return cjk / letters


def language_of(text: str) -> str:
    """"zh" when at least 30% of the letters are CJK ideographs, else "en" (a coarse two-way split)."""
    return "zh" if cjk_share(text) >= 0.3 else "en"
