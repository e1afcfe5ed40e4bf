"""Validation during tuning: token-level dev loss and, optionally, ROUGE-L of generated dev replies.

Both are computed the same way at every validation so the early-stopping decisions compare like with
like. With several processes the dev loss is sharded and summed; ROUGE-L is computed on the main
process and broadcast (so not for a sharded model, whose weights are whole in no process).
"""

from __future__ import annotations

import torch

from weaver.tuning.step import autocast


@torch.no_grad()
def dev_loss(trainer) -> float:
    """Mean cross-entropy per target token over the dev examples."""
    data, acc = trainer.data, trainer.acc
    trainer.wrapped.eval()
    order = sorted(range(len(data.dev)), key=lambda i: len(data.dev[i]["input_ids"]))
    bs = trainer.t.batch_size
    every = [order[i : i + bs] for i in range(0, len(order), bs)]
    batches = every[acc.process_index :: acc.num_processes]
    # Every process runs as many forwards: each one is collective (FSDP gathers the weights, DDP broadcasts the
    # buffers), so a process with one batch fewer would leave the others waiting. None: a forward not counted.
    batches += [None] * (-(-len(every) // acc.num_processes) - len(batches))
    sums = torch.zeros(2, dtype=torch.float64)
    for idx in batches:
        batch = {k: v.to(acc.device) for k, v in data.collate([data.dev[i] for i in idx or every[0]]).items()}
        with autocast(trainer.precision, acc.device):
            loss, n = trainer.wrapped(**batch)
        if idx is not None:
            sums += torch.tensor([float(loss) * int(n), int(n)], dtype=torch.float64)
    if acc.num_processes > 1:
        sums = acc.reduce(sums.to(acc.device), reduction="sum").cpu()
    return round(float(sums[0] / max(sums[1], 1)), 5)


def rouge_l(preds: list[str], refs: list[list[str]], lang: str) -> float:
    """Mean ROUGE-L F1 (x100), best over each item's references (weaver.eval.metrics when present)."""
    try:
        from weaver.eval.metrics import rouge

        scores = rouge(preds, refs, lang)
        return round(sum(s["rougeL"] for s in scores) / max(len(scores), 1), 3)
    except (ImportError, KeyError, TypeError):
        pass
    from rouge_score import rouge_scorer

    class _Chars:  # rouge-score's default tokenizer drops non-Latin text: score Chinese by characters
        def tokenize(self, text):
            return [c for c in text if not c.isspace()]

    zh = _Chars() if lang == "zh" else None
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=lang == "en", tokenizer=zh)
    total = 0.0
    for pred, ref in zip(preds, refs):
        total += max(scorer.score(r, pred)["rougeL"].fmeasure for r in ref) if ref else 0.0
    return round(100 * total / max(len(preds), 1), 3)


@torch.no_grad()
def dev_rouge(trainer) -> float:
    """ROUGE-L of greedy replies to the first train.rouge_samples dev prompts."""
    from accelerate.utils import broadcast_object_list

    from weaver.generate.engine import Generator
    from weaver.generate.sampling import SamplingParams

    data, acc = trainer.data, trainer.acc
    value = [0.0]
    if acc.is_main_process:
        n = trainer.t.rouge_samples
        model = trainer.model
        model.eval()
        params = SamplingParams(max_new_tokens=data.max_new_tokens, repetition_penalty=1.1, stop=data.stop)
        with autocast(trainer.precision, acc.device):
            outs = Generator(model, trainer.tok, batch_size=8).generate(data.dev_prompts[:n], params)
        value = [rouge_l([o[0].text for o in outs], data.dev_refs[:n], data.lang)]
    if acc.num_processes > 1:
        broadcast_object_list(value)
    return value[0]
