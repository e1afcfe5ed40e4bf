"""The time-to-quality benchmark's tasks: which shared data set, weaver preset, model and metric each uses.

    python bench/time_to_quality.py --task dialogsum   # default: English dialogue summaries, SmolLM2-135M
    python bench/time_to_quality.py --task adgen       # Chinese ad copy from attributes (AdvertiseGen), Gemma-3-270M
    python bench/time_to_quality.py --task lcsts       # Chinese Weibo headlines (LCSTS), Gemma-3-270M

The Chinese sets' own test splits are kept aside (../shared/data/README.md), so their dev.jsonl is the test:
train = `random.seed(0)`, shuffle train.jsonl, the first n_train; weaver's validation = the next n_dev of that
shuffle (never trained on); test = the first n_test of dev.jsonl, one reference each. Chinese scoring is
ROUGE on characters (the headline number, LLaMA-Factory's target) and on jieba words, both reported.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DATA_ROOT = ROOT.parent / "shared" / "data"

TASKS = {
    "dialogsum": {"data": "dialogsum", "preset": None, "model": "smollm2-135m-instruct", "lang": "en",
                  "lf_template": "smollm2", "section": "time_to_quality", "goal": 0.5,
                  "title": "dialogsum, SmolLM2-135M", "overrides": {}},
    "adgen": {"data": "advertisegen", "preset": ROOT / "configs" / "adgen-gemma3.yaml", "model": "gemma3-270m",
              "lang": "zh", "lf_template": "weaver_plain", "section": "time_to_quality_adgen", "goal": 0.35,
              "title": "AdvertiseGen ad copy, Gemma-3-270M",
              "overrides": {"n_train": 600, "n_dev": 32, "n_test": 50, "max_seq_len": 256, "max_new_tokens": 160}},
    "lcsts": {"data": "lcsts", "preset": ROOT / "configs" / "lcsts-gemma3.yaml", "model": "gemma3-270m",
              "lang": "zh", "lf_template": "weaver_plain", "section": "time_to_quality_lcsts", "goal": 0.35,
              "title": "LCSTS Weibo headlines, Gemma-3-270M",
              "overrides": {"n_train": 1000, "n_dev": 48, "n_test": 100, "max_seq_len": 192, "max_new_tokens": 32}},
}


def _read(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _example(rec: dict) -> dict:
    return {"id": rec["id"], "instruction": rec["instruction"], "input": rec["input"], "output": rec["output"],
            "user": f"{rec['instruction']}\n\n{rec['input']}", "references": [rec["output"]]}


def load_zh(data_dir: Path, n_train: int, n_dev: int, n_test: int) -> dict[str, list[dict]]:
    """The fixed train / validation / test examples of a Chinese set (see the module docstring).

    Raises:
        FileNotFoundError: data_dir lacks train.jsonl or dev.jsonl.
    """
    train = _read(data_dir / "train.jsonl")
    random.seed(0)
    random.shuffle(train)
    return {"train": [_example(r) for r in train[:n_train]],
            "dev": [_example(r) for r in train[n_train:n_train + n_dev]],
            "test": [_example(r) for r in _read(data_dir / "dev.jsonl")[:n_test]]}
