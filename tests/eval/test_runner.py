"""End to end on a tiny random model: a fake tuned run (LoRA adapter) vs its base, all four outputs."""

from __future__ import annotations

import json
import re

import pytest

from weaver.config import load_config, save_resolved
from weaver.data.records import Record
from weaver.eval.runner import evaluate, metric_lang, references

RECORDS = [
    {"id": "a", "instruction": "", "input": "#Person1#: The train is late. <script>alert(1)</script>",
     "output": "The train is late.", "references": ["The train is late.", "A late train is discussed."]},
    {"id": "b", "instruction": "", "input": "#Person1#: Lunch at noon?\n#Person2#: Sure.",
     "output": "They agree on lunch."},
    {"id": "c", "instruction": "", "input": "#Person1#: I lost my keys & wallet.", "output": "Someone lost keys."},
    {"id": "d", "instruction": "", "input": "#Person1#: Is it raining?\n#Person2#: Yes, take an umbrella.",
     "output": "It is raining, so #Person2# suggests an umbrella."},
    {"id": "e", "instruction": "", "input": "#Person1#: The meeting moved to Friday.",
     "output": "The meeting is Friday."},
]


@pytest.fixture
def tiny_run(tmp_path, tiny_model_dir):
    """A run directory as `weaver tune` writes it: config.yaml, adapter/, metrics.jsonl."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    run = tmp_path / "run"
    test = tmp_path / "test.jsonl"
    test.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    cfg = load_config(overrides=["--model.name", str(tiny_model_dir), "--data.train", str(test),
                                 "--data.task", "summarize", "--train.out_dir", str(run)])
    save_resolved(cfg, run)
    torch.manual_seed(1)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                           LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    model.save_pretrained(run / "adapter")
    events = [{"step": s, "train_loss": 3.0 - 0.1 * s, "lr": 3e-4} for s in range(1, 11)]
    events += [{"step": 10, "dev_loss": 2.5, "rougeL": 12.0}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    return run, test


def _cfg(run, test, out, *extra):
    return load_config(run / "config.yaml", ["--model.name", str(run), "--data.test", str(test), "--eval.out_dir",
                                             str(out), "--generate.max_new_tokens", "6", "--eval.bootstrap", "200",
                                             "--eval.semantic", "false", *extra])


def test_evaluate_writes_all_outputs_and_a_self_contained_html(tiny_run, tmp_path, monkeypatch, tiny_model_dir):
    from weaver.generate import engine

    seen: list[list[str]] = []
    original = engine.Generator.generate

    def spy(self, prompts, params, progress=None):
        seen.append(list(prompts))
        return original(self, prompts, params, progress)

    monkeypatch.setattr(engine.Generator, "generate", spy)
    run, test = tiny_run
    out = tmp_path / "eval"
    report = evaluate(_cfg(run, test, out))

    # base and tuned were given byte-identical prompts, rendered by the one renderer
    assert len(seen) == 2 and seen[0] == seen[1]
    from weaver.data.tasks import render_prompt
    from weaver.models.loading import load_tokenizer

    cfg = _cfg(run, test, out)
    rec = Record(**{k: RECORDS[0][k] for k in ("id", "instruction", "input", "output", "references")})
    assert seen[0][0] == render_prompt(load_tokenizer(str(run)), rec, cfg.data)

    for name in ("report.json", "predictions.jsonl", "report.md", "report.html"):
        assert (out / name).stat().st_size > 0
    data = json.loads((out / "report.json").read_text())
    assert data["n"] == 5 and data["base"] == str(tiny_model_dir)  # the run's base model by default
    assert data["config"]["model"]["name"] == str(run)
    assert set(data["metrics"]) >= {"rouge1", "rougeL", "bleu", "chrf", "perplexity", "distinct1", "repeat3",
                                    "faithfulness", "invented"}
    for m in data["metrics"].values():
        assert m["low"] <= m["delta"] <= m["high"]
    assert data["speed"]["tuned"]["tokens_per_s"] > 0 and "torch" in data["versions"]

    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [p["id"] for p in preds] == list("abcde")
    assert preds[0]["references"] == ["The train is late.", "A late train is discussed."]
    assert {"input", "references", "base", "tuned", "prompt"} <= set(preds[0])
    assert set(preds[0]["grounding"]) == {"base", "tuned"} and set(preds[0]["grounding"]["tuned"]) == {
        "unsupported", "invented"}
    assert preds[0]["base"] != preds[0]["tuned"] or preds[1]["base"] != preds[1]["tuned"]
    assert report.metrics["rougeL"]["base"] == pytest.approx(data["metrics"]["rougeL"]["base"])

    page = (out / "report.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert "http://" not in page and "https://" not in page
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert page.count("data:image/png;base64,") == 2  # before/after bars and the training curves
    assert "Before / after" in page and "Training curves" in page


def test_perplexity_matches_the_model_loss(tiny_model):
    """reference_nll must equal transformers' own loss on the same tokens."""
    import torch

    from weaver.data.tokenize import encode_example
    from weaver.eval.runner import reference_nll

    model, tok = tiny_model
    prompts, refs = ["Question one?", "A much longer second question, with more words in it?"], ["Yes.", "No, never."]
    sums, counts = reference_nll(model, tok, prompts, refs, max_seq_len=64, batch_size=2)
    for p, r, s, c in zip(prompts, refs, sums, counts):
        ex = encode_example(tok, p, r, 64)
        with torch.no_grad():
            loss = model(input_ids=torch.tensor([ex["input_ids"]]), labels=torch.tensor([ex["labels"]])).loss
        assert c == sum(1 for x in ex["labels"] if x != -100)
        assert s / c == pytest.approx(float(loss), rel=1e-4)


