"""Hostile data files (issue #15, items 6-8): each gives a `file:line` reason, bounded memory and counts that add up.

    .venv/bin/pytest -q tests/reliability/test_hostile_data.py

Probes: a CSV/TSV field over csv's default 128 KB field limit and one over the 32 MiB record limit, a
20 000-record JSON array (must read about as fast as the same records as JSON Lines), TSV quotes, a stray
CSV quote that swallows the rows after it, outputs that hold only invisible characters, a 50 MB record
and a 2 GiB sparse file (peak memory of a real `weaver data check` subprocess), a FIFO and a device.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from weaver.cli import main
from weaver.data.readers import read_file
from weaver.data.rows import MAX_RECORD_BYTES

ROOT = Path(__file__).resolve().parents[2]
# `weaver data check ARGS` in a subprocess that prints its own peak resident memory (VmHWM, KiB) at the end.
# (Not ru_maxrss: Linux carries it across fork+exec, so a child started by a big pytest process reports its size.)
MEASURED = ("import re, sys; from weaver.cli import main; rc = main(sys.argv[1:]); "
            "hwm = re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1); "
            "print('MAXRSS', hwm, file=sys.stderr); sys.exit(rc)")
MEMORY_MARGIN_MB = 200
"""How far above a tiny file's peak the huge ones may go (one 32 MiB record and its copies; before the fix a
50 MB record took 860 MB more and a 2 GiB sparse file 4 GB more)."""


def check(capsys, path: Path, *extra: str) -> tuple[int, dict | None, str]:
    """`weaver data check PATH --model none --json ...` in-process: (exit code, the JSON report or None, stderr)."""
    code = main(["data", "check", str(path), "--model", "none", "--json", *extra])
    out = capsys.readouterr()
    return code, json.loads(out.out) if out.out.strip() else None, out.err


def counts(report: dict) -> tuple[int, int, int]:
    """(records seen, good, malformed) of the train file; seen must equal good + malformed."""
    f = report["files"]["train"]
    return f["rows"], f["stats"]["records"], len(f["problems"])


def assert_clean_error(err: str, where: str, needle: str) -> None:
    assert "Traceback" not in err and "internal error" not in err, err[-1500:]
    assert where in err and needle in err, err[-1500:]


def measured_check(path: Path, *extra: str) -> tuple[int, float, str]:
    """Run `weaver data check` in a subprocess: (exit code, peak RSS in MiB, stderr)."""
    res = subprocess.run([sys.executable, "-c", MEASURED, "data", "check", str(path), "--model", "none", *extra],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    head, _, tail = res.stderr.rpartition("MAXRSS")
    assert tail, res.stderr[-1500:]
    return res.returncode, int(tail.split()[0]) / 1024, head


@pytest.fixture(scope="module")
def baseline_rss(tmp_path_factory) -> float:
    """Peak RSS (MiB) of `weaver data check` on a one-record file: the interpreter and its imports."""
    path = tmp_path_factory.mktemp("base") / "tiny.jsonl"
    path.write_text(json.dumps({"input": "a", "output": "b"}) + "\n")
    code, rss, err = measured_check(path)
    assert code == 0, err
    return rss


# ---- item 6: CSV/TSV fields over 128 KB -----------------------------------------------------------------------

@pytest.mark.parametrize("suffix,sep", [(".csv", ","), (".tsv", "\t")])
def test_field_over_128kb_is_read(tmp_path, capsys, suffix, sep):
    article = ("Long article paragraph. " * 10_000).strip()  # 240 KB, over csv's default field limit of 128 KB
    path = tmp_path / f"long{suffix}"
    path.write_text(f"input{sep}output\n{article}{sep}Summary one\nshort{sep}Summary two\n", encoding="utf-8")
    code, report, err = check(capsys, path)
    assert code == 0, err
    assert counts(report) == (2, 2, 0)
    (first, _) = read_file(path).records
    assert first.input == article and first.source == f"{path}:2"


def test_csv_record_over_the_limit_is_reported_and_reading_goes_on(tmp_path, capsys):
    path = tmp_path / "huge.csv"
    with path.open("w") as f:
        f.write("input,output\nfirst,one\n")
        f.write('"' + "x" * (MAX_RECORD_BYTES + 2**20) + '",two\n')
        f.write("third,three\n")
    code, report, err = check(capsys, path)
    assert code == 3
    assert_clean_error(err, f"{path}:3", "over the limit of 32 MiB for one record")
    assert counts(report) == (3, 2, 1)


# ---- item 7: JSON arrays in linear time ------------------------------------------------------------------------

def test_json_array_reads_as_fast_as_json_lines(tmp_path, figures):
    rows = [{"instruction": "Summarize.", "input": f"text {i} " * 20, "output": f"out {i}"} for i in range(20_000)]
    array, lines = tmp_path / "a.json", tmp_path / "a.jsonl"
    array.write_text(json.dumps(rows, indent=2))
    lines.write_text("".join(json.dumps(r) + "\n" for r in rows))
    seconds = {}
    for path in (lines, array, lines, array):  # twice each, the best of two: the machine is shared
        start = time.perf_counter()
        result = read_file(path)
        seconds[path.suffix] = min(seconds.get(path.suffix, 1e9), time.perf_counter() - start)
        assert len(result.records) == result.rows == 20_000 and not result.problems
    assert result.records[-1].source == f"{array}:{2 + 5 * 19_999}"  # indent=2: 5 lines per record
    assert seconds[".json"] < 2 * seconds[".jsonl"] + 0.5, seconds  # quadratic before: 34 s vs 5 s
    figures.setdefault("hostile_data", {}).update(
        json_array_20k_s=round(seconds[".json"], 2), jsonl_20k_s=round(seconds[".jsonl"], 2))


# ---- item 8: quotes, invisible text, huge and odd files ----------------------------------------------------

def test_tsv_keeps_quotes_as_written_and_says_so(tmp_path, caplog):
    path = tmp_path / "q.tsv"
    path.write_text('input\toutput\n"quoted" word\t"say ""hi"""\n5" screen\tgood\n', encoding="utf-8")
    with caplog.at_level("WARNING"):
        first, second = read_file(path).records
    assert (first.input, first.output) == ('"quoted" word', '"say ""hi"""')
    assert (second.input, second.output) == ('5" screen', "good")
    assert "TSV has no quoting, so the quotes are kept" in caplog.text and str(path) in caplog.text


