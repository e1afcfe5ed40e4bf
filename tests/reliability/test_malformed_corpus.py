"""Malformed data corpus: each bad file gives file:line and a non-zero exit from `weaver data check`, no traceback.

    .venv/bin/pytest -q tests/reliability/test_malformed_corpus.py          # corpus + 300 mutated files
    .venv/bin/pytest -q tests/reliability/test_malformed_corpus.py --long   # corpus + 5000 mutated files

The files live in tests/reliability/corpus/ (regenerate with corpus/make_corpus.py). tests/data checks
the reader's messages record by record; this suite runs the real command line on whole files, checks
that `--on-error skip` keeps exactly the good records, and mutates a good file at random (seeded) to
find inputs the table does not list.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from weaver.cli import main

CORPUS = Path(__file__).parent / "corpus"
ROOT = Path(__file__).resolve().parents[2]

# file -> (line the damage is reported at, or None for a whole-file error; text in the message;
#          good records that survive --on-error skip, or None when the whole file is refused)
EXPECTED: dict[str, tuple[int | None, str, int | None]] = {
    "broken_json.jsonl": (4, "invalid JSON", 4),
    "truncated_last_line.jsonl": (4, "invalid JSON", 3),
    "trailing_comma.jsonl": (3, "invalid JSON", 3),
    "single_quotes.jsonl": (3, "invalid JSON", 2),
    "line_is_a_list.jsonl": (2, "expected a JSON object", 2),
    "line_is_a_string.jsonl": (2, "got a string", 1),
    "output_is_number.jsonl": (3, "output: expected a string, got a number", 2),
    "output_is_list.jsonl": (3, "output: expected a string, got a list", 2),
    "input_is_object.jsonl": (3, "input: expected a string", 2),
    "null_fields.jsonl": (3, "both instruction and input are empty", 2),
    "empty_output.jsonl": (3, "output: is empty", 2),
    "blank_output.jsonl": (3, "output: is empty", 2),
    "missing_output.jsonl": (3, "output: missing", 2),
    "nan_output.jsonl": (3, "output: expected a string", 2),
    "invalid_utf8.jsonl": (3, "not UTF-8", 3),
    "utf16_file.jsonl": (1, "not UTF-8", 0),
    "bom_midfile.jsonl": (3, "BOM", 2),
    "bom_start_then_broken.jsonl": (3, "invalid JSON", 2),
    "control_character.jsonl": (3, "control character", 2),
    "deeply_nested.jsonl": (3, "nested too deeply", 2),
    "huge_integer.jsonl": (3, "thousands of digits", 2),
    "lone_surrogate.jsonl": (3, "unpaired UTF-16 surrogate", 2),
    "duplicate_ids.jsonl": (4, "duplicate id 'g1'", 3),
    "id_is_float.jsonl": (3, "id: expected a string or integer", 2),
    "duplicate_key_empty.jsonl": (3, "output: is empty", 2),
    "mixed_shapes.jsonl": (4, "alternating user/assistant turns", 3),
    "messages_unknown_role.jsonl": (3, "role 'tool' is not supported", 2),
    "history_not_pairs.jsonl": (3, "history[0]", 2),
    "references_not_strings.jsonl": (3, "references: expected a list of strings", 2),
    "sharegpt_not_a_list.jsonl": (3, "conversations: expected a non-empty list", 2),
    "crlf_then_broken.jsonl": (3, "invalid JSON", 2),
    "cr_only_newlines.jsonl": (1, "invalid JSON", 0),
    "zero_length.jsonl": (None, "holds no records", None),
    "whitespace_only.jsonl": (None, "holds no records", None),
    "binary_png.jsonl": (1, "not UTF-8", 0),
    "gzip_named_jsonl.jsonl": (1, "not UTF-8", 0),
    "csv_unclosed_quote.csv": (4, "is never closed", 3),  # the swallowed line 5 is read as a row again
    "csv_too_many_fields.csv": (4, "row has 3 fields", 2),
    "csv_missing_output_column.csv": (2, "output: missing", 0),
    "csv_empty_output.csv": (4, "output: is empty", 2),
    "csv_duplicate_header.csv": (1, "repeated column names", None),
    "csv_header_only.csv": (None, "holds no records", None),
    "csv_latin1.csv": (3, "not UTF-8", None),
    "tsv_with_commas.tsv": (2, "output: missing", 0),
    "json_array_broken.json": (3, "invalid JSON", None),
    "json_array_has_number.json": (3, "expected a JSON object", 2),
    "json_scalar.json": (1, "got a number", 0),
    "json_object_without_records.json": (1, "output: missing", 0),
    "parquet_corrupt.parquet": (None, "cannot read as Parquet", None),
}


def check(capsys, path: Path, *extra: str) -> tuple[int, str, str]:
    """`weaver data check PATH --model none ...` through the real entry point: (exit code, stdout, stderr)."""
    code = main(["data", "check", str(path), "--model", "none", *extra])
    out = capsys.readouterr()
    return code, out.out, out.err


def assert_user_error(err: str, path: Path, line: int | None, needle: str) -> None:
    assert "Traceback" not in err and "internal error" not in err, err[-1500:]
    assert (f"{path}:{line}" if line else str(path)) in err, err[-1500:]
    assert needle in err, err[-1500:]


def test_corpus_is_complete():
    files = {p.name for p in CORPUS.iterdir() if p.suffix != ".py" and p.is_file()}
    assert files == set(EXPECTED)
    assert len(EXPECTED) >= 30


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bad_file_gives_file_line_and_nonzero_exit(name, capsys, figures):
    line, needle, good = EXPECTED[name]
    path = CORPUS / name
    code, _, err = check(capsys, path)
    assert code != 0
    assert_user_error(err, path, line, needle)
    code, out, err = check(capsys, path, "--on-error", "skip", "--json")
    if good is None:  # the whole file is unreadable: skipping cannot help, and says why
        assert code != 0
        assert_user_error(err, path, line, needle)
    else:
        assert code == 0, err
        assert json.loads(out)["files"]["train"]["stats"]["records"] == good
        assert_user_error(err, path, line, needle)  # skipped records are still reported
    tally = figures.setdefault("malformed_corpus", {"files": 0, "tracebacks": 0, "kinds": len(EXPECTED)})
    tally["files"] += 1


def test_huge_lines(tmp_path, capsys, tiny_model_dir):
    good = b"".join(json.dumps({"input": f"text {i}", "output": f"out {i}"}).encode() + b"\n" for i in range(3))
    unterminated = tmp_path / "huge_unterminated.jsonl"
    unterminated.write_bytes(good + b'{"input": "' + b"x" * 3_000_000 + b"\n" + good.replace(b"text", b"more"))
    code, _, err = check(capsys, unterminated)
    assert code == 3
    assert_user_error(err, unterminated, 4, "invalid JSON")
    code, out, _ = check(capsys, unterminated, "--on-error", "skip", "--json")
    assert code == 0 and json.loads(out)["files"]["train"]["stats"]["records"] == 6
    too_long = tmp_path / "huge_output.jsonl"
    too_long.write_bytes(good + json.dumps({"input": "x", "output": "word " * 200_000}).encode() + b"\n")
    code = main(["data", "check", str(too_long), "--model", str(tiny_model_dir), "--max-output-tokens", "100"])
    err = capsys.readouterr().err
    assert code == 3
    assert_user_error(err, too_long, 4, "over the limit of 100")


def test_console_script_exit_codes_and_no_traceback():
    """A real subprocess (the others run the same entry point in-process): the exit code and stderr a user sees."""
    for path in [CORPUS / "deeply_nested.jsonl"]:
        res = subprocess.run([sys.executable, "-m", "weaver.cli", "data", "check", str(path), "--model", "none"],
                             capture_output=True, text=True, timeout=300, cwd=ROOT)
        assert res.returncode == 3, res.stderr
        assert "Traceback" not in res.stderr and res.stderr.strip().splitlines()[-1].startswith("error: ")
        assert str(path) in res.stderr


PALETTE = [b'"', b"{", b"}", b"[", b"]", b",", b":", b"\\", b"\n", b"\r", b"\x00", b"\xff", b"\xef\xbb\xbf",
           b"\\ud800", b"NaN", b"null", b"9" * 5000, b"[" * 3000, b"\t", b'"output": ""']


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One to three random edits: overwrite, insert from PALETTE, delete a slice, truncate, duplicate a line."""
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(data) + 1)
        op = rng.randrange(5)
        if op == 0 and data:
            data = data[:i] + bytes([rng.randrange(256)]) + data[i + 1:]
        elif op == 1:
            data = data[:i] + rng.choice(PALETTE) + data[i:]
        elif op == 2:
            data = data[:i] + data[i + rng.randint(1, 40):]
        elif op == 3:
            data = data[:i]
        else:
            lines = data.split(b"\n")
            k = rng.randrange(len(lines))
            data = b"\n".join(lines[: k + 1] + [lines[k]] + lines[k + 1:])
    return data


