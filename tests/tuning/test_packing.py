"""data.pack: a packed batch trains exactly like the padded one (loss, gradients, whole runs), and never mixes examples.

Packed = one padding-free row per batch with position ids restarting per example (weaver.data.tokenize.Collator);
transformers builds the block-diagonal causal mask from those position ids. Checked on Llama and on Gemma-3
(sliding-window layers, logit soft-capping), with the loop's target-only logits, peft's full forward, and
gradient checkpointing.
"""

from __future__ import annotations

import json

import pytest
import torch

from weaver.config import TrainConfig, load_config
from weaver.data.tokenize import Collator, encode_example
from weaver.errors import ConfigError
from weaver.tuning.methods import build_trainable, enable_checkpointing
from weaver.tuning.run import tune
from weaver.tuning.step import CausalLMLoss

from .conftest import tiny_overrides

PAIRS = [("Summarize: the rain in Spain falls mainly on the plain, said the report.", "Rain in Spain."),
         ("Headline: cats win prize at the county fair for the third year", "Cats win again!"),
         ("Translate: bonjour", "hello"),
         ("Summarize: the market opened higher on Monday after a quiet week of trading in the city.",
          "Markets up on Monday.")]


def _model(arch: str):
    torch.manual_seed(0)
    if arch == "gemma3":
        from transformers import Gemma3ForCausalLM, Gemma3TextConfig

        cfg = Gemma3TextConfig(vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                               num_attention_heads=4, num_key_value_heads=2, head_dim=16, sliding_window=8,
                               layer_types=["sliding_attention", "full_attention"], final_logit_softcapping=30.0,
                               pad_token_id=2, eos_token_id=2, bos_token_id=1)
        return Gemma3ForCausalLM(cfg)
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(LlamaConfig(vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True))


def _loss_and_grads(loss_mod, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    loss_mod.zero_grad(set_to_none=True)
    loss, _ = loss_mod(**batch)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in loss_mod.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
@pytest.mark.parametrize("mode", ["target_only", "full_forward", "checkpointed"])
def test_packed_batch_gives_the_padded_loss_and_gradients(arch, mode, tokenizer):
    model = build_trainable(_model(arch), TrainConfig(method="lora", lora_r=4, lora_dropout=0.0))
    if mode == "checkpointed":
        assert enable_checkpointing(model) == 2
    model.train()
    loss_mod = CausalLMLoss(model, target_only=mode != "full_forward")
    examples = [encode_example(tokenizer, p, t, 64) for p, t in PAIRS]
    padded = Collator(tokenizer.pad_token_id)(examples)
    packed = Collator(tokenizer.pad_token_id, pack=True)(examples)
    assert set(packed) == {"input_ids", "labels", "position_ids"} and packed["input_ids"].shape[0] == 1
    assert packed["input_ids"].shape[1] == sum(len(e["input_ids"]) for e in examples)
    loss_pad, grads_pad = _loss_and_grads(loss_mod, padded)
    loss_pack, grads_pack = _loss_and_grads(loss_mod, packed)
    torch.testing.assert_close(loss_pack, loss_pad, atol=1e-5, rtol=0)
    assert grads_pad.keys() == grads_pack.keys() and len(grads_pad) > 0
    for name, grad in grads_pad.items():
        torch.testing.assert_close(grads_pack[name], grad, atol=1e-5, rtol=1e-4, msg=name)
    # The check can fail: the same row without its position ids is one long causal sequence (examples see
    # each other), and its loss differs.
    leaky, _ = loss_mod(input_ids=packed["input_ids"], labels=packed["labels"])
    assert abs(float(leaky) - float(loss_pad)) > 1e-3


def _run(tiny_model_dir, tiny_data, out, pack: bool):
    args = tiny_overrides(tiny_model_dir, tiny_data, out, max_steps=3, eval_every=3, save_every=0,
                          lora_dropout=0.0) + ["--data.pack", str(pack).lower()]
    run = tune(load_config(None, args))
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return run, events, json.loads((run / "run.json").read_text())


def test_a_packed_run_follows_the_padded_run(tiny_model_dir, tiny_data, tmp_path):
    from safetensors.torch import load_file

    run_pad, ev_pad, facts_pad = _run(tiny_model_dir, tiny_data, tmp_path / "pad", pack=False)
    run_pack, ev_pack, facts_pack = _run(tiny_model_dir, tiny_data, tmp_path / "pack", pack=True)
    for key in ("train_loss", "dev_loss"):
        pad = [(e["step"], e[key]) for e in ev_pad if key in e]
        pack = [(e["step"], e[key]) for e in ev_pack if key in e]
        assert [s for s, _ in pack] == [s for s, _ in pad] and pad
        assert [v for _, v in pack] == pytest.approx([v for _, v in pad], abs=5e-5), key
    # the same real tokens were trained on; only the padded run also computed padding
    assert facts_pack["tokens"] == facts_pad["tokens"] and facts_pack["target_tokens"] == facts_pad["target_tokens"]
    w_pad = load_file(str(run_pad / "adapter" / "adapter_model.safetensors"))
    w_pack = load_file(str(run_pack / "adapter" / "adapter_model.safetensors"))
    for name, value in w_pad.items():
        torch.testing.assert_close(w_pack[name], value, atol=1e-4, rtol=1e-3, msg=name)


def test_pack_with_prefix_tuning_is_refused(tiny_model_dir, tiny_data, tmp_path):
    args = tiny_overrides(tiny_model_dir, tiny_data, tmp_path / "run", method="prefix", max_steps=1) + [
        "--data.pack", "true"]
    with pytest.raises(ConfigError, match="data.pack does not work with train.method prefix"):
        tune(load_config(None, args))