def test_stray_quote_that_is_never_closed_swallows_nothing(tmp_path, capsys):
    path = tmp_path / "stray.csv"
    path.write_text("input,output\n" + "a,b\n" * 3 + '"oops,x\n' + "c,d\n" * 200)
    code, report, err = check(capsys, path)
    assert code == 3
    assert_clean_error(err, f"{path}:5", "never closed, so it swallowed lines 6-205")
    assert counts(report) == (204, 203, 1)


def test_stray_quote_closed_later_is_reported_and_the_rows_it_swallowed_counted(tmp_path, capsys):
    path = tmp_path / "closed.csv"
    path.write_text("input,output\na,b\n" + 'c,"oops\n' + "e,f\n" * 30 + 'g,"h"i\n' + "j,k\n" * 5)
    code, report, err = check(capsys, path, "--on-error", "skip")
    assert code == 0
    assert_clean_error(err, f"{path}:3", "a stray quote probably swallowed lines 4-34")
    seen, good, bad = counts(report)
    assert (seen, bad) == (38, 1) and good == seen - bad


def test_multiline_quoted_field_that_is_real_stays_one_record(tmp_path):
    path = tmp_path / "letter.csv"
    letter = "Dear all,\n\n" + "we meet at noon\n" * 12 + "Bye"
    path.write_text(f'input,output\n"{letter}",Meeting at noon\nnext,row\n')
    result = read_file(path)
    assert [r.input for r in result.records] == [letter, "next"] and not result.problems


INVISIBLE = ["\u200b", "\u200b\u200c\u200d", "\u2060", "\ufeff", "\u3164", "\u00a0\u200b ", "\u2800", "\u00ad",
             "\u202e"]


