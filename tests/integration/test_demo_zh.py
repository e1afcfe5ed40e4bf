"""`make demo-zh` as a smoke run on the real Gemma-3-270M (installed by `make test`): tune 2 steps on the shipped
Chinese paper titles, evaluate base vs tuned on 4 held-out abstracts, and the report is in Chinese with both
Chinese ROUGE variants and both character BLEU-4 kinds."""

from __future__ import annotations

import json
import os

import pytest

pytestmark = pytest.mark.integration


def test_demo_zh_smoke_writes_a_chinese_report(tmp_path, capsys):
    from weaver.demo import main
    from weaver.models.catalog import find_entry

    if not find_entry("gemma3-270m").installed:
        if os.environ.get("CI"):
            pytest.fail("gemma3-270m is not installed in CI: `make test` must install it (make models-multilingual)")
        pytest.skip("gemma3-270m is not installed: make models-multilingual")
    out = tmp_path / "demo-zh"
    assert main(["--lang", "zh", "--smoke", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "ROUGE-L (characters)" in printed and "ROUGE-L (jieba words)" in printed
    report = json.loads((out / "eval" / "report.json").read_text(encoding="utf-8"))
    assert report["lang"] == "zh" and report["n"] == 4 and report["base"] == "gemma3-270m"
    assert {"rougeL", "rougeL_word", "bleu", "bleu4_sentence"} <= set(report["metrics"])
    md = (out / "eval" / "report.md").read_text(encoding="utf-8")
    assert "| 指标 | 基座模型 | 微调后 |" in md and "ROUGE-L（字）" in md and "ROUGE-L（jieba 分词）" in md
    preds = [json.loads(line) for line in (out / "eval" / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(preds) == 4 and all(isinstance(p["tuned"], str) for p in preds)
