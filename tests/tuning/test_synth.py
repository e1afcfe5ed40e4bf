"""weaver data synth: every filter can remove a candidate, kept records are marked, a killed run resumes, and
back-translation keeps the input under which the original output is likeliest."""

from __future__ import annotations

import json

import pytest

from weaver.config import DataConfig
from weaver.data.readers import read_records
from weaver.data.records import Record
from weaver.data.synthetic import is_synthetic
from weaver.errors import ConfigError
from weaver.generate import Completion
from weaver.safety import load_policy
from weaver.tuning.synth import backtranslate_chunk, synthesize
from weaver.tuning.synth_files import SynthFiles
from weaver.tuning.synth_filters import SynthSettings, agreement, first_failure, rouge_l

GOOD = "the customer cannot log in to the account"


class Scripted:
    """A generator stand-in: answers(prompt) -> the K texts for that prompt; records what it was asked."""

    def __init__(self, tok, answers, fail_after: int | None = None):
        self.tok, self.answers, self.prompts, self.calls, self.fail_after = tok, answers, [], 0, fail_after

    def generate(self, prompts, params, progress=None):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt("killed")
        self.calls += 1
        self.prompts += prompts
        return [[Completion(t, 1, 1, "stop") for t in self.answers(p)[: params.n]] for p in prompts]


def write_inputs(path, n):
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            fh.write(json.dumps({"id": f"in{i}", "input": f"message number {i} about topic {i * 7}",
                                 "output": "a human label that must be discarded"}) + "\n")
    return path


def by_input(prompt: str) -> list[str]:
    """Each input gets its own, agreeing samples (so no filter but the one under test fires)."""
    n = prompt.split("message number ")[1].split()[0]
    text = f"reply {n}: we reset the password for account {n} and sent a new link to you"
    return [text, text + " today", text]


def scores(**kw):
    return {"logprob": -1.0, "agreement": 0.8, **kw}


@pytest.mark.parametrize("text,extra,settings,reason", [
    ("   \u200b ", {}, {}, "empty"),
    (GOOD, {"truncated": True}, {}, "truncated"),
    (GOOD, {"truncated": True, "logprob": -9.0}, {"keep_truncated": True}, "logprob"),
    ("ok", {}, {}, "length"),
    (" ".join(["word"] * 50), {}, {"max_words": 40}, "length"),
    ("reset it now " * 10, {}, {}, "repetition"),
    ("write to john.doe@example.com for a refund of the order", {}, {}, "safety"),
    (GOOD, {"agreement": 0.05}, {}, "agreement"),
    (GOOD, {"logprob": -4.0}, {}, "logprob"),
    (GOOD, {"copy": 0.9}, {"mode": "backtranslate"}, "copy"),
])
def test_every_filter_removes_what_it_measures(text, extra, settings, reason):
    s = SynthSettings(**settings)
    policy = load_policy(None, audit_log="off")
    assert first_failure(text, scores(**extra), s, "en", policy, []) == reason
    assert first_failure(GOOD, scores(), s, "en", policy, []) is None


def test_near_duplicates_of_kept_texts_are_removed():
    s, policy = SynthSettings(), load_policy(None, audit_log="off")
    assert first_failure(GOOD + ".", scores(), s, "en", policy, [GOOD]) == "duplicate"
    assert first_failure("the printer shows error 301 after the update", scores(), s, "en", policy, [GOOD]) is None


def test_agreement_is_mean_pairwise_rouge_and_picks_the_medoid():
    score, best = agreement(["the cat sat on the mat", "the cat sat on a mat", "stocks fell sharply"], "en")
    assert 0.2 < score < 0.7
    assert best in (0, 1)
    assert agreement(["same words here", "same words here"], "en") == (1.0, 0)


def test_settings_are_validated():
    for bad in ({"k": 1}, {"mode": "magic"}, {"temperature": 0}, {"min_logprob": 0.5}, {"min_words": 5, "max_words": 2},
                {"dedup": 1.5}):
        with pytest.raises(ConfigError):
            SynthSettings(**bad)
    assert SynthSettings(mode="backtranslate").min_agreement == 0.0


def test_selftrain_marks_every_kept_record_and_discards_input_labels(tiny_model, tmp_path):
    model, tok = tiny_model
    inputs = write_inputs(tmp_path / "in.jsonl", 5)
    gen = Scripted(tok, by_input)
    s = SynthSettings(min_logprob=-100.0)
    summary = synthesize("tiny", inputs, tmp_path / "synth.jsonl", DataConfig(task="support_reply"), s,
                         generator=gen, scorer_model=(model, tok), batch_size=4, progress=lambda *a: None)
    kept = read_records(tmp_path / "synth.jsonl")
    assert summary["kept"] == len(kept) == 5 and summary["finished"] == 5
    for r in kept:
        assert is_synthetic(r)
        meta = r.meta["synthetic"]
        assert meta["mode"] == "selftrain" and meta["source_id"] + "+synth" == r.id
        assert meta["scores"]["logprob"] < 0 and meta["scores"]["agreement"] > 0.8 and meta["scores"]["k"] == 3
        assert r.output.startswith("reply ") and "human label" not in r.output
    assert not any("human label" in p for p in gen.prompts)
    assert sum(f["removed"] for f in summary["filters"].values()) == summary["rejected"] == 0


