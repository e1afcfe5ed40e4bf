"""DPO: the loss and its gradients equal the papers' formulas (written out here independently), the reference is
the adapter-disabled model, and whole runs train, validate, stop early and resume like SFT runs."""

from __future__ import annotations

import math

import pytest
import torch

from weaver.data.preferences import PreferencePair, encode_pair
from weaver.data.records import Record
from weaver.tuning.dpo import PairCollator, PreferenceLoss, compute_reference, preference_losses


def paper_logps(model, batch):
    """log pi(y|x) summed over the reply, from the full logits of the model's own forward."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
    target = batch["labels"][:, 1:]
    mask = target != -100
    per_token = torch.log_softmax(logits, -1).gather(2, target.clamp(min=0).unsqueeze(2)).squeeze(2)
    return (per_token * mask).sum(1), mask.sum(1)


def paper_loss(pol, ref, n, beta, kind):
    """DPO eq. 7 (Rafailov 2023), SLiC's hinge (Zhao 2023), IPO eq. 17 (Azar 2023) per token as TRL 1.16."""
    b = pol.shape[0] // 2
    pw, pl, rw, rl, nw, nl = pol[:b], pol[b:], ref[:b], ref[b:], n[:b].float(), n[b:].float()
    h = (pw - rw) - (pl - rl)
    if kind == "sigmoid":
        return (-torch.log(1 / (1 + torch.exp(-beta * h)))).mean()
    if kind == "hinge":
        return torch.clamp(1 - beta * h, min=0).mean()
    return ((((pw - rw) / nw) - ((pl - rl) / nl) - 1 / (2 * beta)) ** 2).mean()


def _pairs(tok, n=6):
    out = []
    for i in range(n):
        rec = Record(str(i), "", f"the river and the stone number {i} " * (1 + i % 3), f"river stone {i}")
        pair = PreferencePair(rec, f"cloud market window {i} " * (1 + i % 2))
        prompt = tok.apply_chat_template([{"role": "user", "content": rec.input}], tokenize=False,
                                         add_generation_prompt=True)
        out.append(encode_pair(tok, prompt, pair, 96))
    return out


def _lora(model, seed=1):
    from peft import LoraConfig, get_peft_model

    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # a trained-looking adapter, so the policy differs from the reference
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return peft


@pytest.mark.parametrize("kind", ["sigmoid", "ipo", "hinge"])
def test_loss_and_gradients_equal_the_papers_formulas(tiny_model, kind):
    model, tok = tiny_model
    peft = _lora(model)
    examples = _pairs(tok)
    for e, ref in zip(examples, compute_reference(peft, examples, tok.pad_token_id, "fp32", torch.device("cpu"))):
        e["ref"] = ref
    batch = PairCollator(tok.pad_token_id)(examples)
    beta = 0.5 if kind != "ipo" else 2.0
    params = [p for p in peft.parameters() if p.requires_grad]

    ours, n = PreferenceLoss(peft, beta, kind)(**batch)
    ours_grad = torch.autograd.grad(ours, params)
    with peft.disable_adapter(), torch.no_grad():
        ref, _ = paper_logps(peft, batch)
    pol, counts = paper_logps(peft, batch)
    theirs = paper_loss(pol, ref, counts, beta, kind)
    theirs_grad = torch.autograd.grad(theirs, params)

    assert int(n) == 6
    assert torch.allclose(batch["ref_logps"], ref, atol=1e-4)  # the reference = the adapter-disabled model
    assert not torch.allclose(pol, ref, atol=1e-2)  # the adapter really changes the policy
    assert abs(float(ours) - float(theirs)) < 1e-5 and float(theirs) > 0
    for a, b in zip(ours_grad, theirs_grad):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-4)
    assert max(float(g.abs().max()) for g in ours_grad) > 1e-5


def test_rewards_and_their_sign():
    pol = torch.tensor([-1.0, -5.0, -4.0, -2.0])  # pair 0: chosen up vs the reference; pair 1: down
    ref = torch.tensor([-2.0, -4.0, -4.0, -4.0])
    losses, chosen, rejected = preference_losses(pol, ref, torch.ones(4), 0.1, "sigmoid")
    assert torch.allclose(chosen, torch.tensor([0.1, -0.1])) and torch.allclose(rejected, torch.tensor([0.0, 0.2]))
    assert losses[0] < math.log(2) < losses[1]
    equal, _, _ = preference_losses(ref, ref, torch.ones(4), 0.1, "sigmoid")
    assert torch.allclose(equal, torch.full((2,), math.log(2)))  # policy = reference: log 2 per pair
