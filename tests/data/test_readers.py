"""Readers: every record shape and file format loads; real data loads clean; malformed input gives file:line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from weaver.data.readers import read_file, read_records
from weaver.errors import ConfigError, DataError

FIX = Path(__file__).parent / "fixtures"


def test_alpaca_llamafactory_file_loads_as_is():
    recs = read_records(FIX / "alpaca.json")
    assert [r.output[:10] for r in recs] == ["The counci", "图书馆工作日延长开放", "Red leaves"]
    first = recs[0]
    assert first.system == "You are a concise news editor."
    assert first.history == [("What is a summary?", "A short restatement of the main points.")]
    assert recs[2].input == "" and recs[2].instruction.startswith("Write a haiku")
    assert [r.source for r in recs] == [f"{FIX / 'alpaca.json'}:{n}" for n in (2, 11, 16)]


def test_sharegpt_llamafactory_file_loads_as_is():
    recs = read_records(FIX / "sharegpt.json")
    a, b = recs
    assert a.system == "You are a support agent for a parcel service."
    assert a.history == [("My order #123 has not arrived yet.",
                          "Sorry to hear that. Could you share your email so I can check?")]
    assert a.input == "It's ann@example.com" and a.output.startswith("Thanks, Ann")
    assert a.meta["chat"] is True and a.instruction == ""
    assert b.system == "你是一名客服。" and b.input == "我的快递还没到。" and b.history == []


def test_openai_messages_shape():
    recs = read_records(FIX / "messages.jsonl")
    assert [r.id for r in recs] == ["m1", "m2"]
    assert recs[0].system == "You write ad copy." and recs[0].output.startswith("Keep your toes")
    assert recs[1].system is None and recs[1].input == "Translate into English: 你好"


def test_flat_jsonl_with_bom_keeps_references_and_meta():
    recs = read_records(FIX / "flat_bom.jsonl")
    assert recs[0].id == "f1" and recs[0].meta == {"lang": "en"}
    assert recs[1].references == ["Two people say hello.", "A greeting."]
    assert recs[1].input == "#Person1#: Hi.\n#Person2#: Hello."


def test_chinese_jsonl():
    (rec,) = read_records(FIX / "zh.jsonl")
    assert rec.output == "一种新的中文分词方法"


def test_csv_with_multiline_field_and_tsv():
    csv_recs = read_records(FIX / "data.csv")
    assert csv_recs[1].input == "Ticket prices for the\ncity's buses will rise by 10% in March."
    assert [r.source.rsplit(":", 1)[1] for r in csv_recs] == ["2", "3"]
    tsv_recs = read_records(FIX / "data.tsv")
    assert [(r.input, r.output) for r in tsv_recs] == [("早上好", "Good morning"), ("谢谢", "Thank you")]


def test_column_mapping():
    recs = read_records(FIX / "mapped.csv", columns={"input": "article", "output": "summary"})
    assert recs[0].input.startswith("Heavy snow") and recs[0].output == "Snow shuts schools"
    with pytest.raises(ConfigError, match="unknown field 'body'"):
        read_records(FIX / "mapped.csv", columns={"body": "article"})


def test_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"instruction": ["Headline."], "input": ["Sun today."], "output": ["Sunny"]}), path)
    (rec,) = read_records(path)
    assert (rec.input, rec.output, rec.source) == ("Sun today.", "Sunny", f"{path}:row 1")


def test_json_wrapped_in_data_key(tmp_path):
    path = tmp_path / "w.json"
    path.write_text(json.dumps({"data": [{"input": "a", "output": "b"}, {"input": "c", "output": ""}]}))
    with pytest.raises(DataError, match=r"w\.json:item 2: output: is empty"):
        read_records(path)


def test_datasets_folder_needs_the_package_or_loads(tmp_path):
    try:
        import datasets
    except ImportError:
        with pytest.raises(DataError, match="pip install datasets"):
            read_records(tmp_path)
        return
    folder = tmp_path / "ds"
    datasets.Dataset.from_list([{"input": "x", "output": "y"}]).save_to_disk(str(folder))
    assert read_records(folder)[0].output == "y"


REAL = [(d, s) for d in ("dialogsum", "csl_title", "translation_flores", "cs_reply_twitter_ibm", "news_summ_xsum",
                         "cs_reply_tweetsumm", "lcsts", "advertisegen") for s in ("train", "dev", "test")]


def test_real_shared_sets_load_clean(shared_data):
    seen = 0
    for name, split in REAL:
        path = shared_data / name / f"{split}.jsonl"
        if not path.exists():
            continue
        result = read_file(path)
        assert result.problems == [], (path, result.problems[:3])
        assert len(result.records) == result.rows > 0
        seen += 1
    assert seen >= 20
    test = read_records(shared_data / "dialogsum" / "test.jsonl")
    assert all(len(r.references) == 3 for r in test)


# (kind, file name, content, expected line, expected text in the message)
MALFORMED = [
    ("invalid json", "a.jsonl", b'{"input": "x", "output": "y"}\n{"input": "x", "output": \n', 2, "invalid JSON"),
    ("not an object", "a.jsonl", b'["x", "y"]\n', 1, "expected a JSON object"),
    ("a bare string", "a.jsonl", b'{"input": "a", "output": "b"}\n\n"hello"\n', 3, "got a string"),
    ("undecodable bytes", "a.jsonl", b'{"input": "a", "output": "b"}\n{"input": "caf\xe9", "output": "b"}\n', 2,
     "not UTF-8"),
    ("missing output", "a.jsonl", b'{"input": "x"}\n', 1, "output: missing (the record has: input)"),
    ("empty output", "a.jsonl", b'{"input": "x", "output": ""}\n', 1, "output: is empty"),
    ("blank output", "a.jsonl", b'{"input": "x", "output": "  \\n "}\n', 1, "output: is empty"),
    ("numeric output", "a.jsonl", b'{"input": "x", "output": 3}\n', 1, "output: expected a string, got a number"),
    ("list output (preference data)", "a.jsonl", b'{"input": "x", "output": ["a", "b"]}\n', 1,
     "output: expected a string, got a list"),
    ("object input", "a.jsonl", b'{"input": {"a": 1}, "output": "y"}\n', 1, "input: expected a string"),
    ("numeric instruction", "a.jsonl", b'{"instruction": 5, "input": "x", "output": "y"}\n', 1,
     "instruction: expected a string"),
    ("nothing to ask", "a.jsonl", b'{"instruction": "", "input": " ", "output": "y"}\n', 1,
     "both instruction and input are empty"),
    ("duplicate id", "a.jsonl", b'{"id": "a", "input": "x", "output": "y"}\n{"id": "a", "input": "z", "output": "w"}\n',
     2, "duplicate id 'a' (first at"),
    ("list id", "a.jsonl", b'{"id": [1], "input": "x", "output": "y"}\n', 1, "id: expected a string or integer"),
    ("history not a list", "a.jsonl", b'{"input": "x", "output": "y", "history": "hi"}\n', 1,
     "history: expected a list of [user, assistant] pairs"),
    ("history item not a pair", "a.jsonl", b'{"input": "x", "output": "y", "history": [["a"]]}\n', 1,
     "history[0]: expected a [user, assistant] pair"),
    ("system not a string", "a.jsonl", b'{"input": "x", "output": "y", "system": ["s"]}\n', 1,
     "system: expected a string"),
    ("references not strings", "a.jsonl", b'{"input": "x", "output": "y", "references": [1, 2]}\n', 1,
     "references: expected a list of strings"),
    ("meta not an object", "a.jsonl", b'{"input": "x", "output": "y", "meta": "m"}\n', 1, "meta: expected an object"),
    ("messages end with user", "a.jsonl", b'{"messages": [{"role": "user", "content": "hi"}]}\n', 1,
     "alternating user/assistant turns"),
    ("unknown role", "a.jsonl",
     b'{"messages": [{"role": "tool", "content": "x"}, {"role": "assistant", "content": "y"}]}\n', 1,
     "messages[0]: role 'tool' is not supported"),
    ("two user turns", "a.jsonl",
     b'{"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}, '
     b'{"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]}\n', 1,
     "messages[1]: expected a assistant turn here, got user"),
    ("content not a string", "a.jsonl",
     b'{"messages": [{"role": "user", "content": ["x"]}, {"role": "assistant", "content": "y"}]}\n', 1,
     "messages[0]: content must be a string"),
    ("empty final reply", "a.jsonl",
     b'{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": ""}]}\n', 1,
     "messages[1]: the final assistant reply is empty"),
    ("sharegpt unknown from", "a.jsonl",
     b'{"conversations": [{"from": "observation", "value": "x"}, {"from": "gpt", "value": "y"}]}\n', 1,
     "conversations[0]: role 'observation'"),
    ("sharegpt not a list", "a.jsonl", b'{"conversations": "hi"}\n', 1, "conversations: expected a non-empty list"),
    ("csv too many fields", "a.csv", b'input,output\nx,y\nx,y,z\n', 3, "row has 3 fields but the header has 2"),
    ("csv missing output column", "a.csv", b'input,summary\nx,y\n', 2, "output: missing"),
    ("csv empty output", "a.csv", b'input,output\n"multi\nline",y\nx,\n', 4, "output: is empty"),
    ("json array element not an object", "a.json", b'[\n  {"input": "x", "output": "y"},\n  42\n]\n', 3,
     "expected a JSON object"),
    ("json array broken", "a.json", b'[\n  {"input": "x", "output": "y"},\n  {"input": \n]\n', 3, "invalid JSON"),
    ("json file with bad bytes", "a.json", b'[\n{"input": "\xff", "output": "y"}]\n', 2, "not UTF-8"),
    ("mapped column missing", "m.csv", b'article,output\nx,y\n', 2, "column 'body' (mapped to input) is missing"),
]


@pytest.mark.parametrize("kind,name,content,line,text", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_input_names_file_and_line(tmp_path, kind, name, content, line, text):
    path = tmp_path / name
    path.write_bytes(content)
    columns = {"input": "body"} if kind == "mapped column missing" else None
    with pytest.raises(DataError) as err:
        read_records(path, columns=columns)
    message = str(err.value)
    assert f"{path}:{line}" in message
    assert text in message
    if name.endswith((".jsonl", ".csv")):
        assert "set --data.on_error skip" in message


def test_skip_drops_bad_records_and_logs_summary(tmp_path, caplog):
    path = tmp_path / "mixed.jsonl"
    path.write_text('{"input": "a", "output": "b"}\n{"input": "a"\n{"input": "c", "output": ""}\n'
                    '{"input": "d", "output": "e"}\n', encoding="utf-8")
    with caplog.at_level("WARNING"):
        recs = read_records(path, on_error="skip")
    assert [r.input for r in recs] == ["a", "d"]
    assert "2 of 4 records" in caplog.text and "1 invalid_json" in caplog.text and "1 empty" in caplog.text
    assert f"{path}:2" in caplog.text


def test_output_over_token_limit_is_reported(tmp_path, tokenizer):
    path = tmp_path / "long.jsonl"
    path.write_text('{"input": "a", "output": "short"}\n' + json.dumps({"input": "b", "output": "word " * 50}) + "\n")
    with pytest.raises(DataError, match=r"long\.jsonl:2: output: is 5[01] tokens, over the limit of 20"):
        read_records(path, tokenizer=tokenizer, max_output_tokens=20)


def test_error_lists_at_most_ten_problems(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"input": "x"}\n' * 25)
    message = str(pytest.raises(DataError, read_records, path).value)
    assert message.count("output: missing") == 10 and "and 15 more" in message


def test_missing_and_unknown_files(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_records(tmp_path / "nope.jsonl")
    (tmp_path / "x.xml").write_text("<a/>")
    with pytest.raises(DataError, match="unknown data file type '.xml'"):
        read_records(tmp_path / "x.xml")
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(DataError, match="holds no records"):
        read_records(tmp_path / "empty.jsonl")


def test_json_array_read_in_tiny_chunks_equals_json_loads(tmp_path, monkeypatch):
    """Elements, numbers, escapes and multi-byte characters cut at every chunk boundary decode as json.loads does,
    with the line each element starts on."""
    import weaver.data.jsontext as jsontext

    rows = [{"input": f"caf\u00e9 \u4e2d {i} \\\"q\" \U0001f600", "output": str(i), "n": i * 1.5e-3, "m": [1e300, -0]}
            for i in range(12)]
    path = tmp_path / "a.json"
    path.write_text("\ufeff" + json.dumps(rows, indent=1, ensure_ascii=False), encoding="utf-8")
    for chunk in (1, 2, 3, 7, 64):
        monkeypatch.setattr(jsontext, "CHUNK", chunk)
        result = read_file(path)
        assert [(r.input, r.output, r.meta["n"]) for r in result.records] == [
            (r["input"], r["output"], r["n"]) for r in rows]
        assert [r.source.rsplit(":", 1)[1] for r in result.records] == [str(2 + 9 * i) for i in range(12)]
    path.write_text('[\n {"input": "a", "output": "b"},\n {"input": "c", "output" "d"}\n]\n')
    monkeypatch.setattr(jsontext, "CHUNK", 5)
    with pytest.raises(DataError, match=r"a\.json:3: invalid JSON \(Expecting ':' delimiter at line 3 column 26\)"):
        read_records(path)


def test_physical_lines_match_split_for_any_chunk_and_limit(monkeypatch):
    import io
    import random

    import weaver.data.rows as rows

    rng = random.Random(7)
    for _ in range(500):
        monkeypatch.setattr(rows, "CHUNK", rng.choice([1, 2, 5, 16]))
        limit = rng.choice([1, 3, 8, 50])
        data = bytes(rng.choice(b"ab\n") for _ in range(rng.randrange(40)))
        parts = data.split(b"\n")
        expected = [(i + 1, rows.TooLong(len(p) + (i < len(parts) - 1)) if len(p) > limit else
                     p + b"\n" * (i < len(parts) - 1)) for i, p in enumerate(parts) if p or i < len(parts) - 1]
        assert list(rows.physical_lines(io.BytesIO(data), limit)) == expected, (data, limit)


def test_csv_lone_carriage_returns_and_bom(tmp_path):
    path = tmp_path / "mac.csv"
    path.write_bytes(b"\xef\xbb\xbfinput,output\ra,b\r\"multi\rline\",d\r")
    recs = read_records(path)
    got = [(r.input, r.output, r.source.rsplit(":", 1)[1]) for r in recs]
    assert got == [("a", "b", "2"), ("multi\rline", "d", "3")]
