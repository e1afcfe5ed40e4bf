"""Train options no other test exercises: train_lm_head, adapter_placement, grad_accum, group_by_length."""

from __future__ import annotations

import json

import pytest

from weaver.config import RunConfig, TrainConfig
from weaver.tuning.methods import build_trainable


def _trainable(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("head", [False, True])
def test_train_lm_head_decides_whether_freeze_trains_the_head(tiny_model, head):
    model, _ = tiny_model
    model = build_trainable(model, TrainConfig(method="freeze", top_layers=1, train_lm_head=head))
    head_params = {id(p) for p in model.get_output_embeddings().parameters()}
    assert any(id(p) in head_params for p in model.parameters() if p.requires_grad) is head
    assert all(".layers.0." not in n for n in _trainable(model))  # the lower block stays frozen either way


@pytest.mark.parametrize(("placement", "sites"), [("attn", {"attn"}), ("mlp", {"mlp"}), ("both", {"attn", "mlp"})])
def test_adapter_placement_puts_bottlenecks_where_asked(tiny_model, placement, sites):
    from weaver.models.bottleneck import ATTR

    model, _ = tiny_model
    model = build_trainable(model, TrainConfig(method="adapter", adapter_size=4, adapter_placement=placement))
    blocks = model.get_decoder().layers
    assert all(set(getattr(block, ATTR).keys()) == sites for block in blocks)
    assert {n.split(f"{ATTR}.")[1].split(".")[0] for n in _trainable(model)} == sites


def test_grad_accum_folds_micro_batches_into_one_optimizer_step(tiny_model_dir, tmp_path):
    """24 examples at batch 2 are 12 micro-batches: one epoch is 12 optimizer steps, or 4 with grad_accum 3."""
    from tuning.conftest import tiny_overrides, write_jsonl
    from weaver.cli import main

    data = write_jsonl(tmp_path / "train.jsonl", 30)
    config = tmp_path / "c.yaml"
    config.write_text("data:\n  task: summarize\n")
    steps = {}
    for accum in (1, 3):
        out = tmp_path / f"accum{accum}"
        args = tiny_overrides(tiny_model_dir, data, out, method="lora", batch_size=2, grad_accum=accum, epochs=1,
                              max_steps="none", eval_every=0, save_every=0)
        assert main(["tune", str(config), *args, "--data.split", "[0.8, 0.2, 0.0]"]) == 0
        steps[accum] = json.loads((out / "run.json").read_text())["steps"]
    assert steps == {1: 12, 3: 4}


@pytest.mark.parametrize("grouped", [True, False])
def test_group_by_length_batches_similar_lengths_together(grouped):
    from weaver.tuning.run import _train_data

    cfg = RunConfig(train=TrainConfig(batch_size=4, group_by_length=grouped, seed=0))
    lengths = [10, 200] * 16  # alternating short and long: random batches mix them, grouped ones do not
    data = _train_data(cfg, None, list(range(len(lengths))), lengths, [], [], collate=None)
    batches = data.batches(0)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))  # every example once per epoch
    mixed = sum(len({lengths[i] for i in b}) > 1 for b in batches)
    assert (mixed <= 1) if grouped else (mixed >= len(batches) // 2)
