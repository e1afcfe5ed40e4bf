"""tune() end to end on the tiny model: run directory, early stopping, time budget, NaN guard, damaged checkpoints."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from weaver.config import load_config
from weaver.errors import ConfigError
from weaver.tuning import checkpoint as ckpt
from weaver.tuning.callbacks import TrainingDiverged
from weaver.tuning.run import tune

from .conftest import tiny_overrides


def _run(tiny_model_dir, tiny_data, out, **train):
    return tune(load_config(None, tiny_overrides(tiny_model_dir, tiny_data, out, **train)))


def test_run_directory_and_plain_peft_load(tiny_model_dir, tiny_data, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    run = _run(tiny_model_dir, tiny_data, tmp_path / "run", logging="[tensorboard]")
    for name in ("config.yaml", "versions.json", "metrics.jsonl", "run.json", "adapter/adapter_config.json",
                 "best/adapter_config.json", "checkpoints/step-000006/manifest.json"):
        assert (run / name).exists(), name
    assert list((run / "tb").iterdir()), "no TensorBoard event file"
    facts = json.loads((run / "run.json").read_text())
    assert facts["steps"] == 6 and facts["stop_reason"] == "max_steps" and facts["precision"] == "fp32"
    assert facts["tokens"] > facts["target_tokens"] > 0 and facts["peak_rss_mb"] > 0
    assert facts["best_metric"]["name"] == "dev_loss" and facts["best_metric"]["value"] is not None
    assert facts["instruction"].startswith("Summarize")  # the task's instruction: the records carry none
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events if "train_loss" in e] == [1, 2, 3, 4, 5, 6]
    assert [e["step"] for e in events if "dev_loss" in e] == [3, 6]
    peaks = [e["peak_rss_mb"] for e in events]  # every event carries memory now and the peak so far
    assert all(e["rss_mb"] > 0 for e in events) and peaks == sorted(peaks) and peaks[-1] <= facts["peak_rss_mb"]
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), run / "adapter")
    saved = load_file(str(run / "adapter" / "adapter_model.safetensors"))
    lora_b = [p for n, p in tuned.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b) and len(saved) == 2 * len(lora_b)


def test_early_stopping_on_plateau(tiny_model_dir, tiny_data, tmp_path):
    run = _run(tiny_model_dir, tiny_data, tmp_path / "run", lr=1e-12, max_steps=10, eval_every=1,
               save_every=0, patience=1)
    facts = json.loads((run / "run.json").read_text())
    assert facts["stop_reason"] == "early_stopping" and facts["steps"] == 2
    assert facts["best_metric"]["step"] == 1


def test_time_budget_stops_and_best_loads(tiny_model_dir, tiny_data, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    run = _run(tiny_model_dir, tiny_data, tmp_path / "run", max_minutes=0.0001, max_steps=50)
    facts = json.loads((run / "run.json").read_text())
    assert facts["stop_reason"] == "time_budget" and facts["steps"] == 1
    assert ckpt.verify(run / "best")
    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), run / "best")


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tiny_model_dir, tiny_data, tmp_path, monkeypatch):
    from weaver.tuning import step as engine

    real, calls = engine.CausalLMLoss.forward, {"n": 0}

    def poisoned(self, input_ids, attention_mask, labels):
        loss, n = real(self, input_ids, attention_mask, labels)
        if self.training:
            calls["n"] += 1
            if calls["n"] == 4:
                loss = loss * float("nan")
        return loss, n

    monkeypatch.setattr(engine.CausalLMLoss, "forward", poisoned)
    with pytest.raises(TrainingDiverged, match=r"nan at step 4.*step-000003"):
        _run(tiny_model_dir, tiny_data, tmp_path / "run")
    facts = json.loads((tmp_path / "run" / "run.json").read_text())
    assert facts["stop_reason"] == "nan"
    assert ckpt.latest_checkpoint(tmp_path / "run").name == "step-000003"


def test_truncated_checkpoint_falls_back_and_resumes(tiny_model_dir, tiny_data, tmp_path, caplog):
    run = _run(tiny_model_dir, tiny_data, tmp_path / "run", max_steps=6)
    weights = run / "checkpoints" / "step-000006" / ckpt.WEIGHTS
    weights.write_bytes(weights.read_bytes()[:100])
    assert ckpt.latest_checkpoint(run).name == "step-000003"
    assert "corrupted" in caplog.text
    again = _run(tiny_model_dir, tiny_data, tmp_path / "run", max_steps=6, resume="always")
    events = [json.loads(line) for line in (again / "metrics.jsonl").read_text().splitlines()]
    resumed = [e["step"] for e in events if "train_loss" in e][6:]
    assert resumed == [4, 5, 6]  # continued after step 3, not from scratch and not from the damaged step 6
    assert ckpt.latest_checkpoint(run).name == "step-000006"


def test_resume_refuses_a_different_run(tiny_model_dir, tiny_data, tmp_path):
    _run(tiny_model_dir, tiny_data, tmp_path / "run", max_steps=3)
    with pytest.raises(ConfigError, match="train.lr"):
        _run(tiny_model_dir, tiny_data, tmp_path / "run", max_steps=3, lr=0.5)
    with pytest.raises(ConfigError, match="no usable checkpoint"):
        _run(tiny_model_dir, tiny_data, tmp_path / "fresh", resume="always")


def test_checkpoint_round_trip_restores_rng_and_weights(tiny_model, tmp_path):
    from weaver.config import TrainConfig
    from weaver.tuning.methods import build_trainable
    from weaver.tuning.step import make_optimizer, make_scheduler

    model = build_trainable(tiny_model[0], TrainConfig())
    opt = make_optimizer(model, TrainConfig())
    sched = make_scheduler(opt, TrainConfig(), 10)
    ckpt.save_checkpoint(tmp_path, 1, model, opt, sched, {"epoch": 0, "batch": 8})
    expected = torch.rand(3)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(1.0)
    state = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path), model, opt, sched)
    assert state["batch"] == 8 and state["step"] == 1
    assert torch.equal(torch.rand(3), expected)
    assert all(float(p.abs().sum()) == 0 for n, p in model.named_parameters() if "lora_B" in n)
