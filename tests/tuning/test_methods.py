"""Each method trains what it should: trainable weights move, frozen ones do not, loss on a repeated batch falls."""

from __future__ import annotations

import pytest
import torch

from weaver.config import TrainConfig
from weaver.data.tokenize import collate, encode_example
from weaver.errors import ConfigError
from weaver.tuning.methods import build_trainable, selected_layers
from weaver.tuning.step import CausalLMLoss, choose_precision, make_optimizer


def _batch(tokenizer):
    pairs = [("Summarize: the cat sat on the mat all day.", "A cat sat."),
             ("Summarize: rain fell over the hills and the river rose.", "Rain made the river rise.")]
    examples = [encode_example(tokenizer, p, t, 64) for p, t in pairs]
    return collate(examples, tokenizer.pad_token_id)


@pytest.mark.parametrize(("method", "extra"), [
    ("lora", {}), ("lora", {"top_layers": 1}), ("adalora", {}), ("prefix", {}), ("ia3", {}),
    ("adapter", {"top_layers": 1, "adapter_size": 4}), ("freeze", {"top_layers": 1}), ("full", {}),
])
def test_three_steps_move_only_trainable_weights(tiny_model, method, extra):
    model, tok = tiny_model
    train = TrainConfig(method=method, lr=2e-2, lora_dropout=0.0, **extra)
    model = build_trainable(model, train, total_steps=3)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and len(trainable) <= len(before)
    loss_fn = CausalLMLoss(model, target_only=method not in ("prefix", "adalora"))
    opt = make_optimizer(model, train)
    batch, losses = _batch(tok), []
    for step in range(3):
        loss, n = loss_fn(**batch)
        loss.backward()
        opt.step()
        if method == "adalora":
            model.base_model.update_and_allocate(step)
        opt.zero_grad()
        losses.append(float(loss.detach()))
    with torch.no_grad():
        losses.append(float(loss_fn(**batch)[0]))
    assert losses[-1] < losses[0], losses
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert moved and moved <= trainable, moved - trainable
    if method == "adapter":  # only the adapters of the top block train, and they started as the identity
        assert trainable and all(".layers.1.weaver_adapter." in n for n in trainable)
    if method == "lora" and extra:  # only the top block (index 1 of 2) is adapted
        assert all(".layers.1." in n for n in trainable)
    if method == "freeze":
        assert all(".layers.1." in n or "norm" in n for n in trainable)


def test_target_only_loss_equals_full_logit_loss(tiny_model):
    model, tok = tiny_model
    batch = _batch(tok)
    full = model(**batch).loss
    fast, n = CausalLMLoss(model)(**batch)
    assert int(n) == int((batch["labels"][:, 1:] != -100).sum())
    torch.testing.assert_close(fast, full, rtol=1e-5, atol=1e-5)
    g_fast = torch.autograd.grad(fast, model.lm_head.weight)[0]
    g_full = torch.autograd.grad(model(**batch).loss, model.lm_head.weight)[0]
    torch.testing.assert_close(g_fast, g_full, rtol=1e-4, atol=1e-6)


def test_layer_selection_and_errors(tiny_model):
    model, _ = tiny_model
    assert selected_layers(model, TrainConfig(top_layers=1)) == [1]
    assert selected_layers(model, TrainConfig(layers=[-1, 0])) == [0, 1]
    with pytest.raises(ConfigError, match="top_layers"):
        selected_layers(model, TrainConfig(top_layers=5))
    with pytest.raises(ConfigError, match="not ia3"):
        build_trainable(model, TrainConfig(method="ia3", top_layers=1))


def test_precision_auto_is_recorded():
    chosen, why = choose_precision("auto", torch.device("cpu"))
    native = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert chosen == ("bf16" if native else "fp32") and why
    assert choose_precision("fp32", torch.device("cpu"))[0] == "fp32"


@pytest.mark.parametrize(("method", "extra", "blocks"), [("lora", {"top_layers": 1}, 1), ("lora", {}, 2),
                                                          ("full", {}, 2)])
def test_gradient_checkpointing_gives_the_same_loss_and_gradients(tiny_model_dir, method, extra, blocks):
    from transformers import AutoTokenizer, LlamaForCausalLM

    from weaver.tuning.methods import enable_checkpointing

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    batch, results = _batch(tok), []
    for checkpointed in (False, True):
        torch.manual_seed(0)
        model = build_trainable(LlamaForCausalLM.from_pretrained(tiny_model_dir),
                                TrainConfig(method=method, lora_dropout=0.1, **extra))
        if checkpointed:
            assert enable_checkpointing(model) == blocks
        model.train()
        torch.manual_seed(1)  # the same dropout masks: checkpointing replays the RNG state
        loss, _ = CausalLMLoss(model)(**batch)
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (loss0, g0), (loss1, g1) = results
    torch.testing.assert_close(loss1, loss0)
    assert g0.keys() == g1.keys() and g0
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], rtol=1e-5, atol=1e-6)


def test_gradient_checkpointing_is_refused_for_prefix_tuning(tiny_model):
    from weaver.tuning.methods import enable_checkpointing

    model = build_trainable(tiny_model[0], TrainConfig(method="prefix"))
    with pytest.raises(ConfigError, match="prefix"):
        enable_checkpointing(model)


def test_prefix_generation_applies_the_prefix_alone_and_in_a_batch(tiny_model):
    """The engine's greedy reply of a prefix-tuned model equals a step-by-step greedy decode with peft's forward."""
    from weaver.generate.engine import Generator
    from weaver.generate.sampling import SamplingParams

    model, tok = tiny_model
    model = build_trainable(model, TrainConfig(method="prefix", num_virtual_tokens=4)).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.normal_(0.0, 1.0)  # a prefix that changes the replies
    prompts = ["Write a headline about the harbour.", "Hi", "Summarize: rain fell over the hills all night."]

    def greedy(prompt):
        ids = tok(prompt, add_special_tokens=False)["input_ids"]
        for _ in range(5):
            with torch.no_grad():
                ids.append(int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax()))
        return tok.decode(ids[-5:], skip_special_tokens=True).strip()

    params = SamplingParams(max_new_tokens=5)
    batched = [c[0].text for c in Generator(model, tok).generate(prompts, params)]
    assert batched == [greedy(p) for p in prompts]
    with model.disable_adapter():
        base = [c[0].text for c in Generator(model, tok).generate(prompts, params)]
    assert base != batched


def test_chunked_target_logits_give_the_same_loss_and_gradients(tiny_model):
    """Above LOGIT_CHUNK_ELEMENTS the LM head runs in checkpointed chunks of positions: same loss and gradients."""
    from weaver.tuning.step import target_cross_entropy

    model, tok = tiny_model
    batch = _batch(tok)
    hidden = model.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    mask = batch["labels"][:, 1:] != -100
    h, t = hidden[:, :-1][mask], batch["labels"][:, 1:][mask]
    assert len(t) > 6
    results = []
    for elements in (2**40, 3 * model.config.vocab_size):  # one chunk; 3 positions per chunk
        loss = target_cross_entropy(model, h, t, chunk_elements=elements)
        grads = torch.autograd.grad(loss, [model.lm_head.weight, model.model.layers[1].mlp.down_proj.weight],
                                    retain_graph=True)
        results.append((loss.detach(), grads))
    (l0, g0), (l1, g1) = results
    torch.testing.assert_close(l1, l0, rtol=1e-6, atol=1e-6)
    for a, b in zip(g0, g1):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)  # float summation order only