def test_cli_uses_the_run_config_and_prints_the_table(tiny_run, tmp_path, capsys):
    from weaver.cli import main

    run, test = tiny_run
    out = tmp_path / "cli-eval"
    code = main(["eval", "--model", str(run), "--data", str(test), "--limit", "3", "--out", str(out),
                 "--generate.max_new_tokens", "4", "--eval.bootstrap", "100", "--eval.semantic", "false",
                 "--eval.perplexity", "false"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "ROUGE-L" in printed and "95% CI" in printed and "report.html" in printed
    data = json.loads((out / "report.json").read_text())
    assert data["n"] == 3 and data["task"] == "summarize" and "perplexity" not in data["metrics"]


def test_cli_errors_are_one_line(tmp_path, capsys, tiny_model_dir):
    from weaver.cli import main

    assert main(["eval", "--model", str(tiny_model_dir), "--data", str(tmp_path / "missing.jsonl"),
                 "--out", str(tmp_path / "o")]) != 0
    assert main(["eval", "--model", str(tiny_model_dir), "--data", "x.jsonl"]) != 0
    err = capsys.readouterr().err
    assert err.count("error:") == 2 and "Traceback" not in err
    assert "--out" in err


def test_references_and_language_detection():
    rec = Record(id="x", instruction="", input="i", output="A.", references=["A.", "B."])
    assert references(rec) == ["A.", "B."]
    assert metric_lang([["这是一个中文标题"]]) == "zh"
    assert metric_lang([["An English title"]]) == "en"


def test_grounding_scores_and_highlighted_examples():
    from weaver.eval.report import _examples_html, to_markdown
    from weaver.eval.scoring import grounding

    sources = ["#Person1#: The meeting moved to Friday. #Person2#: I will tell the team.",
               "#Person1#: Lunch at noon?"]
    outputs = ["The meeting moved to Friday. The CEO resigned in 2019.", ""]
    scores, details = grounding(sources, outputs, "en")
    assert scores["faithfulness"] == [50.0, 0.0] and scores["invented"] == [50.0, 0.0]
    assert details[0] == {"unsupported": ["The CEO resigned in 2019."], "invented": ["2019"]}
    preds = [{"id": "x", "input": sources[0], "references": ["r"], "tuned": outputs[0] + " <b>",
              "grounding": {"tuned": details[0]}}]
    page = _examples_html(preds)
    assert "<mark class='unsup'>The CEO resigned in 2019.</mark>" in page and "&lt;b&gt;" in page
    assert "not in the input: 2019" in page
    data = {"model": "m", "base": None, "task": "summarize", "n": 1, "lang": "en", "metrics": {}, "speed": {},
            "notes": []}
    assert "- unsupported by the input: The CEO resigned in 2019." in to_markdown(data, preds, 1)


def test_chinese_scores_report_both_rouge_units():
    from weaver.config import EvalConfig
    from weaver.eval import metrics as M
    from weaver.eval.scoring import compare, score_outputs

    preds, refs = ["我爱北京天安门", "今天天气很好"], [["我爱北京"], ["今天的天气不错"]]
    for unit, other in (("char", "word"), ("word", "char")):
        scores = score_outputs({"outputs": preds}, refs, "zh", EvalConfig(semantic=False, zh_tokens=unit))
        assert scores["rougeL"] == [r["rougeL"] for r in M.rouge(preds, refs, "zh", unit)]
        assert scores[f"rougeL_{other}"] == [r["rougeL"] for r in M.rouge(preds, refs, "zh", other)]
        assert scores["rougeL"] != scores[f"rougeL_{other}"]
    table = compare({"tuned": {"scores": scores}}, "zh", 100)
    assert table["rougeL_char"]["label"] == "ROUGE-L (characters)" and "rougeL_word" not in table
    en = score_outputs({"outputs": ["a b"]}, [["a b"]], "en", EvalConfig(semantic=False))
    assert not any(k.endswith(("_word", "_char")) for k in en)