def test_the_logprob_filter_rejects_with_the_measured_score(tiny_model, tmp_path):
    model, tok = tiny_model  # a random model: its mean token log-prob is near -log(49152) = -10.8
    inputs = write_inputs(tmp_path / "in.jsonl", 3)
    summary = synthesize("tiny", inputs, tmp_path / "s.jsonl", DataConfig(task="support_reply"),
                         SynthSettings(min_logprob=-5.0), generator=Scripted(tok, by_input),
                         scorer_model=(model, tok), progress=lambda *a: None)
    assert summary["kept"] == 0 and summary["filters"]["logprob"]["removed"] == 3
    rejected = [json.loads(line) for line in (tmp_path / "s.rejected.jsonl").read_text().splitlines()]
    assert {r["rejected"] for r in rejected} == {"logprob"} and all(r["scores"]["logprob"] < -5 for r in rejected)


def test_a_killed_run_resumes_where_it_stopped_and_equals_an_uninterrupted_one(tiny_model, tmp_path):
    model, tok = tiny_model
    inputs = write_inputs(tmp_path / "in.jsonl", 9)
    cfg, s = DataConfig(task="support_reply"), SynthSettings(min_logprob=-100.0)
    run = dict(scorer_model=(model, tok), batch_size=4, progress=lambda *a: None)  # 2 inputs per chunk (K=4)
    full = synthesize("tiny", inputs, tmp_path / "full.jsonl", cfg, s, generator=Scripted(tok, by_input), **run)

    out = tmp_path / "part.jsonl"
    with pytest.raises(KeyboardInterrupt):
        synthesize("tiny", inputs, out, cfg, s, generator=Scripted(tok, by_input, fail_after=2), **run)
    assert len(out.read_text().splitlines()) == 4
    with open(out, "a", encoding="utf-8") as fh:
        fh.write('{"id": "torn", "inp')  # killed in the middle of a write
    again = Scripted(tok, by_input)
    resumed = synthesize("tiny", inputs, out, cfg, s, generator=again, **run)
    assert len(again.prompts) == 5  # only the inputs the killed run had not finished
    assert resumed["kept"] == full["kept"] == 9
    assert out.read_text() == (tmp_path / "full.jsonl").read_text()


def test_resuming_with_other_settings_is_refused(tiny_model, tmp_path):
    model, tok = tiny_model
    inputs, out = write_inputs(tmp_path / "in.jsonl", 2), tmp_path / "s.jsonl"
    run = dict(generator=Scripted(tok, by_input), scorer_model=(model, tok), progress=lambda *a: None)
    synthesize("tiny", inputs, out, DataConfig(task="support_reply"), SynthSettings(min_logprob=-100.0), **run)
    with pytest.raises(ConfigError, match="min_logprob"):
        synthesize("tiny", inputs, out, DataConfig(task="support_reply"), SynthSettings(min_logprob=-50.0), **run)
    (tmp_path / "other.jsonl").write_text('{"id": 1}\n')
    with pytest.raises(ConfigError, match="not a `weaver data synth` output"):
        SynthFiles(tmp_path / "other.jsonl").start({})


def test_backtranslation_keeps_the_input_under_which_the_output_is_likeliest(tokenizer):
    outputs = [Record("ad1", "", "", "Soft cotton tee, now 20% off."), Record("ad2", "", "", "Fast steel kettle.")]
    gen = Scripted(tokenizer, lambda p: ["colour: red", "GOOD fabric: jersey; colour: grey",
                                         "COPY soft cotton tee now 20% off"])

    def scorer(prompts, texts):  # stands in for the teacher-forced log-prob of the original output
        assert texts == [r.output for r in outputs for _ in range(3)]
        return [-0.5 if "COPY" in p else -1.0 if "GOOD" in p else -6.0 for p in prompts]

    rows = backtranslate_chunk(outputs, gen, scorer, DataConfig(task="adcopy"), SynthSettings(mode="backtranslate",
                                                                                              k=3))
    # ad1: the likeliest candidate restates ad1 (a copy, not an input), so the next best is kept; ad2: no copy
    assert [r["record"].input for r in rows] == ["GOOD fabric: jersey; colour: grey",
                                                 "COPY soft cotton tee now 20% off"]
    assert [r["record"].output for r in rows] == [r.output for r in outputs]
    assert [r["scores"]["logprob"] for r in rows] == [-1.0, -0.5] and all(r["scores"]["k"] == 3 for r in rows)
    assert rows[0]["scores"]["copy"] < 0.3 < rouge_l("COPY soft cotton tee now 20% off", outputs[0].output, "en")
    assert "Soft cotton tee" in gen.prompts[0]  # the model was shown the output and asked for its input


