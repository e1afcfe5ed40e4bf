"""train.frozen_dtype: the frozen base stored in bf16 gives the loss and adapter gradients of fp32 storage under
bf16 autocast, keeps adapters and optimizer state fp32, and a run records the choice."""

from __future__ import annotations

import json

import pytest
import torch

from weaver.config import TrainConfig
from weaver.data.tokenize import collate, encode_example
from weaver.errors import ConfigError
from weaver.tuning.methods import build_trainable, store_frozen
from weaver.tuning.step import CausalLMLoss, choose_frozen_dtype

METHODS = [("lora", {}), ("lora", {"top_layers": 1}), ("adalora", {}), ("ia3", {}), ("prefix", {}),
           ("adapter", {"adapter_size": 4})]


def _batch(tokenizer):
    pairs = [("Summarize: the cat sat on the mat all day.", "A cat sat."),
             ("Summarize: rain fell over the hills and the river rose.", "Rain made the river rise.")]
    return collate([encode_example(tokenizer, p, t, 64) for p, t in pairs], tokenizer.pad_token_id)


def _loss_and_grads(model_dir, method, extra, frozen: torch.dtype | None, precision: str = "bf16"):
    from transformers import AutoTokenizer, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(model_dir)
    torch.manual_seed(0)
    model = build_trainable(LlamaForCausalLM.from_pretrained(model_dir),
                            TrainConfig(method=method, lora_dropout=0.0, **extra), total_steps=3)
    with torch.no_grad():  # LoRA's B starts at zero (its A then gets no gradient): give every adapter weight a value
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.02)
    converted = store_frozen(model, frozen) if frozen is not None else 0
    full_forward = method in ("prefix", "adalora")
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else torch.autocast("cpu", enabled=False)
    with ctx:
        loss, _ = CausalLMLoss(model, target_only=not full_forward)(**_batch(tok))
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return model, float(loss), grads, converted


@pytest.mark.parametrize(("method", "extra"), METHODS)
def test_bf16_storage_matches_fp32_storage_under_autocast(tiny_model_dir, method, extra):
    _, loss32, g32, _ = _loss_and_grads(tiny_model_dir, method, extra, None)
    model, loss16, g16, converted = _loss_and_grads(tiny_model_dir, method, extra, torch.bfloat16)
    assert converted > 0
    assert loss16 == pytest.approx(loss32, rel=1e-3)
    assert g16.keys() == g32.keys() and g16
    for name, grad in g16.items():
        assert grad.dtype == torch.float32, name
        torch.testing.assert_close(grad, g32[name], rtol=2e-2, atol=1e-4)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    for name, p in model.named_parameters():
        if name in trainable or "embed" in name or "norm" in name:
            assert p.dtype == torch.float32, name
    assert any(p.dtype == torch.bfloat16 for p in model.parameters())
    assert model.get_output_embeddings().weight.dtype == torch.float32  # tied to the embeddings


def test_bf16_storage_is_close_to_the_plain_fp32_step(tiny_model_dir):
    """Against no autocast at all, bf16 rounding is the only difference: loss within 1%, gradients close."""
    _, loss32, g32, _ = _loss_and_grads(tiny_model_dir, "lora", {}, None, precision="fp32")
    _, loss16, g16, _ = _loss_and_grads(tiny_model_dir, "lora", {}, torch.bfloat16)
    assert loss16 == pytest.approx(loss32, rel=1e-2)
    for name, grad in g16.items():
        cos = torch.nn.functional.cosine_similarity(grad.flatten(), g32[name].flatten(), dim=0)
        assert cos > 0.99, (name, float(cos))


def test_the_choice_and_its_refusals():
    assert choose_frozen_dtype("auto", "bf16", "lora")[0] == "bfloat16"
    assert choose_frozen_dtype("auto", "fp32", "lora")[0] == "float32"
    assert choose_frozen_dtype("auto", "bf16", "freeze")[0] == "float32"
    assert choose_frozen_dtype("auto", "bf16", "full")[0] == "float32"
    assert choose_frozen_dtype("float32", "bf16", "lora") == ("float32", "set by train.frozen_dtype")
    with pytest.raises(ConfigError, match="needs bf16 autocast"):
        choose_frozen_dtype("bfloat16", "fp32", "lora")  # auto precision that resolved to fp32
    with pytest.raises(ConfigError, match="needs bf16 autocast"):
        TrainConfig(frozen_dtype="bfloat16", precision="fp32")
    with pytest.raises(ConfigError, match="saves the whole"):
        TrainConfig(frozen_dtype="bfloat16", method="freeze")
    with pytest.raises(ConfigError, match="frozen_dtype"):
        TrainConfig(frozen_dtype="float16")


