"""The shipped example sets load clean, are leak-free, small, and name their source and licence."""

from __future__ import annotations

from pathlib import Path

import pytest

from weaver.config import DataConfig
from weaver.data.splits import load_splits

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "data"
LICENCES = {"cs_reply_twitter_ibm": "Apache License 2.0", "csl_title": "Apache License 2.0",
            "translation_flores": "CC BY-SA 4.0"}


@pytest.mark.parametrize("name", sorted(LICENCES))
def test_example_set_loads_clean_with_source_and_licence(name):
    folder = EXAMPLES / name
    assert LICENCES[name] in (folder / "SOURCE.md").read_text(encoding="utf-8")
    s = load_splits(DataConfig(train=str(folder / "train.jsonl"), dev=str(folder / "dev.jsonl"),
                               test=str(folder / "test.jsonl"), drop_leaks=False))
    assert s.report["leaks"] == {"dev": 0, "test": 0} and s.report["skipped"] == {}
    assert 250 <= len(s.train) <= 300 and 40 <= len(s.dev) <= 50 and len(s.test) == 100
