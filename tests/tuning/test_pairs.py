"""Pair generators: chosen = the reference; rejected = the model's own reply, or a principle-breaking rewrite."""

from __future__ import annotations

import json

import pytest

from weaver.config import DataConfig, load_config
from weaver.data.preferences import read_pairs
from weaver.data.readers import read_records
from weaver.data.tasks import render_prompt
from weaver.errors import ConfigError
from weaver.generate import Completion, Generator, SamplingParams
from weaver.tuning.pairs import load_principles, make_pairs, rewrite_prompt

from .conftest import tiny_overrides, write_jsonl


@pytest.fixture(scope="module")
def talky_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny Llama with larger random weights (the default init only emits newlines), saved as a model folder."""
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(tiny_model_dir)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 2:
                param.normal_(0, 0.5, generator=gen)
    out = tmp_path_factory.mktemp("talky")
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(out)
    return out


@pytest.fixture
def talky_model(talky_model_dir):
    from transformers import AutoTokenizer, LlamaForCausalLM

    return LlamaForCausalLM.from_pretrained(talky_model_dir), AutoTokenizer.from_pretrained(talky_model_dir)


class Scripted:
    """A generator stand-in that records its prompts and answers from a script (prompt index -> text)."""

    def __init__(self, tok, answers):
        self.tok, self.answers, self.prompts = tok, answers, []

    def generate(self, prompts, params):
        self.prompts += prompts
        return [[Completion(self.answers(i, p), 1, 1, "stop")] for i, p in enumerate(prompts)]


def test_reference_strategy_pairs_the_reference_with_the_models_reply(talky_model, tmp_path):
    model, tok = talky_model
    records = read_records(write_jsonl(tmp_path / "t.jsonl", 6))
    cfg = DataConfig(task="summarize")
    params = SamplingParams(max_new_tokens=8)
    pairs, report = make_pairs(records, "reference", Generator(model, tok), cfg, params)
    direct = Generator(model, tok).generate([render_prompt(tok, r, cfg) for r in records], params)
    assert report == {"strategy": "reference", "records": 6, "skipped_same": 0, "skipped_empty": 0, "pairs": 6}
    assert [p.chosen for p in pairs] == [r.output for r in records]
    assert [p.rejected for p in pairs] == [o[0].text for o in direct]  # the model's own greedy reply
    assert all(p.record.meta["strategy"] == "reference" and p.record.input == r.input for p, r in zip(pairs, records))


def test_replies_equal_to_the_reference_or_empty_make_no_pair(tokenizer, tmp_path):
    records = read_records(write_jsonl(tmp_path / "t.jsonl", 4))
    answers = {0: records[0].output.upper() + " ", 1: "  ", 2: "something else", 3: "another reply"}
    pairs, report = make_pairs(records, "reference", Scripted(tokenizer, lambda i, p: answers[i]), DataConfig(),
                               SamplingParams())
    assert (report["skipped_same"], report["skipped_empty"], report["pairs"]) == (1, 1, 2)
    assert [p.rejected for p in pairs] == ["something else", "another reply"]


def test_principles_strategy_asks_for_a_principled_rewrite(tokenizer, tmp_path):
    records = read_records(write_jsonl(tmp_path / "t.jsonl", 12))
    principles = load_principles(None, "summarize")
    assert sorted(principles) == ["invents_fact", "off_topic", "too_long", "wrong_tone"]
    gen = Scripted(tokenizer, lambda i, p: f"rewritten {i}")
    pairs, report = make_pairs(records, "principles", gen, DataConfig(), SamplingParams(), principles, seed=3)
    again, _ = make_pairs(records, "principles", Scripted(tokenizer, lambda i, p: f"rewritten {i}"), DataConfig(),
                          SamplingParams(), principles, seed=3)
    picked = [p.record.meta["principle"] for p in pairs]
    assert picked == [p.record.meta["principle"] for p in again] and len(set(picked)) > 1
    assert sum(report["principles"].values()) == 12
    for prompt, pair, record in zip(gen.prompts, pairs, records):
        assert prompt == rewrite_prompt(tokenizer, record, DataConfig(), principles[pair.record.meta["principle"]])
        assert principles[pair.record.meta["principle"]] in prompt and record.output in prompt
        assert record.input in prompt and pair.chosen == record.output


def test_principles_files_per_task_and_their_errors(tmp_path):
    merged = load_principles(None, "headline")
    assert "twenty words" in merged["too_long"] and "rude" in merged["wrong_tone"]
    own = tmp_path / "p.yaml"
    own.write_text("default:\n  vague: Make it vague.\ntasks:\n  headline:\n    shouty: MAKE IT SHOUT.\n")
    assert load_principles(own, "headline") == {"vague": "Make it vague.", "shouty": "MAKE IT SHOUT."}
    assert load_principles(own, "summarize") == {"vague": "Make it vague."}
    own.write_text("vague: Make it vague.\n")
    assert load_principles(own, "adcopy") == {"vague": "Make it vague."}
    own.write_text("vague: ''\n")
    with pytest.raises(ConfigError, match="principle 'vague' must be a non-empty instruction"):
        load_principles(own, "adcopy")
    with pytest.raises(ConfigError, match="does not exist"):
        load_principles(tmp_path / "none.yaml", "adcopy")
    with pytest.raises(ConfigError, match="--strategy 'mixed' is not one of reference, principles"):
        make_pairs([], "mixed", None, DataConfig(), SamplingParams())


def test_cli_generated_pairs_tune_a_dpo_model(talky_model_dir, tmp_path, capsys):
    from weaver.cli import main
    from weaver.tuning.run import tune

    source = write_jsonl(tmp_path / "train.jsonl", 24)
    out = tmp_path / "pairs.jsonl"
    assert main(["data", "pairs", "--from", str(source), "--strategy", "reference", "--model", str(talky_model_dir),
                 "--out", str(out), "--batch-size", "8"]) == 0
    assert "wrote 24 pairs" in capsys.readouterr().out
    pairs = read_pairs(out)
    assert len(pairs) == 24 and all(p.record.meta["strategy"] == "reference" for p in pairs)
    run = tune(load_config(None, tiny_overrides(talky_model_dir, out, tmp_path / "run", objective="dpo",
                                                max_steps=2, eval_every=2) + ["--data.max_seq_len", "256"]))
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events if "reward_accuracy" in e] == [2]
