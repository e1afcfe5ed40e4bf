"""Fixtures for export tests: a run-like directory (tiny random Llama + a LoRA with non-zero B weights)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_run(tiny_model_dir, tmp_path_factory) -> Path:
    """A Weaver run directory: config.yaml (model.name = tiny model) and adapter/ with a randomised LoRA."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    from weaver.config import RunConfig, save_resolved

    torch.manual_seed(1)
    run = tmp_path_factory.mktemp("tiny-run")
    base = LlamaForCausalLM.from_pretrained(tiny_model_dir)
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", lora_dropout=0.0))
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)  # B is zero at init: make the adapter actually change the outputs
    peft_model.save_pretrained(run / "adapter")
    cfg = RunConfig()
    cfg.model.name = str(tiny_model_dir)
    save_resolved(cfg, run)
    return run


@pytest.fixture(scope="session")
def tiny_gguf(tiny_run, tmp_path_factory) -> Path:
    """The tiny run exported as an f16 GGUF (adapter merged)."""
    from weaver.models.export import export_gguf

    return export_gguf(tiny_run, tmp_path_factory.mktemp("gguf") / "tiny-f16.gguf", "f16")
