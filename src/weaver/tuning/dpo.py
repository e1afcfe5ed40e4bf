"""Preference tuning (`train.objective: dpo`): the DPO loss inside our training loop, and its reference log-probs.

    loss_mod = PreferenceLoss(model, beta=0.1, loss_type="sigmoid")
    loss, n_pairs = loss_mod(**PairCollator(pad_id)(examples))     # rows: the chosen sides, then the rejected

DPO (Rafailov et al. 2023, eq. 7) trains the policy pi on pairs (x, y_w, y_l) against a frozen reference
pi_ref: with h = log pi(y_w|x) - log pi_ref(y_w|x) - (log pi(y_l|x) - log pi_ref(y_l|x)),
  sigmoid: -log sigmoid(beta * h)                                          (the DPO paper)
  hinge:   max(0, 1 - beta * h)                                            (SLiC, Zhao et al. 2023)
  ipo:     (h' - 1 / (2 beta))^2, h' the same difference of per-token mean log-ratios (IPO, Azar et al.
           2023, eq. 17, length-normalised as TRL does).
These are the formulas of TRL's DPOTrainer (trl 1.16, `_compute_loss`, f_divergence reverse_kl); TRL itself
is not used because its loss lives inside its Trainer (tests/tuning/test_dpo.py checks ours against the
papers' formulas written out independently, loss and gradients).

The reference is the starting policy: the same weights with the adapter disabled (`disable_adapter()`)
for a fresh adapter, or the SFT run's adapter as loaded when `model.name` is a run (so the reference is
the SFT model, as DPO prescribes). Its log-probs do not change during training, so they are computed once
before the first step (one no-grad forward per pair, TRL's `precompute_ref_log_probs`), kept in the run
folder (`reference_logps.json`, so a resumed run uses the very same ones), and only one copy of the
weights is ever in memory. The implicit reward of a reply is beta * (log pi - log pi_ref); validation
reports the dev DPO loss, reward accuracy (share of pairs whose chosen reward is higher) and the margin.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from weaver.errors import WeaverError
from weaver.eval.preferences import encoded_pair_logps, sequence_logps
from weaver.tuning.step import autocast

LOSS_TYPES = ("sigmoid", "ipo", "hinge")
REFERENCE_FILE = "reference_logps.json"


def preference_losses(policy: torch.Tensor, reference: torch.Tensor, counts: torch.Tensor, beta: float,
                      loss_type: str = "sigmoid") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair DPO losses and the implicit rewards of both sides.

    Args:
        policy, reference: summed log-probs [2B] (chosen rows first, then the rejected rows).
        counts: target tokens per row [2B] (ipo normalises by them).
        beta: the KL strength (train.dpo_beta).
        loss_type: sigmoid | ipo | hinge (train.dpo_loss_type).
    Returns:
        (losses [B], chosen rewards [B], rejected rewards [B]); rewards are beta * (log pi - log pi_ref), detached.
    """
    ratio = policy - reference
    chosen, rejected = ratio.chunk(2)
    if loss_type == "sigmoid":
        losses = -F.logsigmoid(beta * (chosen - rejected))
    elif loss_type == "hinge":
        losses = torch.relu(1 - beta * (chosen - rejected))
    elif loss_type == "ipo":
        n_c, n_r = counts.clamp(min=1).to(ratio.dtype).chunk(2)
        losses = (chosen / n_c - rejected / n_r - 1 / (2 * beta)) ** 2
    else:
        raise WeaverError(f"--train.dpo_loss_type {loss_type!r} is not one of {', '.join(LOSS_TYPES)}")
    return losses, beta * chosen.detach(), beta * rejected.detach()


class PreferenceLoss(torch.nn.Module):
    """Mean DPO loss of a pair batch, as one module (what accelerate wraps, like weaver.tuning.step.CausalLMLoss).

    forward(input_ids, attention_mask, labels, ref_logps) -> (loss, number of pairs); rows are the chosen
    sides then the rejected ones (PairCollator), ref_logps their reference log-probs.
    """

    def __init__(self, model, beta: float, loss_type: str = "sigmoid", full_forward: bool = False):
        super().__init__()
        self.model, self.beta, self.loss_type, self.full_forward = model, beta, loss_type, full_forward

    def pair_stats(self, input_ids, attention_mask=None, labels=None, ref_logps=None):
        """(losses [B], chosen rewards [B], rejected rewards [B]) of a pair batch."""
        logps, counts = sequence_logps(self.model, input_ids, attention_mask, labels, self.full_forward)
        return preference_losses(logps, ref_logps.to(logps.dtype), counts, self.beta, self.loss_type)

    def forward(self, input_ids, attention_mask=None, labels=None, ref_logps=None):
        losses, _, _ = self.pair_stats(input_ids, attention_mask, labels, ref_logps)
        return losses.mean(), torch.tensor(losses.shape[0])


