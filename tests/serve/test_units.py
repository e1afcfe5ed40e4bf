"""Fast checks without a server: the row decoder's stop handling, the CLI's early errors, settings limits."""

from __future__ import annotations

import threading

import pytest

from weaver.cli import main
from weaver.errors import ConfigError
from weaver.serve.backend import Row, RowDecoder
from weaver.serve.cli import parse_adapters
from weaver.serve.settings import ServeSettings


def _feed(tokenizer, text: str, **row_kw) -> tuple[Row, list[str]]:
    pieces: list[str] = []
    row = Row([1], on_text=pieces.append, **{"max_new_tokens": 100, **row_kw})
    decoder = RowDecoder(row, tokenizer, {tokenizer.eos_token_id})
    for token in tokenizer(text, add_special_tokens=False)["input_ids"]:
        if decoder.push(token):
            break
    decoder.finish("length")
    return row, pieces


def test_stop_string_is_never_streamed_even_in_part(tokenizer):
    row, pieces = _feed(tokenizer, "The harbour reopened today. ENDING soon, more text", stop=["ENDING"])
    assert "".join(pieces) == row.text == "The harbour reopened today. "
    assert row.finish_reason == "stop"
    assert not any("END" in p for p in pieces)


def test_token_limit_and_eos_end_a_row(tokenizer):
    row, pieces = _feed(tokenizer, "one two three four five six", max_new_tokens=3)
    assert row.finish_reason == "length" and row.completion_tokens == 3
    assert "".join(pieces) == row.text == tokenizer.decode(tokenizer("one two three four")["input_ids"][:3])
    row, _ = _feed(tokenizer, "short" + tokenizer.eos_token + " ignored")
    assert row.finish_reason == "stop" and row.text == "short"


def test_cancelled_row_stops_at_once(tokenizer):
    cancel = threading.Event()
    cancel.set()
    row, pieces = _feed(tokenizer, "never streamed", cancel=cancel)
    assert row.finish_reason == "cancelled" and pieces == [] and row.completion_tokens == 0


def test_cli_rejects_bad_specs_before_opening_a_port(tmp_path, tiny_model_dir, capsys):
    assert main(["serve", "--model", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["serve", "--model", str(tiny_model_dir), "--adapter", f"x={tiny_model_dir}"]) == 2
    assert "not a tuned run" in capsys.readouterr().err
    assert main(["serve", "--model", str(tiny_model_dir), "--max-batch", "0"]) == 2
    assert "--max-batch" in capsys.readouterr().err


def test_adapter_flags_and_settings_limits():
    assert parse_adapters(["news=runs/a", "ads = runs/b"]) == {"news": "runs/a", "ads": "runs/b"}
    for bad in (["runs/a"], ["=runs/a"], ["a=x", "a=y"]):
        with pytest.raises(ConfigError):
            parse_adapters(bad)
    with pytest.raises(ConfigError, match="--api-key"):
        ServeSettings(api_key=" ")
    assert ServeSettings().host == "127.0.0.1" and ServeSettings().cors_origins == []
