"""Preference evaluation (`weaver eval --pairs FILE`): which reply of each held-out pair a model prefers.

    logps = pair_logps("runs/dpo", pairs, prompts, cfg)          # [[log p(chosen), log p(rejected)], ...]
    result = pair_metrics(tuned=logps, base=base_logps, beta=0.1, n_resamples=1000)

For each pair the model under test (tuned) and the model it is compared with (base: a DPO run's starting
point, i.e. the SFT run or the base model) score both replies by their summed log-probability given the
prompt (teacher-forced, the prompt rendered as in training). Reported:
  - reward_accuracy: the share of pairs whose implicit DPO reward beta * (log pi - log pi_base) is higher for
    the chosen reply (Rafailov et al. 2023, sec. 5; TRL's `rewards/accuracies`), with a 95% bootstrap
    interval, and the mean reward margin;
  - preference_accuracy of each model: the share of pairs where it gives the chosen reply the higher
    log-probability, with the paired-bootstrap CI of tuned - base (before/after preference tuning).
`sequence_logps` is also the log-probability the DPO loss of weaver.tuning.dpo trains on.
"""

from __future__ import annotations

import gc

import numpy as np
import torch

from weaver.eval.stats import bootstrap_interval, paired_bootstrap


def _base(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def sequence_logps(model, input_ids, attention_mask=None, labels=None, full_forward: bool = False):
    """Summed log-probabilities of each row's target tokens (labels != -100) and their number.

    Args:
        model: the (peft) causal LM.
        input_ids, attention_mask, labels: a right-padded batch (weaver.data.tokenize.collate).
        full_forward: use the model's own forward (prefix tuning: peft injects its virtual tokens there);
            otherwise LM-head logits are computed at target positions only (as weaver.tuning.step does).
    Returns:
        (log-probs [rows] float32, target token counts [rows]).
    """
    shifted = labels[:, 1:]
    mask = shifted != -100
    if full_forward:
        logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
        logits = logits[:, -input_ids.shape[1]:][:, :-1][mask]
    else:
        base = _base(model)
        hidden = base.get_decoder()(input_ids=input_ids, attention_mask=attention_mask,
                                    use_cache=False).last_hidden_state
        logits = base.get_output_embeddings()(hidden[:, :-1][mask])
        cap = getattr(base.config, "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
    token_logps = torch.log_softmax(logits.float(), dim=-1).gather(-1, shifted[mask].unsqueeze(-1)).squeeze(-1)
    rows = mask.nonzero()[:, 0]
    total = torch.zeros(labels.shape[0], dtype=torch.float32, device=labels.device).index_add(0, rows, token_logps)
    return total, mask.sum(dim=1)


@torch.no_grad()
def encoded_pair_logps(model, examples: list[dict], pad_id: int, batch_size: int = 8,
                       full_forward: bool = False) -> list[list[float]]:
    """[log p(chosen), log p(rejected)] of encoded pairs ({"chosen", "rejected"}: weaver.data.preferences
    encode_pair), in order, batched by length."""
    from weaver.data.tokenize import collate

    device = next(model.parameters()).device
    order = sorted(range(len(examples)), key=lambda i: len(examples[i]["chosen"]["input_ids"]))
    values: dict[int, list[float]] = {}
    for k in range(0, len(order), batch_size):
        idx = order[k:k + batch_size]
        batch = collate([examples[i]["chosen"] for i in idx] + [examples[i]["rejected"] for i in idx], pad_id)
        batch = {name: t.to(device) for name, t in batch.items()}
        logps, _ = sequence_logps(model, batch["input_ids"], batch["attention_mask"], batch["labels"], full_forward)
        chosen, rejected = logps.float().cpu().chunk(2)
        for i, c, r in zip(idx, chosen.tolist(), rejected.tolist()):
            values[i] = [c, r]
    return [values[i] for i in range(len(examples))]


def pair_logps(spec: str, pairs: list, prompts: list[str], max_seq_len: int, dtype: str = "auto",
               batch_size: int = 8) -> list[list[float]]:
    """Load the model `spec` (a run's adapter unmerged), score every pair's two replies, free the model.

    Returns:
        [log p(chosen | prompt), log p(rejected | prompt)] per pair.
    """
    from weaver.data.preferences import encode_pair
    from weaver.generate.transformers_backend import virtual_tokens
    from weaver.models.loading import load_model

    model, tok = load_model(spec, dtype=dtype)
    examples = [encode_pair(tok, prompt, pair, max_seq_len) for pair, prompt in zip(pairs, prompts)]
    out = encoded_pair_logps(model, examples, tok.pad_token_id, batch_size, full_forward=bool(virtual_tokens(model)))
    del model
    gc.collect()
    return out


def pair_metrics(tuned: list[list[float]], base: list[list[float]] | None, beta: float, n_resamples: int = 1000,
                 seed: int = 0) -> dict:
    """Reward accuracy of tuned against base, and each model's preference accuracy, with 95% intervals.

    Args:
        tuned, base: pair_logps of the model under test and of its starting point (None: no comparison).
        beta: the DPO beta the implicit rewards are scaled by (the run's train.dpo_beta).
    Returns:
        {"n", "preference_accuracy": {base?, tuned, delta?, low, high}, "reward_accuracy"?: {value, low, high},
        "reward_margin"?, "chosen_reward"?, "rejected_reward"?}.
    """
    t = np.asarray(tuned, dtype=float)
    prefers_t = (t[:, 0] > t[:, 1]).astype(float)
    out: dict = {"n": len(t), "beta": beta}
    if base is None:
        value, low, high = bootstrap_interval(prefers_t, n_resamples=n_resamples, seed=seed)
        out["preference_accuracy"] = {"tuned": value, "low": low, "high": high}
        return out
    b = np.asarray(base, dtype=float)
    prefers_b = (b[:, 0] > b[:, 1]).astype(float)
    ci = paired_bootstrap(prefers_b, prefers_t, n_resamples=n_resamples, seed=seed)
    out["preference_accuracy"] = {"base": ci.base, "tuned": ci.tuned, "delta": ci.delta, "low": ci.low,
                                  "high": ci.high, "significant": ci.significant}
    chosen, rejected = beta * (t[:, 0] - b[:, 0]), beta * (t[:, 1] - b[:, 1])
    value, low, high = bootstrap_interval((chosen > rejected).astype(float), n_resamples=n_resamples, seed=seed)
    out["reward_accuracy"] = {"value": value, "low": low, "high": high}
    out["reward_margin"] = float((chosen - rejected).mean())
    out["chosen_reward"], out["rejected_reward"] = float(chosen.mean()), float(rejected.mean())
    return out


def format_pair_metrics(result: dict) -> str:
    """Two plain lines for the CLI and report.md."""
    pa = result["preference_accuracy"]
    lines = [f"held-out pairs: {result['n']}"]
    if "base" in pa:
        lines.append(f"  prefers chosen (higher log-prob): base {pa['base']:.3f} -> tuned {pa['tuned']:.3f} "
                     f"(delta {pa['delta']:+.3f}, 95% CI [{pa['low']:+.3f}, {pa['high']:+.3f}])")
        ra = result["reward_accuracy"]
        lines.append(f"  reward accuracy (implicit reward vs base, beta {result['beta']}): {ra['value']:.3f} "
                     f"(95% CI [{ra['low']:.3f}, {ra['high']:.3f}]), mean margin {result['reward_margin']:+.4f}")
    else:
        lines.append(f"  prefers chosen (higher log-prob): {pa['tuned']:.3f} (95% CI [{pa['low']:.3f}, "
                     f"{pa['high']:.3f}])")
    return "\n".join(lines)
