"""Preference pairs: every record shape loads, malformed pairs are reported by file:line, splits keep prompts apart."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from weaver.config import DataConfig
from weaver.data.preferences import (
    PreferencePair,
    encode_pair,
    is_pairs_file,
    load_pair_splits,
    read_pair_file,
    read_pairs,
)
from weaver.data.records import Record
from weaver.data.tasks import render_prompt
from weaver.errors import DataError

ROWS = [
    {"id": "flat", "instruction": "Summarize.", "input": "The cat sat on the mat all day.", "chosen": "A cat sat.",
     "rejected": "Dogs bark at night.", "meta": {"task": "summarize"}},
    {"prompt": "Write a headline: rain in Leeds", "chosen": "Rain hits Leeds", "rejected": "Sun in Spain"},
    {"conversations": [{"from": "system", "value": "Be kind."}, {"from": "human", "value": "Hi there"}],
     "chosen": {"from": "gpt", "value": "Hello!"}, "rejected": {"from": "gpt", "value": "Go away."}},
    {"prompt": [{"role": "user", "content": "Say yes"}], "chosen": [{"role": "assistant", "content": "Yes"}],
     "rejected": [{"role": "assistant", "content": "No"}]},
    {"chosen": [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "A."}],
     "rejected": [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "B."}]},
]


def write(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows),
                    encoding="utf-8")
    return path


def test_every_shape_loads(tmp_path):
    pairs = read_pairs(write(tmp_path / "p.jsonl", ROWS))
    got = [(p.record.instruction, p.record.input, p.chosen, p.rejected, bool(p.record.meta.get("chat"))) for p in pairs]
    assert got == [("Summarize.", "The cat sat on the mat all day.", "A cat sat.", "Dogs bark at night.", False),
                   ("", "Write a headline: rain in Leeds", "Rain hits Leeds", "Sun in Spain", True),
                   ("", "Hi there", "Hello!", "Go away.", True),
                   ("", "Say yes", "Yes", "No", True),
                   ("", "Q?", "A.", "B.", True)]
    assert pairs[0].record.meta == {"task": "summarize"} and pairs[0].record.id == "flat"
    assert pairs[2].record.system == "Be kind."
    assert [p.record.source for p in pairs] == [f"{tmp_path / 'p.jsonl'}:{i}" for i in range(1, 6)]


def test_round_trip_through_to_dict(tmp_path):
    pairs = read_pairs(write(tmp_path / "p.jsonl", ROWS))
    again = read_pairs(write(tmp_path / "q.jsonl", [p.to_dict() for p in pairs]))
    assert [(p.record.input, p.record.system, p.chosen, p.rejected) for p in again] == \
        [(p.record.input, p.record.system, p.chosen, p.rejected) for p in pairs]


def test_malformed_pairs_are_reported_with_file_line_and_reason(tmp_path, tokenizer):
    bad = [
        {"input": "x", "chosen": "Same text", "rejected": " same   text "},
        {"input": "x", "chosen": "\u200b", "rejected": "b"},
        {"input": "x", "chosen": "a"},
        {"input": "x", "chosen": "a", "rejected": "long " * 300},
        {"chosen": [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "A."}],
         "rejected": [{"role": "user", "content": "Z?"}, {"role": "assistant", "content": "B."}]},
        {"input": "x", "chosen": {"from": "human", "value": "hi"}, "rejected": "b"},
        {"input": "", "chosen": "a", "rejected": "b"},
        "{not json",
        {"id": "d", "input": "x", "chosen": "a", "rejected": "b"},
        {"id": "d", "input": "y", "chosen": "a", "rejected": "b"},
    ]
    path = write(tmp_path / "bad.jsonl", bad)
    res = read_pair_file(path, tokenizer=tokenizer, max_output_tokens=64)
    got = {str(p).split(": ", 1)[0].rsplit(":", 1)[1]: (p.field, p.kind) for p in res.problems}
    assert got == {"1": ("rejected", "same"), "2": ("chosen", "empty"), "3": ("rejected", "missing"),
                   "4": ("rejected", "too_long"), "5": ("rejected", "turns"), "6": ("chosen", "role"),
                   "7": ("input", "empty"), "8": (None, "invalid_json"), "10": ("id", "duplicate")}
    assert [p.record.id for p in res.records] == ["d"]
    assert "U+200B" in str(res.problems[1]) and "over the limit of 64" in str(res.problems[3])
    with pytest.raises(DataError, match=r"bad\.jsonl:1: rejected: is the same text as chosen"):
        read_pairs(path)
    assert [p.record.id for p in read_pairs(path, on_error="skip")] == ["bad-4", "d"]


def test_feedback_export_file_reads_as_pairs(tmp_path):
    from weaver.apps.feedback import Draft, FeedbackStore, export

    store = FeedbackStore(tmp_path / "s.sqlite")
    rid = store.add_request("headline", [Draft("Rain closes schools", "news"), Draft("Weather", "base", True)],
                            {"input": "Heavy rain closed every school in Leeds."})
    store.add_event(rid, "choose", draft=0)
    store.add_event(rid, "edit", draft=0, text="Rain closes Leeds schools")
    export(store, tmp_path / "fb")
    assert is_pairs_file(tmp_path / "fb" / "pairs.jsonl") and not is_pairs_file(tmp_path / "fb" / "sft.jsonl")
    (pair,) = read_pairs(tmp_path / "fb" / "pairs.jsonl")
    assert (pair.record.input, pair.chosen, pair.rejected) == ("Heavy rain closed every school in Leeds.",
                                                               "Rain closes Leeds schools", "Weather")
    assert pair.record.meta == {"task": "headline"}


def test_splits_keep_a_prompt_in_one_split_and_drop_duplicates(tmp_path):
    rows = []
    for i in range(30):
        rows += [{"input": f"text number {i}", "chosen": f"good {i}", "rejected": f"bad {i}"},
                 {"input": f"text number {i}", "chosen": f"good {i}", "rejected": f"worse {i}"}]
    rows.append(dict(rows[0]))
    cfg = DataConfig(train=str(write(tmp_path / "p.jsonl", rows)), split=[0.6, 0.2, 0.2])
    s = load_pair_splits(cfg)
    assert s.report["duplicates"]["train"] + s.report["duplicates"]["dev"] + s.report["duplicates"]["test"] == 1
    assert sum(s.report["counts"].values()) == 60
    inputs = [{p.record.input for p in part} for part in (s.train, s.dev, s.test)]
    assert not (inputs[0] & inputs[1]) and not (inputs[0] & inputs[2]) and not (inputs[1] & inputs[2])
    assert load_pair_splits(cfg).report["fingerprint"] == s.report["fingerprint"]


def test_encode_pair_shares_the_prompt_and_never_cuts_a_reply(tokenizer):
    pair = PreferencePair(Record("x", "", "word " * 200, "short"), "a much longer rejected reply " * 3)
    prompt = render_prompt(tokenizer, pair.record, DataConfig())
    enc = encode_pair(tokenizer, prompt, pair, max_seq_len=96)
    c, r = enc["chosen"], enc["rejected"]
    n_c, n_r = c["labels"].count(-100), r["labels"].count(-100)
    assert n_c == n_r and c["input_ids"][:n_c] == r["input_ids"][:n_r]
    assert len(r["input_ids"]) == 96 and len(c["input_ids"]) < 96
    assert tokenizer.decode(c["input_ids"][n_c:-1]) == "short"
    assert c["input_ids"][-1] == r["input_ids"][-1] == tokenizer.eos_token_id
    with pytest.raises(DataError, match="leaves no room for the prompt"):
        encode_pair(tokenizer, prompt, pair, max_seq_len=24)


def test_data_check_reads_a_pairs_file_as_pairs(tmp_path, tokenizer):
    from weaver.data.check import check_files, format_stats

    path = write(tmp_path / "p.jsonl", [*ROWS, {"input": "x", "chosen": "same", "rejected": "same"}])
    report = check_files({"train": str(path)}, DataConfig(), tokenizer)
    f = report["files"]["train"]
    assert f["stats"]["pairs"] == 5 and f["rows"] == 6 and [p.kind for p in f["problems"]] == ["same"]
    assert f["stats"]["tokens"]["rejected"]["max"] >= 4
    text = format_stats(report)
    assert "preference pairs (prompt, chosen, rejected): 5 good of 6 (1 malformed)" in text
    assert "    chosen " in text and "    rejected " in text


def test_an_sft_test_file_next_to_pairs_is_left_to_evaluation(tmp_path):
    pairs = write(tmp_path / "p.jsonl", [{"input": f"t {i}", "chosen": f"g {i}", "rejected": f"b {i}"}
                                         for i in range(10)])
    sft = write(tmp_path / "test.jsonl", [{"input": "t 99", "output": "o"}])
    s = load_pair_splits(DataConfig(train=str(pairs), test=str(sft), split=[0.8, 0.2, 0.0]))
    assert s.report["counts"] == {"train": 8, "dev": 2, "test": 0}
