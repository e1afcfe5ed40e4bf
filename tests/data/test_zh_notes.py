"""`weaver data check` language notes on Chinese sets: traditional vs simplified and half/full-width punctuation,
reported as notes with file:line examples (the check still passes)."""

from __future__ import annotations

import json

from weaver.cli import main
from weaver.data.records import Record
from weaver.data.zh_notes import language_notes

SIMP = ["这是我们的新产品，设计简单。", "他说国家会发展得更好。", "这款裤子的颜色很优雅。", "我们来学习电脑。"]


def _rec(i: int, text: str, out: str = "标题") -> Record:
    return Record(id=str(i), instruction="", input=text, output=out, source=f"train.jsonl:{i + 1}")


def test_a_clean_simplified_set_has_no_note():
    assert language_notes([_rec(i, t) for i, t in enumerate(SIMP)]) == []


def test_traditional_records_in_a_simplified_set_are_named_with_file_line():
    records = [_rec(i, t) for i, t in enumerate(SIMP)] + [_rec(4, "這是我們的新產品，設計簡單。")]
    notes = language_notes(records)
    assert [n["kind"] for n in notes] == ["script"]
    assert notes[0]["records"] == 1 and "traditional characters" in notes[0]["message"]
    assert "mostly simplified" in notes[0]["message"]
    assert notes[0]["examples"][0].startswith("train.jsonl:5 ") and "們" in notes[0]["examples"][0]


def test_the_reverse_simplified_in_a_traditional_set():
    trad = ["這是我們的新產品。", "他說國家會發展得更好。", "我們來學習電腦。"]
    notes = language_notes([_rec(i, t) for i, t in enumerate(trad)] + [_rec(3, "这是我们的产品。")])
    assert len(notes) == 1 and "simplified characters in a set that is mostly traditional" in notes[0]["message"]
    assert notes[0]["examples"][0].startswith("train.jsonl:4 ")


def test_half_width_punctuation_in_a_full_width_set_and_mixed_records():
    records = [_rec(i, t) for i, t in enumerate(SIMP)]
    records.append(_rec(4, "价格很低,质量很好!", "价格3.5元"))  # half-width after CJK (the 3.5 is a number)
    records.append(_rec(5, "颜色:白色，款式新颖。"))  # both in one record
    notes = language_notes(records)
    assert len(notes) == 2 and all(n["kind"] == "punctuation" for n in notes)
    half = next(n for n in notes if "half-width punctuation after" in n["message"])
    assert half["records"] == 1 and half["examples"][0].startswith("train.jsonl:5 ") and "低," in half["examples"][0]
    mixed = next(n for n in notes if "mix half-width" in n["message"])
    assert mixed["records"] == 1 and mixed["examples"][0].startswith("train.jsonl:6 ")


def test_english_text_and_decimal_points_are_not_punctuation_notes():
    records = [_rec(0, "Price 3.5, great!", "ok"), _rec(1, "温度是3.5度，很好。"), _rec(2, "今天12.5元，便宜。")]
    assert language_notes(records) == []


def test_data_check_prints_the_notes_and_still_passes(tmp_path, capsys):
    rows = [{"input": t, "output": "标题"} for t in SIMP]
    rows.append({"input": "這是我們的新產品，設計簡單。", "output": "標題"})
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    assert main(["data", "check", str(path), "--model", "none"]) == 0
    out = capsys.readouterr().out
    assert "language note: 1 record(s) use traditional characters" in out and f"{path}:5" in out
    assert main(["data", "check", str(path), "--model", "none", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)["files"]["train"]["stats"]
    assert stats["language_notes"][0]["kind"] == "script"
