"""`weaver data check`: statistics on good files, file:line errors and a non-zero exit on broken ones."""

from __future__ import annotations

import json

from weaver.cli import main


def _write(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def test_check_prints_statistics_and_overlap(tmp_path, tiny_model_dir, capsys):
    rows = [{"input": "hello world", "output": "hi"}, {"input": "你好世界", "output": "你好"},
            {"input": "hello world", "output": "hi"}]
    train = _write(tmp_path / "train.jsonl", rows)
    dev = _write(tmp_path / "dev.jsonl", [{"input": "Hello  world", "output": "x"}])
    rc = main(["data", "check", train, "--dev", dev, "--model", str(tiny_model_dir), "--json"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    s = report["files"]["train"]["stats"]
    assert s["records"] == 3 and s["languages"] == {"en": 2, "zh": 1} and s["duplicates"] == 1
    assert s["tokens"]["output"]["max"] >= 1 and s["tokens"]["prompt"]["p50"] > s["tokens"]["output"]["p50"]
    assert report["overlap"] == {"train/dev": 1}
    rc = main(["data", "check", train, "--dev", dev, "--model", str(tiny_model_dir)])
    text = capsys.readouterr().out
    assert rc == 0 and "p50" in text and "train/dev 1" in text and "zh 1 (33.3%)" in text


def test_check_broken_file_lists_file_line_and_exits_non_zero(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"input": "a", "output": "b"}\n{"input": "a", "output": \n{"input": "c", "output": ""}\n')
    rc = main(["data", "check", str(bad), "--model", "none"])
    err = capsys.readouterr().err
    assert rc == 3
    assert f"{bad}:2: invalid JSON" in err and f"{bad}:3: output: is empty" in err and "--on-error skip" in err
    assert main(["data", "check", str(bad), "--model", "none", "--on-error", "skip"]) == 0


def test_check_columns_and_bad_columns(tmp_path, capsys):
    path = tmp_path / "d.csv"
    path.write_text("article,summary\nSnow today.,Snow\n")
    assert main(["data", "check", str(path), "--model", "none", "--columns", '{"input": "article", "output": '
                 '"summary"}']) == 0
    assert main(["data", "check", str(path), "--model", "none", "--columns", "{oops"]) == 2
    assert "--columns is not valid JSON" in capsys.readouterr().err
    assert main(["data", "check", str(tmp_path / "missing.jsonl"), "--model", "none"]) == 3
