"""The README's `weaver tune configs/dialogsum-smollm2.yaml --train.method M` builds a trainable model for every M.

Config resolution for every preset x method is tested in tests/test_config.py; here the resolved train
section goes through build_trainable and gradient checkpointing on the tiny model, where the switch used to
fail ("train.layers / train.top_layers apply to lora, adalora and freeze").
"""

from __future__ import annotations

from pathlib import Path

import pytest

from weaver.config import METHODS, load_config
from weaver.tuning.methods import build_trainable, enable_checkpointing

PRESET = Path(__file__).resolve().parents[2] / "configs" / "dialogsum-smollm2.yaml"


@pytest.mark.parametrize("method", METHODS)
def test_dialogsum_preset_builds_with_every_method(method, tiny_model, tmp_path):
    preset = tmp_path / "dialogsum.yaml"  # the preset, with top_layers sized for the 2-block tiny model
    text = PRESET.read_text()
    assert "top_layers: 10" in text and "gradient_checkpointing: true" in text
    preset.write_text(text.replace("top_layers: 10", "top_layers: 1"))
    train = load_config(preset, ["--train.method", method]).train
    model = build_trainable(tiny_model[0], train, total_steps=10)
    assert any(p.requires_grad for p in model.parameters())
    blocks = enable_checkpointing(model) if train.gradient_checkpointing else 0
    assert train.gradient_checkpointing == (method != "prefix") and (blocks > 0) == train.gradient_checkpointing
