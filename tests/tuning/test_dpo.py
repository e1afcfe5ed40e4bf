"""DPO: the loss and its gradients equal the papers' formulas (written out here independently), the reference is
the adapter-disabled model, and whole runs train, validate, stop early and resume like SFT runs."""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from weaver.config import load_config
from weaver.data.preferences import PreferencePair, encode_pair
from weaver.data.records import Record
from weaver.errors import ConfigError, DataError
from weaver.models.loading import load_model
from weaver.tuning.dpo import PairCollator, PreferenceLoss, compute_reference, preference_losses
from weaver.tuning.run import prepare_data, tune

from .conftest import WORDS, tiny_overrides

ROOT = Path(__file__).resolve().parents[2]


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


# ---- whole runs --------------------------------------------------------------------------------------------


def write_pairs(path: Path, n: int, seed: int = 0) -> Path:
    """n pairs: chosen = the input's first three words (as the SFT data's references), rejected = other words."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 30)))
            chosen = " ".join(text.split()[:3])
            rejected = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 9)))
            fh.write(json.dumps({"id": str(i), "instruction": "", "input": text, "chosen": chosen,
                                 "rejected": rejected}) + "\n")
    return path


def _dpo(model_dir, data, out, **train):
    return tune(load_config(None, tiny_overrides(model_dir, data, out, **{"objective": "dpo", "dpo_beta": 0.5,
                                                                          **train})))


def _events(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_dpo_run_learns_the_preference_and_reports_rewards(tiny_model_dir, tmp_path):
    data = write_pairs(tmp_path / "pairs.jsonl", 40)
    run = _dpo(tiny_model_dir, data, tmp_path / "run", max_steps=8, eval_every=4, metric="reward_accuracy")
    facts = json.loads((run / "run.json").read_text())
    assert facts["objective"] == "dpo" and facts["steps"] == 8 and facts["best_metric"]["name"] == "reward_accuracy"
    events = _events(run)
    train = [e["train_loss"] for e in events if "train_loss" in e]
    dev = [e for e in events if "reward_accuracy" in e]
    assert [e["step"] for e in dev] == [4, 8]
    assert abs(train[0] - math.log(2)) < 0.05  # the policy starts at the reference: log 2 per pair
    assert train[-1] < train[0] - 0.1 and dev[-1]["dev_loss"] < math.log(2)
    assert dev[-1]["reward_accuracy"] > 0.5 and dev[-1]["reward_margin"] > 0
    ref = json.loads((run / "reference_logps.json").read_text())
    assert len(ref["train"]) == 30 and len(ref["dev"]) == 10 and all(c < 0 and r < 0 for c, r in ref["train"])
    assert (run / "adapter" / "adapter_config.json").is_file()


def test_dpo_early_stops_on_reward_accuracy(tiny_model_dir, tmp_path):
    data = write_pairs(tmp_path / "pairs.jsonl", 40)
    run = _dpo(tiny_model_dir, data, tmp_path / "run", lr=1e-12, max_steps=10, eval_every=1, save_every=0,
               patience=1, metric="reward_margin")
    facts = json.loads((run / "run.json").read_text())
    assert facts["stop_reason"] == "early_stopping" and facts["steps"] == 2


def test_dpo_time_budget_and_tensorboard(tiny_model_dir, tmp_path):
    data = write_pairs(tmp_path / "pairs.jsonl", 40)
    run = _dpo(tiny_model_dir, data, tmp_path / "run", max_minutes=0.0001, max_steps=50, logging="[tensorboard]")
    facts = json.loads((run / "run.json").read_text())
    assert facts["stop_reason"] == "time_budget" and facts["steps"] == 1
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = EventAccumulator(str(run / "tb")).Reload().Tags()["scalars"]
    assert {"train_loss", "dev_loss", "reward_accuracy", "reward_margin"} <= set(tags)


def test_sft_data_or_pack_with_dpo_is_one_clear_error(tiny_model_dir, tiny_data, tmp_path):
    with pytest.raises(ConfigError, match=r"--data.train .*train\.jsonl holds records without chosen and rejected "
                       r"replies, but train.objective dpo trains on preference pairs: make pairs from it"):
        _dpo(tiny_model_dir, tiny_data, tmp_path / "a")
    data = write_pairs(tmp_path / "pairs.jsonl", 20)
    with pytest.raises(ConfigError, match=r"--data.dev .* or --data.dev none to carve dev pairs"):
        tune(load_config(None, tiny_overrides(tiny_model_dir, data, tmp_path / "d", objective="dpo")
                         + ["--data.dev", str(tiny_data)]))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(data.read_text() + json.dumps({"input": "x", "chosen": "a", "rejected": "a"}) + "\n")
    with pytest.raises(DataError, match=r"bad\.jsonl:21: rejected: is the same text as chosen"):
        _dpo(tiny_model_dir, bad, tmp_path / "e")
    with pytest.raises(ConfigError, match="data.pack does not work with train.objective dpo"):
        tune(load_config(None, tiny_overrides(tiny_model_dir, data, tmp_path / "b", objective="dpo")
                         + ["--data.pack", "true"]))
    sft = tune(load_config(None, tiny_overrides(tiny_model_dir, tiny_data, tmp_path / "sft", max_steps=1)))
    with pytest.raises(ConfigError, match="holds a lora adapter, which DPO continues: set --train.method lora"):
        _dpo(sft, data, tmp_path / "c", method="ia3")


def test_feedback_export_trains_as_is(tiny_model_dir, tmp_path):
    from weaver.apps.feedback import Draft, FeedbackStore, export

    store = FeedbackStore(tmp_path / "studio.sqlite")
    rng = random.Random(3)
    for i in range(16):
        text = " ".join(rng.choice(WORDS) for _ in range(12))
        rid = store.add_request("summarize", [Draft(" ".join(text.split()[:3]), "news"), Draft(f"cloud {i}", "base")],
                                {"input": text})
        store.add_event(rid, "choose", draft=0)
    assert export(store, tmp_path / "fb")["pairs"] == 16
    run = _dpo(tiny_model_dir, tmp_path / "fb" / "pairs.jsonl", tmp_path / "run", max_steps=3)
    assert json.loads((run / "run.json").read_text())["data"]["counts"] == {"train": 12, "dev": 4, "test": 0}
    assert any("reward_accuracy" in e for e in _events(run))


def test_dpo_from_an_sft_run_continues_its_adapter_against_it(tiny_model_dir, tiny_data, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from weaver.models.loading import resolve

    sft = tune(load_config(None, tiny_overrides(tiny_model_dir, tiny_data, tmp_path / "sft", max_steps=4)))
    data = write_pairs(tmp_path / "pairs.jsonl", 24)
    run = _dpo(sft, data, tmp_path / "dpo", max_steps=3)
    assert resolve(run).base_spec == str(sft) and resolve(run).base_dir == resolve(sft).base_dir
    ref = torch.tensor(json.loads((run / "reference_logps.json").read_text())["train"])
    cfg = load_config(run / "config.yaml")
    _, tok = load_model(sft)
    examples = prepare_data(cfg, tok)[0].train  # the run's training pairs, in its order
    sft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), sft / "adapter")
    cpu = torch.device("cpu")
    as_sft = torch.tensor(compute_reference(sft_model, examples, tok.pad_token_id, "fp32", cpu, disable_adapter=False))
    as_base = torch.tensor(compute_reference(sft_model, examples, tok.pad_token_id, "fp32", cpu))
    torch.testing.assert_close(ref, as_sft, rtol=1e-4, atol=1e-4)  # the reference is the SFT policy ...
    assert (ref - as_base).abs().max() > 0.1  # ... not the base model
    first = next(e["train_loss"] for e in _events(run) if "train_loss" in e)
    assert abs(first - math.log(2)) < 0.05  # so DPO starts at log 2 per pair
    a = load_file(str(run / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(sft / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and any(not torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("method", ["ia3", "adapter", "prefix", "adalora", "freeze", "full"])
def test_dpo_on_other_methods_moves_only_trainable_weights(tiny_model_dir, tmp_path, method):
    data = write_pairs(tmp_path / "pairs.jsonl", 20)
    extra = {"top_layers": 1} if method == "freeze" else {}
    run = _dpo(tiny_model_dir, data, tmp_path / "run", method=method, max_steps=3, eval_every=3, **extra)
    events = _events(run)
    losses = [e["train_loss"] for e in events if "train_loss" in e]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
    assert abs(losses[0] - math.log(2)) < 0.05  # the adapter-disabled (or starting) model is the reference
    assert "reward_accuracy" in events[-1]


def test_killed_dpo_run_resumes_onto_the_uninterrupted_adapter(tiny_model_dir, tmp_path):
    data = write_pairs(tmp_path / "pairs.jsonl", 40)
    args = dict(max_steps=6, save_every=1, eval_every=3, lr=5e-3)
    reference = _dpo(tiny_model_dir, data, tmp_path / "reference", **args)
    out = tmp_path / "killed"
    overrides = tiny_overrides(tiny_model_dir, data, out, **{"objective": "dpo", "dpo_beta": 0.5, **args})
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "TOKENIZERS_PARALLELISM": "false"}
    config = tmp_path / "dpo.yaml"
    config.write_text("# weaver tune dpo.yaml\ntrain:\n  objective: dpo\n")
    proc = subprocess.Popen([sys.executable, "-m", "weaver.cli", "tune", str(config), *overrides], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not (out / "checkpoints" / "step-000003").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert proc.poll() is None, proc.stderr.read().decode(errors="replace")[-2000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert not (out / "adapter").exists() and (out / "reference_logps.json").is_file()
    resumed = tune(load_config(None, overrides))
    assert json.loads((resumed / "run.json").read_text())["steps"] == 6
    a = load_file(str(resumed / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(reference / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and a
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)


def test_eval_of_a_dpo_run_compares_with_its_sft_start_and_scores_held_out_pairs(tiny_model_dir, tiny_data,
                                                                                 tmp_path, capsys):
    import numpy as np

    from weaver.cli import main
    from weaver.data.preferences import read_pairs
    from weaver.eval.preferences import pair_logps

    sft = tune(load_config(None, tiny_overrides(tiny_model_dir, tiny_data, tmp_path / "sft", max_steps=2)))
    run = _dpo(sft, write_pairs(tmp_path / "pairs.jsonl", 24), tmp_path / "dpo", max_steps=4, lr=2e-2)
    held = write_pairs(tmp_path / "held.jsonl", 10, seed=7)
    assert main(["eval", "--model", str(run), "--data", str(held), "--limit", "4", "--pairs", str(held),
                 "--eval.semantic", "false", "--eval.bootstrap", "100", "--generate.max_new_tokens", "4"]) == 0
    printed = capsys.readouterr().out
    report = json.loads((run / "eval" / "report.json").read_text())
    assert report["base"] == str(sft) and report["n"] == 4  # the run it started from, not the raw base
    pairs = report["pairs"]
    assert "reward accuracy (implicit reward vs base, beta 0.5)" in printed and pairs["n"] == 10
    cfg = load_config(run / "config.yaml")
    from weaver.data.tasks import render_prompt
    from weaver.models.loading import load_tokenizer

    tok = load_tokenizer(run)
    held_pairs = read_pairs(held)
    prompts = [render_prompt(tok, p.record, cfg.data) for p in held_pairs]
    t = np.array(pair_logps(str(run), held_pairs, prompts, cfg.data.max_seq_len))
    b = np.array(pair_logps(str(sft), held_pairs, prompts, cfg.data.max_seq_len))
    expected = float((((t[:, 0] - b[:, 0]) - (t[:, 1] - b[:, 1])) > 0).mean())
    assert pairs["reward_accuracy"]["value"] == pytest.approx(expected)
    assert pairs["preference_accuracy"]["base"] == pytest.approx(float((b[:, 0] > b[:, 1]).mean()))
    assert pairs["preference_accuracy"]["tuned"] == pytest.approx(float((t[:, 0] > t[:, 1]).mean()))
    assert pairs["reward_margin"] == pytest.approx(0.5 * float(((t[:, 0] - b[:, 0]) - (t[:, 1] - b[:, 1])).mean()),
                                                   abs=1e-6)
    assert not np.allclose(t, b)  # DPO moved the policy away from its SFT start


def test_pair_metrics_by_hand():
    from weaver.eval.preferences import pair_metrics

    base = [[-5.0, -4.0], [-3.0, -6.0], [-2.0, -2.5], [-4.0, -1.0]]
    tuned = [[-4.0, -4.5], [-3.5, -6.0], [-2.0, -2.0], [-4.0, -3.0]]  # rewards (x1): +1/-.5, -.5/0, 0/+.5, 0/-2
    out = pair_metrics(tuned, base, beta=1.0, n_resamples=200)
    assert out["reward_accuracy"]["value"] == 0.5 and out["reward_margin"] == pytest.approx((1.5 - 0.5 - 0.5 + 2) / 4)
    assert out["preference_accuracy"]["base"] == 0.5 and out["preference_accuracy"]["tuned"] == 0.5
    assert pair_metrics(tuned, None, beta=1.0, n_resamples=200)["preference_accuracy"]["tuned"] == 0.5
