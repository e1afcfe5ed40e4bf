"""The time-to-quality benchmark's fixed data, written once per run in every contender's format.

Train: dialogsum train.jsonl, `random.seed(0)`, shuffle, first N (300 by default, as in shared/PEERS.md),
each dialogue cut to its first 200 words (40 in smoke mode). Dev (weaver's validation only): the first 50 of dev.jsonl.
Test: the first 100 of test.jsonl with its three human references. The user message is
`instruction + "\n\n" + dialogue` for every contender and for scoring.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

MAX_WORDS = 200


def truncate_words(text: str, max_words: int = MAX_WORDS) -> str:
    """The text up to the end of its max_words-th word, line breaks kept."""
    words = list(re.finditer(r"\S+", text))
    return text if len(words) <= max_words else text[: words[max_words - 1].end()]


def _read(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _example(rec: dict, max_words: int) -> dict:
    dialogue = truncate_words(rec["input"], max_words)
    refs = rec.get("references") or [rec["output"]]
    return {"id": rec["id"], "instruction": rec["instruction"], "input": dialogue, "output": rec["output"],
            "user": f"{rec['instruction']}\n\n{dialogue}", "references": list(refs)}


def load(data_dir: Path, n_train: int = 300, n_dev: int = 50, n_test: int = 100,
         max_words: int = MAX_WORDS) -> dict[str, list[dict]]:
    """The fixed train subset, dev subset and test dialogues.

    Returns:
        {"train": [...], "dev": [...], "test": [...]}, each example with id, instruction, input,
        output, user (the rendered user message) and references.
    Raises:
        FileNotFoundError: when data_dir lacks train/dev/test.jsonl.
    """
    train = _read(data_dir / "train.jsonl")
    random.seed(0)
    random.shuffle(train)
    return {
        "train": [_example(r, max_words) for r in train[:n_train]],
        "dev": [_example(r, max_words) for r in _read(data_dir / "dev.jsonl")[:n_dev]],
        "test": [_example(r, max_words) for r in _read(data_dir / "test.jsonl")[:n_test]],
    }


def write_jsonl(examples: list[dict], path: Path) -> Path:
    """Write examples as weaver's jsonl records (id, instruction, input, output)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for ex in examples:
            rec = {k: ex[k] for k in ("id", "instruction", "input", "output")}
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
    return path