SEEDS = {
    "flat.jsonl": b"".join(json.dumps({"id": f"r{i}", "instruction": "Summarize.", "input": f"text {i} é 中文",
                                       "output": f"short {i}", "history": [["q", "a"]], "meta": {"k": i}}).encode()
                           + b"\n" for i in range(6)),
    "chat.jsonl": b"".join(json.dumps({"messages": [{"role": "system", "content": "s"}, {"role": "user",
                                       "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}).encode()
                           + b"\n" for i in range(4)),
    "array.json": json.dumps([{"input": f"x{i}", "output": f"y{i}"} for i in range(4)], indent=1).encode(),
    "table.csv": b'id,input,output\n1,"a, b",c\n2,"multi\nline",d\n3,e,f\n',
    "table.tsv": b"input\toutput\nx\ty\nz\tw\n",
}


def test_mutated_files_never_crash(tmp_path, capsys, long_mode, figures):
    rng = random.Random(20261129)
    n = 5000 if long_mode else 300
    outcomes = {"clean": 0, "reported": 0}
    for k in range(n):
        name = rng.choice(sorted(SEEDS))
        path = tmp_path / f"m{k % 10}{Path(name).suffix}"
        path.write_bytes(mutate(SEEDS[name], rng))
        code, _, err = check(capsys, path, "--on-error", rng.choice(["fail", "skip"]))
        assert code in (0, 3), (k, name, path.read_bytes()[:300], err[-1000:])
        assert "Traceback" not in err and "internal error" not in err, (path.read_bytes()[:300], err[-1000:])
        if code == 3 or err.strip():
            assert str(path) in err, err[-1000:]
        outcomes["reported" if err.strip() else "clean"] += 1
    figures["malformed_fuzz"] = {"mutated_files": n, **outcomes, "tracebacks": 0, "internal_errors": 0}