@pytest.mark.parametrize("text", INVISIBLE, ids=[f"U+{ord(t[0]):04X}" for t in INVISIBLE])
def test_output_of_invisible_characters_is_empty(tmp_path, capsys, text):
    path = tmp_path / "z.jsonl"
    path.write_text(json.dumps({"input": "hello", "output": "fine"}) + "\n"
                    + json.dumps({"input": "x", "output": text}) + "\n"
                    + json.dumps({"messages": [{"role": "user", "content": "q"},
                                               {"role": "assistant", "content": text}]}) + "\n")
    code, report, err = check(capsys, path)
    assert code == 3
    assert_clean_error(err, f"{path}:2", "output: is empty")
    assert_clean_error(err, f"{path}:3", "the final assistant reply is empty")
    assert counts(report) == (3, 1, 2)


def test_visible_text_with_invisible_characters_is_not_empty(tmp_path):
    path = tmp_path / "ok.jsonl"
    path.write_text(json.dumps({"input": "x", "output": "\u200bword\u200b"}) + "\n")
    assert read_file(path).records[0].output == "\u200bword\u200b"


def test_50mb_record_is_refused_in_bounded_memory(tmp_path, baseline_rss, figures):
    path = tmp_path / "r50.jsonl"
    with path.open("w") as f:
        f.write(json.dumps({"input": "a", "output": "b"}) + "\n")
        f.write(json.dumps({"input": "x", "output": "word " * 10_000_000}) + "\n")  # 50 MB on one line
        f.write(json.dumps({"input": "c", "output": "d"}) + "\n")
    code, rss, err = measured_check(path, "--on-error", "skip")
    assert code == 0, err
    assert_clean_error(err, f"{path}:2", "the record is 47.7 MiB, over the limit of 32 MiB")
    assert "1 of 3 records" in err
    assert rss < baseline_rss + MEMORY_MARGIN_MB, (rss, baseline_rss)  # 7.9 GB before (1.1 GB with --model none)
    figures.setdefault("hostile_data", {}).update(rss_mb_50mb_record=round(rss), rss_mb_tiny_file=round(baseline_rss))


def test_2gib_sparse_file_is_streamed(tmp_path, baseline_rss, figures):
    path = tmp_path / "sparse.jsonl"
    with path.open("wb") as f:
        f.truncate(2 * 2**30)  # 2 GiB of NUL bytes, no newline, hardly any disk
    code, rss, err = measured_check(path)
    assert code == 3
    assert_clean_error(err, f"{path}:1", "the record is 2048.0 MiB, over the limit of 32 MiB")
    assert rss < baseline_rss + MEMORY_MARGIN_MB, (rss, baseline_rss)  # 4.4 GB before
    figures.setdefault("hostile_data", {}).update(rss_mb_2gib_sparse_file=round(rss))


@pytest.mark.parametrize("name,needle", [("sparse.json", "sparse.json:1: invalid JSON (Expecting value"),
                                         ("sparse.csv", "sparse.csv:1: the header row is over 32 MiB")])
def test_sparse_json_and_csv_are_refused_without_reading_them_whole(tmp_path, capsys, name, needle):
    path = tmp_path / name
    with path.open("wb") as f:
        f.truncate(256 * 2**20)
    code, _, err = check(capsys, path)
    assert code == 3
    assert_clean_error(err, needle, "")


def test_fifo_is_not_a_regular_file(tmp_path):
    path = tmp_path / "pipe.jsonl"
    os.mkfifo(path)
    res = subprocess.run([sys.executable, "-m", "weaver.cli", "data", "check", str(path), "--model", "none"],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)  # opening a FIFO would block
    assert res.returncode == 3
    assert_clean_error(res.stderr, str(path), "is a named pipe (FIFO), not a regular file")
    assert "does not exist" not in res.stderr


def test_device_is_not_a_regular_file(tmp_path, capsys):
    path = tmp_path / "zero.jsonl"
    path.symlink_to("/dev/zero")  # reading it would never end
    code, _, err = check(capsys, path)
    assert code == 3
    assert_clean_error(err, str(path), "is a device, not a regular file")
