"""train.dropout reaches the modules that apply it (Llama and Gemma-3 read it at construction, not from the config)."""

from __future__ import annotations

import pytest
import torch

from weaver.config import TrainConfig
from weaver.data.tokenize import collate, encode_example
from weaver.tuning.methods import build_trainable
from weaver.tuning.step import CausalLMLoss


def _tiny_gemma3():
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    cfg = Gemma3TextConfig(vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=1, head_dim=16, sliding_window=16,
                           max_position_embeddings=256, pad_token_id=2, bos_token_id=1, eos_token_id=2)
    return Gemma3ForCausalLM(cfg)


@pytest.fixture(params=["llama", "gemma3"])
def make_model(request, tiny_model_dir):
    from transformers import LlamaForCausalLM

    if request.param == "llama":
        return lambda: LlamaForCausalLM.from_pretrained(tiny_model_dir)
    state = _tiny_gemma3().state_dict()

    def gemma():
        model = _tiny_gemma3()
        model.load_state_dict(state)
        return model
    return gemma


def _batch(tokenizer):
    pairs = [("Summarize: the cat sat on the mat all day long.", "A cat sat."),
             ("Summarize: rain fell over the hills and the river rose.", "Rain made the river rise.")]
    return collate([encode_example(tokenizer, p, t, 64) for p, t in pairs], tokenizer.pad_token_id)


def _attention_modules(model):
    return [m for m in model.modules() if type(m).__name__.endswith("Attention")]


@pytest.mark.parametrize("method", ["lora", "full"])
def test_dropout_reaches_every_attention_module(make_model, method):
    model = build_trainable(make_model(), TrainConfig(method=method, dropout=0.3, lora_dropout=0.0))
    attention = _attention_modules(model)
    assert len(attention) == 2 and all(m.attention_dropout == 0.3 for m in attention)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    assert base.config.attention_dropout == 0.3
    others = [m for m in base.modules() if isinstance(m, torch.nn.Dropout)]
    assert all(m.p == 0.3 for m in others)
    lora_drops = [m for n, m in model.named_modules() if "lora_dropout" in n and isinstance(m, torch.nn.Dropout)]
    assert not lora_drops  # peft's own dropout keeps train.lora_dropout (0.0 -> Identity)


def test_dropout_changes_training_and_not_evaluation(make_model, tokenizer):
    batch = _batch(tokenizer)
    losses = {}
    for p in (0.0, 0.5):
        model = build_trainable(make_model(), TrainConfig(method="full", dropout=p))
        loss_fn = CausalLMLoss(model)
        model.train()
        torch.manual_seed(1)
        train_loss = float(loss_fn(**batch)[0])
        model.eval()
        with torch.no_grad():
            losses[p] = (train_loss, float(loss_fn(**batch)[0]))
    assert losses[0.5][0] != pytest.approx(losses[0.0][0], abs=1e-4)  # dropout acts in training
    assert losses[0.5][1] == pytest.approx(losses[0.0][1], abs=1e-6)  # and not in evaluation
    assert losses[0.0][0] == pytest.approx(losses[0.0][1], abs=1e-5)  # p=0: training forward = evaluation