def test_a_bf16_run_records_the_frozen_dtype_and_saves_a_fp32_adapter(tiny_model_dir, tiny_data, tmp_path):
    from safetensors.torch import load_file

    from weaver.config import load_config
    from weaver.tuning.run import tune

    from .conftest import tiny_overrides

    out = tmp_path / "run"
    args = tiny_overrides(tiny_model_dir, tiny_data, out, precision="bf16", max_steps=3, eval_every=0)
    cfg = load_config(None, args)
    tune(cfg)
    facts = json.loads((out / "run.json").read_text())
    assert facts["frozen_dtype"] == "bfloat16" and facts["precision"] == "bf16" and facts["frozen_dtype_reason"]
    assert facts["precision_reason"] == "set by train.precision"  # explicit bf16 runs on any CPU (emulated on AVX2)
    assert facts["allocator"].startswith(("glibc's own", "not glibc", "MALLOC_MMAP_THRESHOLD_=")), facts["allocator"]
    assert "huge pages" in facts["allocator"]
    tensors = load_file(out / "adapter" / "adapter_model.safetensors")
    assert tensors and all(t.dtype == torch.float32 for t in tensors.values())


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_an_nf4_base_trains_a_lora_adapter_that_loads_on_the_full_base(tiny_model_dir, tiny_data, tmp_path,
                                                                        precision):
    pytest.importorskip("bitsandbytes")
    from safetensors.torch import load_file

    from weaver.config import load_config
    from weaver.models.loading import load_model
    from weaver.tuning.run import tune

    from .conftest import tiny_overrides

    out = tmp_path / "run"
    tune(load_config(None, tiny_overrides(tiny_model_dir, tiny_data, out, frozen_dtype="nf4", max_steps=4,
                                          eval_every=2, precision=precision)))
    facts = json.loads((out / "run.json").read_text())
    assert facts["frozen_dtype"] == "nf4" and facts["steps"] == 4
    losses = [json.loads(line)["train_loss"] for line in (out / "metrics.jsonl").read_text().splitlines()
              if "train_loss" in json.loads(line)]
    assert losses and all(x == x for x in losses)  # finite
    tensors = load_file(out / "adapter" / "adapter_model.safetensors")
    assert tensors and all(t.dtype == torch.float32 for t in tensors.values())
    model, _ = load_model(str(out))  # generation loads the adapter onto the fp32 base
    assert not any("4bit" in type(m).__name__ for m in model.modules())


def test_nf4_is_refused_where_it_cannot_work(monkeypatch):
    import builtins

    from weaver.tuning.run import nf4_loading

    with pytest.raises(ConfigError, match="saves the whole"):
        TrainConfig(frozen_dtype="nf4", method="full")
    real = builtins.__import__

    def no_bnb(name, *args, **kwargs):
        if name == "bitsandbytes":
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_bnb)
    with pytest.raises(ConfigError, match=r"weaver\[quant4\]"):
        nf4_loading(TrainConfig(frozen_dtype="nf4"))
    assert nf4_loading(TrainConfig()) == {}


def test_logit_chunk_mb_changes_memory_not_the_losses(tiny_model_dir, tiny_data, tmp_path):
    """train.logit_chunk_mb 1 chunks the tiny model's 49k-vocabulary logits every 5 positions; 0 computes them at
    once: the same training losses either way. A negative value is refused."""
    from weaver.config import load_config
    from weaver.tuning.run import tune

    from .conftest import tiny_overrides

    losses = {}
    for mb in (0, 1):
        out = tmp_path / f"run{mb}"
        tune(load_config(None, tiny_overrides(tiny_model_dir, tiny_data, out, max_steps=3, eval_every=0,
                                              logit_chunk_mb=mb)))
        losses[mb] = [json.loads(line)["train_loss"] for line in (out / "metrics.jsonl").read_text().splitlines()
                      if "train_loss" in json.loads(line)]
    assert len(losses[0]) == 3 and losses[1] == pytest.approx(losses[0], rel=1e-4)
    with pytest.raises(ConfigError, match="logit_chunk_mb"):
        TrainConfig(logit_chunk_mb=-1)