def test_the_cli_synthesizes_and_selects_on_a_model_folder(tiny_model_dir, tmp_path, capsys):
    from weaver.cli import main

    inputs = write_inputs(tmp_path / "in.jsonl", 3)
    common = ["--model", str(tiny_model_dir), "--inputs", str(inputs), "--task", "support_reply", "--k", "2",
              "--max-new-tokens", "4", "--backend", "transformers"]
    assert main(["data", "synth", *common, "--out", str(tmp_path / "s.jsonl"), "--min-logprob", "-100",
                 "--min-agreement", "0", "--min-words", "1", "--max-repeat", "100", "--dedup", "1",
                 "--keep-truncated"]) == 0
    out = capsys.readouterr().out
    assert "3/3 inputs done" in out and "logprob" in out
    assert json.loads((tmp_path / "s.summary.json").read_text())["finished"] == 3
    assert main(["data", "select", *common, "--n", "2", "--out", str(tmp_path / "pick.jsonl")]) == 0
    assert len((tmp_path / "pick.jsonl").read_text().splitlines()) == 2
    assert main(["data", "synth", *common, "--out", str(tmp_path / "x.jsonl"), "--k", "1"]) != 0


def test_calibrate_measures_the_logprob_bound_on_labelled_references(tiny_model, tmp_path):
    import numpy as np

    from weaver.data.tasks import render_prompt
    from weaver.tuning.synth import make_scorer

    model, tok = tiny_model
    inputs, labelled = write_inputs(tmp_path / "in.jsonl", 2), write_inputs(tmp_path / "lab.jsonl", 5)
    cfg = DataConfig(task="support_reply")
    summary = synthesize("tiny", inputs, tmp_path / "s.jsonl", cfg, SynthSettings(), calibrate=str(labelled),
                         generator=Scripted(tok, by_input), scorer_model=(model, tok), progress=lambda *a: None)
    refs = read_records(labelled)
    expected = np.percentile(make_scorer(model, tok, cfg)([render_prompt(tok, r, cfg) for r in refs],
                                                          [r.output for r in refs]), 10)
    assert summary["settings"]["min_logprob"] == pytest.approx(expected, abs=1e-3)
    assert "10th percentile of 5 labelled references" in summary["settings"]["logprob_from"]
    with pytest.raises(ConfigError, match="--calibrate"):
        synthesize("tiny", inputs, tmp_path / "t.jsonl", cfg, SynthSettings(min_logprob=-3.0), calibrate=str(labelled),
                   generator=Scripted(tok, by_input), scorer_model=(model, tok), progress=lambda *a: None)


def test_the_cli_synthesizes_on_a_server_pool(llama_cpp_server, tiny_model_dir, tmp_path, capsys):
    """Generation on llama.cpp's own server (listed twice: a pool of two), prompts rendered and log-probs scored
    here on the tiny model, which shares the served SmolLM2's tokenizer."""
    from weaver.cli import main

    inputs = write_inputs(tmp_path / "in.jsonl", 3)
    out = tmp_path / "s.jsonl"
    assert main(["data", "synth", "--model", str(tiny_model_dir), "--inputs", str(inputs), "--task", "support_reply",
                 "--k", "2", "--max-new-tokens", "6", "--server", llama_cpp_server, "--server", llama_cpp_server,
                 "--server-model", "smollm2", "--per-server", "1", "--out", str(out), "--min-logprob", "-100",
                 "--min-agreement", "0", "--min-words", "1", "--max-repeat", "100", "--dedup", "1",
                 "--keep-truncated"]) == 0
    assert "3/3 inputs done" in capsys.readouterr().out
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    rejected = [json.loads(line) for line in (tmp_path / "s.rejected.jsonl").read_text().splitlines()]
    assert len(rows) + len(rejected) == 3 and rows  # llama.cpp wrote them; scored by the tiny model
    assert all(r["meta"]["synthetic"]["scores"]["k"] == 2 and r["output"] for r in rows)
    for argv, message in ((["--server-model", "smollm2"], "--server-model is for --server"),
                          (["--server", llama_cpp_server], "--server needs --server-model")):
        code = main(["data", "synth", "--model", str(tiny_model_dir), "--inputs", str(inputs), "--out",
                     str(tmp_path / "x.jsonl"), *argv])
        assert code != 0 and message in capsys.readouterr().err


def test_a_malformed_inputs_file_is_refused_before_anything_is_generated(tiny_model, tmp_path):
    from weaver.errors import DataError

    model, tok = tiny_model
    inputs = write_inputs(tmp_path / "in.jsonl", 3)
    with open(inputs, "a", encoding="utf-8") as fh:
        fh.write('{"id": "late", "text": "no input column"}\n')
    gen = Scripted(tok, by_input)
    with pytest.raises(DataError, match=r"in.jsonl:4"):
        synthesize("tiny", inputs, tmp_path / "s.jsonl", DataConfig(task="support_reply"), SynthSettings(),
                   generator=gen, scorer_model=(model, tok), progress=lambda *a: None)
    assert gen.calls == 0 and not (tmp_path / "s.jsonl").exists()
