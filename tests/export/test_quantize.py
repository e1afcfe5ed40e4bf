"""int8 dynamic quantisation and structured MLP pruning on a tiny random Llama."""

from __future__ import annotations

import pytest
import torch

from weaver.errors import WeaverError
from weaver.models.quantize import apply, prune_ffn, quantize_int8


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_int8_replaces_linears_and_stays_close(tiny_model):
    model, tok = tiny_model
    ids = torch.tensor([tok("Write a headline about the harbour.")["input_ids"]])
    ref = _logits(model.eval(), ids)
    q = quantize_int8(model)
    dyn = torch.ao.nn.quantized.dynamic.Linear
    assert isinstance(q.model.layers[0].mlp.down_proj, dyn) and isinstance(q.lm_head, dyn)
    got = _logits(q, ids)
    assert got.shape == ref.shape
    rel = (got - ref).norm() / ref.norm()
    assert 0 < rel < 0.05  # quantised (not identical) yet close
    assert (got.argmax(-1) == ref.argmax(-1)).float().mean() > 0.9
    # generation still runs end to end on the quantised model
    out = q.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=tok.eos_token_id)
    assert out.shape[1] == ids.shape[1] + 4


def test_int8_refuses_bf16(tiny_model):
    model, _ = tiny_model
    with pytest.raises(WeaverError, match="float32"):
        quantize_int8(model.to(torch.bfloat16))


def test_prune_shrinks_mlp_keeps_strongest_channels(tiny_model):
    model, tok = tiny_model
    ids = torch.tensor([tok("Summarise the call.")["input_ids"]])
    mlp = model.model.layers[0].mlp
    with torch.no_grad():
        mlp.down_proj.weight[:, 5] *= 100  # channel 5 dominates: it must survive
        mlp.down_proj.weight[:, 7] = 0  # channel 7 contributes nothing: it must go
    strong = mlp.gate_proj.weight[5].clone()
    ref = _logits(model.eval(), ids)
    pruned = prune_ffn(model, 0.25)
    mlp = pruned.model.layers[0].mlp
    assert mlp.gate_proj.out_features == 96 and mlp.down_proj.in_features == 96
    assert pruned.config.intermediate_size == 96
    assert any(torch.equal(row, strong) for row in mlp.gate_proj.weight)
    got = _logits(pruned, ids)
    assert got.shape == ref.shape and not torch.allclose(got, ref)


def test_prune_zero_channel_is_exact(tiny_model):
    model, tok = tiny_model
    ids = torch.tensor([tok("Hello")["input_ids"]])
    with torch.no_grad():
        for layer in model.model.layers:
            layer.mlp.down_proj.weight[:, :32] = 0  # 32 of 128 channels are dead in every block
    ref = _logits(model.eval(), ids)
    pruned = prune_ffn(model, 0.25)
    torch.testing.assert_close(_logits(pruned, ids), ref, atol=1e-5, rtol=1e-5)


def test_apply_validates_options(tiny_model):
    model, _ = tiny_model
    with pytest.raises(WeaverError, match="--quantize"):
        apply(model, quantize="int4")
    with pytest.raises(WeaverError, match="--prune"):
        apply(model, prune=1.5)


def test_load_model_quantize_int8_merges_the_run(tiny_run):
    from weaver.models.loading import load_model

    model, tok = load_model(tiny_run, quantize="int8")
    assert not hasattr(model, "peft_config")
    assert isinstance(model.model.layers[1].self_attn.q_proj, torch.ao.nn.quantized.dynamic.Linear)
    merged, _ = load_model(tiny_run, merge=True)
    ids = torch.tensor([tok("Write a headline.")["input_ids"]])
    ref = _logits(merged, ids)
    assert ((_logits(model, ids) - ref).norm() / ref.norm()) < 0.05