class PairCollator:
    """Pair examples ({"chosen", "rejected": encoded, "ref": [c, r]}) -> one right-padded batch of 2B rows.

    The rows are every chosen side, then every rejected side; `ref_logps` holds their reference log-probs
    (absent while they are being computed).
    """

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        from weaver.data.tokenize import collate

        batch = collate([e["chosen"] for e in examples] + [e["rejected"] for e in examples], self.pad_id)
        if all("ref" in e for e in examples):
            batch["ref_logps"] = torch.tensor([e["ref"][0] for e in examples] + [e["ref"][1] for e in examples],
                                              dtype=torch.float32)
        return batch


def _digest(examples: list[dict]) -> str:
    """SHA-256 of the encoded pairs: a cached file is used only for exactly these token sequences."""
    h = hashlib.sha256()
    for e in examples:
        h.update(json.dumps([e["chosen"]["input_ids"], e["rejected"]["input_ids"]]).encode())
    return h.hexdigest()


@torch.no_grad()
def compute_reference(model, examples: list[dict], pad_id: int, precision: str, device, batch_size: int = 8,
                      disable_adapter: bool = True, full_forward: bool = False) -> list[list[float]]:
    """Reference log-probs [chosen, rejected] of every pair: the model in eval mode, with its adapter disabled
    (a fresh adapter: the base model) or as loaded (continuing an SFT run's adapter).

    Returns:
        One [chosen, rejected] pair of summed log-probs per example, in order.
    """
    was_training = model.training
    model.eval()
    off = model.disable_adapter() if disable_adapter and hasattr(model, "disable_adapter") else contextlib.nullcontext()
    with off, autocast(precision, device):
        out = encoded_pair_logps(model, examples, pad_id, batch_size, full_forward)
    model.train(was_training)
    return out


def attach_reference(model, splits: dict[str, list[dict]], run_dir: Path, pad_id: int, precision: str, device,
                     disable_adapter: bool, full_forward: bool = False, batch_size: int = 8,
                     write: bool = True) -> bool:
    """Give every pair example its "ref" log-probs: from run_dir/reference_logps.json when it was written for
    exactly these pairs (a resumed run), else computed now and written there (atomically) before training.

    Args:
        splits: {"train": examples, "dev": examples}.
        write: False on the non-main processes (they compute the same values and write nothing).
    Returns:
        True when the values were read from the run folder.
    """
    from weaver.files import atomic_write_text

    path = Path(run_dir) / REFERENCE_FILE
    digest = _digest([e for part in splits.values() for e in part])
    try:
        cached = json.loads(path.read_text())
        found = cached.get("digest") == digest and all(len(cached[n]) == len(p) for n, p in splits.items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        found = False
    if not found:
        cached = {"digest": digest}
        for name, part in splits.items():
            cached[name] = compute_reference(model, part, pad_id, precision, device, batch_size, disable_adapter,
                                             full_forward)
        if write:
            atomic_write_text(path, json.dumps(cached) + "\n")
    for name, part in splits.items():
        for e, ref in zip(part, cached[name]):
            e["ref"] = ref
    return found


@torch.no_grad()
def dev_preferences(trainer) -> dict[str, float]:
    """Dev DPO loss, reward accuracy (share of pairs whose chosen reward is higher), mean margin and rewards.

    With several processes the dev pairs are sharded and the sums reduced.
    """
    data, acc = trainer.data, trainer.acc
    module = acc.unwrap_model(trainer.wrapped)
    module.eval()
    order = sorted(range(len(data.dev)), key=lambda i: len(data.dev[i]["chosen"]["input_ids"]))
    bs = trainer.t.batch_size
    batches = [order[i:i + bs] for i in range(0, len(order), bs)][acc.process_index::acc.num_processes]
    sums = torch.zeros(5, dtype=torch.float64)
    for idx in batches:
        batch = {k: v.to(acc.device) for k, v in data.collate([data.dev[i] for i in idx]).items()}
        with autocast(trainer.precision, acc.device):
            losses, chosen, rejected = module.pair_stats(**batch)
        sums += torch.tensor([float(losses.sum()), float((chosen > rejected).sum()), float((chosen - rejected).sum()),
                              float(chosen.sum()), len(idx)], dtype=torch.float64)
    if acc.num_processes > 1:
        sums = acc.reduce(sums.to(acc.device), reduction="sum").cpu()
    n = max(float(sums[4]), 1.0)
    return {"dev_loss": round(float(sums[0]) / n, 5), "reward_accuracy": round(float(sums[1]) / n, 4),
            "reward_margin": round(float(sums[2]) / n, 5), "chosen_reward": round(float(sums[3]) / n, 5)}
