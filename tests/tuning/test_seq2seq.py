"""`weaver tune` on encoder-decoder models (tiny random T5 and BART): methods, resume, evaluation, `weaver runs`."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from weaver.config import load_config
from weaver.errors import ConfigError
from weaver.tuning.run import tune

from .conftest import tiny_overrides


def _run(base_dir, data, out, *extra, **train):
    return tune(load_config(None, [*tiny_overrides(base_dir, data, out, **train), *extra]))


def _events(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize(("kind", "method"), [("t5", "lora"), ("t5", "ia3"), ("bart", "lora")])
def test_tunes_and_dev_loss_falls(kind, method, tiny_t5_dir, tiny_bart_dir, tiny_data, tmp_path):
    base = tiny_t5_dir if kind == "t5" else tiny_bart_dir
    run = _run(base, tiny_data, tmp_path / "run", "--data.max_source_len", "48", method=method)
    dev = [e["dev_loss"] for e in _events(run) if "dev_loss" in e]
    assert len(dev) == 2 and dev[1] < dev[0], dev
    facts = json.loads((run / "run.json").read_text())
    assert facts["model_kind"] == "seq2seq" and facts["architecture"].endswith("ForConditionalGeneration")
    assert facts["target_tokens"] > 0 and facts["steps"] == 6
    adapter = json.loads((run / "adapter" / "adapter_config.json").read_text())
    assert adapter["task_type"] == "SEQ_2_SEQ_LM" and adapter["peft_type"] == method.upper()
    saved = load_file(str(run / "adapter" / "adapter_model.safetensors"))
    moved = [t for n, t in saved.items() if ("lora_B" in n and t.abs().sum() > 0) or ("ia3" in n and
                                                                                      (t - 1).abs().sum() > 0)]
    assert moved, "no trained adapter weight moved from its initial value"
    assert any(".encoder." in n for n in saved) and any(".decoder." in n for n in saved)  # both stacks adapted


def test_resumed_run_equals_uninterrupted(tiny_t5_dir, tiny_data, tmp_path, monkeypatch):
    from weaver.tuning.loop import Trainer

    whole = _run(tiny_t5_dir, tiny_data, tmp_path / "whole")
    real = Trainer._log_train

    def crash_at_4(self, loss, bar):
        real(self, loss, bar)
        if self.step == 4:
            raise KeyboardInterrupt("killed")

    monkeypatch.setattr(Trainer, "_log_train", crash_at_4)
    with pytest.raises(KeyboardInterrupt):
        _run(tiny_t5_dir, tiny_data, tmp_path / "killed")
    monkeypatch.setattr(Trainer, "_log_train", real)
    resumed = _run(tiny_t5_dir, tiny_data, tmp_path / "killed")
    steps = [e["step"] for e in _events(resumed) if "train_loss" in e]
    assert steps == [1, 2, 3, 4, 4, 5, 6]  # the killed run's 4 steps, then 4..6 again from the step-3 checkpoint
    a = load_file(str(whole / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(resumed / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-6, rtol=1e-5)


def test_full_finetune_then_evaluate_and_list_in_runs(tiny_t5_dir, tiny_data, tmp_path):
    from weaver.eval.runner import evaluate
    from weaver.tuning.registry import find_runs

    run = _run(tiny_t5_dir, tiny_data, tmp_path / "runs" / "t5-full", method="full", max_steps=3, eval_every=3,
               save_every=3)
    assert (run / "model" / "config.json").is_file()
    cfg = load_config(run / "config.yaml", ["--model.name", str(run), "--data.test", str(tiny_data),
                                            "--eval.limit", "4", "--eval.out_dir", str(tmp_path / "eval"),
                                            "--generate.max_new_tokens", "5", "--eval.bootstrap", "200",
                                            "--eval.semantic", "false"])
    report = json.loads((evaluate(cfg).out_dir / "report.json").read_text())
    assert report["n"] == 4 and report["base"] == str(tiny_t5_dir)
    assert report["speed"]["tuned"]["backend"] == "transformers"
    ppl = report["metrics"]["perplexity"]
    assert math.isfinite(ppl["base"]) and math.isfinite(ppl["tuned"]) and ppl["tuned"] < ppl["base"]
    rows = [r.row() for r in find_runs(tmp_path / "runs")]
    assert len(rows) == 1
    row = rows[0]
    assert row["name"] == "t5-full" and row["method"] == "full" and row["base"] == str(tiny_t5_dir)
    assert row["status"] == "finished" and row["steps"] == 3 and row["best_dev_loss"] is not None


def test_settings_an_encoder_decoder_cannot_take_are_refused(tiny_t5_dir, tiny_model_dir, tiny_data, tmp_path):
    with pytest.raises(ConfigError, match="data.pack"):
        _run(tiny_t5_dir, tiny_data, tmp_path / "a", "--data.pack", "true")
    with pytest.raises(ConfigError, match="train.method freeze"):
        _run(tiny_t5_dir, tiny_data, tmp_path / "b", method="freeze")
    with pytest.raises(ConfigError, match="top_layers"):
        _run(tiny_t5_dir, tiny_data, tmp_path / "c", top_layers=1)
    with pytest.raises(ConfigError, match="max_source_len applies only to encoder-decoder"):
        _run(tiny_model_dir, tiny_data, tmp_path / "d", "--data.max_source_len", "32")
    assert not (tmp_path / "a" / "adapter").exists() and not (tmp_path / "d" / "checkpoints").exists()
