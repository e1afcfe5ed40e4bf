"""Regenerate the malformed-data corpus in this folder: `python tests/reliability/corpus/make_corpus.py`.

Each file holds a few good records and one kind of damage; `tests/reliability/test_malformed_corpus.py`
lists, per file, the line the damage must be reported at and how many good records must survive a skip.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

HERE = Path(__file__).parent


def good(n: int, start: int = 0, nl: bytes = b"\n") -> bytes:
    """n valid flat records with ids g<start>..."""
    return b"".join(json.dumps({"id": f"g{i}", "input": f"good text {i}", "output": f"fine {i}"}).encode() + nl
                    for i in range(start, start + n))


def msg(*turns: tuple[str, str]) -> bytes:
    return json.dumps({"messages": [{"role": r, "content": c} for r, c in turns]}).encode() + b"\n"


CSV_GOOD = b"input,output\nfirst text,first\n\"quoted, with comma\",second\n"

FILES: dict[str, bytes] = {
    "broken_json.jsonl": good(3) + b'{"input": "x", "output": \n' + good(1, 3),
    "truncated_last_line.jsonl": good(3) + b'{"input": "the writer was cut off mid-wri',
    "trailing_comma.jsonl": good(2) + b'{"input": "x", "output": "y",}\n' + good(1, 2),
    "single_quotes.jsonl": good(2) + b"{'input': 'x', 'output': 'y'}\n",
    "line_is_a_list.jsonl": good(1) + b'["input", "output"]\n' + good(1, 1),
    "line_is_a_string.jsonl": good(1) + b'"just a sentence"\n',
    "output_is_number.jsonl": good(2) + b'{"input": "x", "output": 42}\n',
    "output_is_list.jsonl": good(2) + b'{"input": "x", "output": ["chosen", "rejected"]}\n',
    "input_is_object.jsonl": good(2) + b'{"input": {"text": "x"}, "output": "y"}\n',
    "null_fields.jsonl": good(2) + b'{"instruction": null, "input": null, "output": "y"}\n',
    "empty_output.jsonl": good(2) + b'{"input": "x", "output": ""}\n',
    "blank_output.jsonl": good(2) + b'{"input": "x", "output": " \\n\\t "}\n',
    "missing_output.jsonl": good(2) + b'{"input": "x", "summary": "y"}\n',
    "nan_output.jsonl": good(2) + b'{"input": "x", "output": NaN}\n',
    "invalid_utf8.jsonl": good(2) + b'{"input": "caf\xe9 cr\xe8me", "output": "y"}\n' + good(1, 2),
    "utf16_file.jsonl": '{"input": "x", "output": "y"}\n{"input": "z", "output": "w"}\n'.encode("utf-16"),
    "bom_midfile.jsonl": good(2) + b'\xef\xbb\xbf{"input": "x", "output": "y"}\n',
    "bom_start_then_broken.jsonl": b"\xef\xbb\xbf" + good(2) + b'{"input": "x" "output": "y"}\n',
    "control_character.jsonl": good(2) + b'{"input": "a\x07bell", "output": "y"}\n',
    "deeply_nested.jsonl": good(2) + b'{"input": "x", "output": "y", "meta": ' + b"[" * 3000 + b"]" * 3000 + b"}\n",
    "huge_integer.jsonl": good(2) + b'{"id": ' + b"7" * 5000 + b', "input": "x", "output": "y"}\n',
    "lone_surrogate.jsonl": good(2) + b'{"input": "broken \\ud800 emoji", "output": "y"}\n',
    "duplicate_ids.jsonl": good(3) + b'{"id": "g1", "input": "another", "output": "text"}\n',
    "id_is_float.jsonl": good(2) + b'{"id": 1.5, "input": "x", "output": "y"}\n',
    "duplicate_key_empty.jsonl": good(2) + b'{"input": "x", "output": "y", "output": ""}\n',
    "mixed_shapes.jsonl": good(1) + msg(("user", "a"), ("assistant", "b"))
    + b'{"conversations": [{"from": "human", "value": "c"}, {"from": "gpt", "value": "d"}]}\n'
    + msg(("user", "e")),
    "messages_unknown_role.jsonl": good(2) + msg(("tool", "x"), ("assistant", "y")),
    "history_not_pairs.jsonl": good(2) + b'{"input": "x", "output": "y", "history": [["only one"]]}\n',
    "references_not_strings.jsonl": good(2) + b'{"input": "x", "output": "y", "references": [1, 2]}\n',
    "sharegpt_not_a_list.jsonl": good(2) + b'{"conversations": "hello"}\n',
    "crlf_then_broken.jsonl": good(2, nl=b"\r\n") + b'{"input": "x"\r\n',
    "cr_only_newlines.jsonl": good(3, nl=b"\r"),
    "zero_length.jsonl": b"",
    "whitespace_only.jsonl": b"  \n\t\n\n",
    "binary_png.jsonl": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)),
    "gzip_named_jsonl.jsonl": gzip.compress(good(3), mtime=0),
    "csv_unclosed_quote.csv": CSV_GOOD + b'"never closed,x\nlast,row\n',
    "csv_too_many_fields.csv": CSV_GOOD + b"a,b,c\n",
    "csv_missing_output_column.csv": b"input,summary\nx,y\nz,w\n",
    "csv_empty_output.csv": CSV_GOOD + b"third text,\n",
    "csv_duplicate_header.csv": b"input,input,output\nx,y,z\n",
    "csv_header_only.csv": b"input,output\n",
    "csv_latin1.csv": b"input,output\nfirst,one\ncaf\xe9,two\n",
    "tsv_with_commas.tsv": b"input,output\nx,y\n",
    "json_array_broken.json": b'[\n  {"input": "x", "output": "y"},\n  {"input": "z", "output": \n]\n',
    "json_array_has_number.json": b'[\n  {"input": "x", "output": "y"},\n  7,\n  {"input": "z", "output": "w"}\n]\n',
    "json_scalar.json": b"42\n",
    "json_object_without_records.json": b'{"version": 1, "items": "none"}\n',
    "parquet_corrupt.parquet": b"PAR1" + b"\x00garbage" * 10,
}


def main() -> None:
    for name, data in FILES.items():
        (HERE / name).write_bytes(data)
    print(f"wrote {len(FILES)} files to {HERE}")


if __name__ == "__main__":
    main()
