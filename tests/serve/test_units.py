"""Fast checks without a server: the row decoder's stop handling, the CLI's early errors, settings limits."""

from __future__ import annotations

import threading
import time

import pytest

from weaver.cli import main
from weaver.cli.serve import parse_adapters
from weaver.errors import ConfigError
from weaver.generate.rows import Row, RowDecoder
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


class _CountingBackend:
    """A backend that records each batch's size and finishes every row at once (raises when told to)."""

    def __init__(self, fail: bool = False):
        self.batches: list[int] = []
        self.fail = fail

    def generate(self, rows, params, adapter):
        self.batches.append(len(rows))
        if self.fail:
            raise RuntimeError("out of memory")
        for row in rows:
            row.text, row.finish_reason = "x", "stop"


def _run_jobs(backend, sizes: list[int], max_batch: int = 4, cancelled: tuple[int, ...] = ()):
    """Queue jobs of these row counts (those in `cancelled` already hung up), run them; (jobs, on_done calls)."""
    from weaver.generate.rows import BatchParams
    from weaver.serve.scheduler import Job, Scheduler

    scheduler = Scheduler(backend, max_batch=max_batch, max_queue=8, wait_s=0)
    done: list = []
    jobs = []
    for i, size in enumerate(sizes):
        cancel = threading.Event()
        if i in cancelled:
            cancel.set()
        jobs.append(Job([Row([1], 4, cancel=cancel) for _ in range(size)], None, BatchParams(), on_done=done.append))
        scheduler.submit(jobs[-1])
    scheduler.start()
    deadline = time.monotonic() + 10
    while len(done) < len(jobs) and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)  # a second on_done call would land now
    scheduler.stop()
    return jobs, done, scheduler.stats


def test_scheduler_runs_a_large_job_in_parts_and_others_between_them():
    backend = _CountingBackend()
    jobs, done, stats = _run_jobs(backend, [10, 1, 3])
    assert backend.batches == [4, 4, 4, 2] and stats["max_batch_rows"] == 4  # never more than max_batch rows
    assert done.count(jobs[0]) == done.count(jobs[1]) == done.count(jobs[2]) == 1
    assert done.index(jobs[1]) < done.index(jobs[0])  # the small job did not wait for all of the large one
    assert all(r.finish_reason == "stop" for job in jobs for r in job.rows)


def test_a_failed_part_ends_the_whole_job_once():
    backend = _CountingBackend(fail=True)
    jobs, done, _ = _run_jobs(backend, [10])
    assert backend.batches == [4]  # the rest of the job is not run after its first part failed
    assert done == [jobs[0]] and "out of memory" in jobs[0].error
    assert {r.finish_reason for r in jobs[0].rows} == {"error"}


def test_a_queued_job_whose_client_hung_up_never_runs():
    backend = _CountingBackend()
    jobs, done, stats = _run_jobs(backend, [2, 6, 1], cancelled=(1,))
    assert backend.batches == [3] and done.count(jobs[1]) == 1
    assert {r.finish_reason for r in jobs[1].rows} == {"cancelled"} and stats["cancelled_rows"] == 6


def test_tiny_temperatures_decode_greedily():
    from weaver.generate.rows import BatchParams
    from weaver.generate.sampling import GREEDY_BELOW, SamplingParams

    for t in (5e-324, 1e-300, 1e-45, GREEDY_BELOW / 2):
        assert BatchParams(temperature=t).temperature == 0.0 == SamplingParams(temperature=t).temperature
    assert BatchParams(temperature=GREEDY_BELOW).temperature == GREEDY_BELOW
    assert SamplingParams(temperature=0.7).temperature == 0.7


def test_serve_flags_are_derived_from_serve_settings():
    import argparse
    import dataclasses

    from weaver.cli.serve import add_arguments, flag_for, settings_from_args
    from weaver.serve.settings import ServeSettings

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    flags = {opt for action in parser._actions for opt in action.option_strings}
    assert {flag_for(f.name) for f in dataclasses.fields(ServeSettings)} <= flags  # every field has its flag
    assert settings_from_args(parser.parse_args([])) == ServeSettings()  # and the flags' defaults are the settings'
    got = settings_from_args(parser.parse_args(
        ["--max-n", "3", "--no-safety", "--log-prompts", "--adapter", "news=runs/a", "--cors-origin", "http://x",
         "--request-timeout", "9.5", "--repetition-penalty", "1.3", "--backend", "llamacpp"]))
    assert (got.max_n, got.safety, got.log_prompts, got.adapters, got.cors_origins) == (
        3, False, True, {"news": "runs/a"}, ["http://x"])
    assert (got.request_timeout_s, got.repetition_penalty, got.backend) == (9.5, 1.3, "llamacpp")
    help_text = parser.format_help()
    assert "Largest `n` (candidates per prompt)" in help_text  # help comes from the field's docstring
