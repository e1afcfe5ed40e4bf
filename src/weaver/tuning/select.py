"""Active selection: `weaver data select` ranks unlabelled inputs so a person labels the most useful ones first.

    rows = select_inputs(records, generator, (model, tok), DataConfig(task="summarize"), n=50)
    write_selection("to-label.jsonl", rows)

Uncertainty of an input is measured twice on the model: the disagreement of K sampled outputs (1 - their mean
pairwise ROUGE-L F1) and the mean token entropy (nats) of the model's next-token distribution along its medoid
sample (teacher-forced). Their rank-averaged score (0-1) is the input's uncertainty. Diversity: inputs are
embedded (all-MiniLM-L6-v2 when `weaver[embed]` is installed, else the model's own mean-pooled last hidden
state) and picked by a weighted farthest-first traversal: the most uncertain input first, then each time the
input maximising uncertainty x cosine distance to the nearest one already picked. Each pick's cluster is the
inputs closer to it than to any other pick. Every row says why it was picked.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from weaver.config import DataConfig
from weaver.data.records import Record
from weaver.data.tasks import get_task, render_prompt
from weaver.errors import ConfigError
from weaver.files import atomic_write_text
from weaver.tuning.synth_filters import agreement

log = logging.getLogger(__name__)


def token_entropy(model, tok, prompts: list[str], texts: list[str], max_seq_len: int, batch_size: int = 8):
    """Mean entropy (nats) of the model's next-token distribution at each position of text after its prompt."""
    import torch

    from weaver.data.tokenize import encode_example

    examples = [encode_example(tok, p, t, max_seq_len) for p, t in zip(prompts, texts)]
    out = [0.0] * len(examples)
    decoder, head = model.get_decoder(), model.get_output_embeddings()
    with torch.inference_mode():
        for start in range(0, len(examples), batch_size):
            idx = list(range(start, min(start + batch_size, len(examples))))
            width = max(len(examples[i]["input_ids"]) for i in idx)
            ids = torch.full((len(idx), width), tok.pad_token_id)
            labels = torch.full((len(idx), width), -100)
            attn = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):
                n = len(examples[i]["input_ids"])
                ids[row, :n], labels[row, :n], attn[row, :n] = (torch.tensor(examples[i]["input_ids"]),
                                                                torch.tensor(examples[i]["labels"]), 1)
            rows, cols = (labels[:, 1:] != -100).nonzero(as_tuple=True)
            hidden = decoder(input_ids=ids, attention_mask=attn).last_hidden_state
            logp = torch.log_softmax(head(hidden[:, :-1][rows, cols]).float(), dim=-1)
            ent = -(logp.exp() * logp).sum(-1)
            for row, i in enumerate(idx):
                sel = rows == row
                out[i] = round(float(ent[sel].mean()), 4) if sel.any() else 0.0
    return out


def input_vectors(model, tok, texts: list[str], use_embedder: bool | None = None) -> tuple[np.ndarray, str]:
    """(unit vectors [N, d] of the inputs, what made them): MiniLM when installed, else the model's hidden state."""
    import torch

    from weaver.eval.metrics import embed, embedder_available

    if use_embedder if use_embedder is not None else embedder_available():
        return embed(texts).numpy(), "all-MiniLM-L6-v2"
    log.info("weaver[embed] is not installed: diversity uses the model's mean-pooled hidden states")
    decoder, chunks = model.get_decoder(), []
    with torch.inference_mode():
        for i in range(0, len(texts), 8):
            enc = tok(texts[i : i + 8], padding=True, truncation=True, max_length=256, return_tensors="pt")
            hidden = decoder(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden.float() * mask).sum(1) / mask.sum(1).clamp(min=1)
            chunks.append(torch.nn.functional.normalize(pooled, dim=-1))
    return torch.cat(chunks).numpy(), "the model's mean-pooled hidden states"


def _rank01(values: list[float]) -> np.ndarray:
    """Ranks scaled to 0-1 (ties share their mean rank); one value scores 1."""
    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return np.ones(len(v))
    ranks = np.empty(len(v))
    ranks[np.argsort(v, kind="stable")] = np.arange(len(v))
    for value in np.unique(v):  # ties: their mean rank
        ranks[v == value] = ranks[v == value].mean()
    return ranks / (len(v) - 1)


def pick_diverse(uncertainty: np.ndarray, vectors: np.ndarray, n: int) -> tuple[list[int], list[float], np.ndarray]:
    """Weighted farthest-first: (picked indices in order, each one's distance to the picks before it, the
    index of each input's nearest pick)."""
    order = [int(np.argmax(uncertainty))]
    dist = [1.0]
    nearest = 1 - vectors @ vectors[order[0]]
    while len(order) < min(n, len(uncertainty)):
        gain = (uncertainty + 1e-6) * np.maximum(nearest, 0)
        gain[order] = -1
        i = int(np.argmax(gain))
        order.append(i)
        dist.append(float(nearest[i]))
        nearest = np.minimum(nearest, 1 - vectors @ vectors[i])
    owner = np.argmax(vectors @ vectors[order].T, axis=1)
    return order, dist, owner


def select_inputs(records: list[Record], generator, scorer_model, data_cfg: DataConfig, n: int, k: int = 4,
                  temperature: float = 0.8, top_p: float = 0.95, max_new_tokens: int | None = None, seed: int = 0,
                  use_embedder: bool | None = None, progress=None) -> list[dict]:
    """The n inputs to label first, each with its scores and the reason it was picked.

    Args:
        records: unlabelled inputs (weaver.data.synthetic.read_unlabelled).
        generator: a weaver.generate.Generator that samples the K outputs.
        scorer_model: (transformers model, tokenizer) for entropies and, without MiniLM, the input vectors.
        n: how many to pick (all when fewer inputs).
        k: samples per input (2 to 16).
        use_embedder: MiniLM (True), the model's hidden states (False), or MiniLM when installed (None).
    Returns:
        Rows in pick order: {id, instruction, input, output: "", meta: {..., select: {rank, uncertainty, ...}}}.
    Raises:
        ConfigError: n < 1 or k outside 2-16.
    """
    from weaver.generate.sampling import SamplingParams

    if n < 1:
        raise ConfigError(f"--n must be at least 1, got {n}")
    if not 2 <= k <= 16:
        raise ConfigError(f"--k must be from 2 to 16 (disagreement needs two samples), got {k}")
    tok = generator.tok
    prompts = [render_prompt(tok, r, data_cfg) for r in records]
    task = get_task(data_cfg.task)
    params = SamplingParams(max_new_tokens=max_new_tokens or task.max_new_tokens, temperature=temperature,
                            top_p=top_p, n=k, stop=list(task.stop), seed=seed)
    outs = generator.generate(prompts, params, progress=progress)
    picks = [agreement([c.text for c in out], data_cfg.lang) for out in outs]
    medoids = [out[best].text or "." for out, (_, best) in zip(outs, picks)]
    disagreement = [round(1 - a, 4) for a, _ in picks]
    entropy = token_entropy(*scorer_model, prompts, medoids, data_cfg.max_seq_len)
    uncertainty = (_rank01(disagreement) + _rank01(entropy)) / 2
    vectors, made_by = input_vectors(*scorer_model, [r.input for r in records], use_embedder)
    order, dist, owner = pick_diverse(uncertainty, vectors, n)
    rank_of = {i: r for r, i in enumerate(np.argsort(-uncertainty, kind="stable"), 1)}
    rows = []
    for rank, (i, d) in enumerate(zip(order, dist), 1):
        size = int((owner == rank - 1).sum())
        why = (f"uncertainty {uncertainty[i]:.2f} (#{rank_of[i]} of {len(records)}: {k} samples agree "
               f"{1 - disagreement[i]:.2f} ROUGE-L, entropy {entropy[i]:.2f} nats/token); "
               + ("first pick" if rank == 1 else f"cosine distance {d:.2f} to the nearest earlier pick")
               + f"; stands for {size} input{'s' if size != 1 else ''}")
        r = records[i]
        select = {"rank": rank, "uncertainty": round(float(uncertainty[i]), 4), "uncertainty_rank": rank_of[i],
                  "disagreement": disagreement[i], "entropy": entropy[i], "distance": round(d, 4),
                  "cluster_size": size, "vectors": made_by, "reason": why}
        rows.append({"id": r.id, "instruction": r.instruction, "input": r.input, "output": "",
                     "meta": {**r.meta, "source": r.source, "select": select}})
    return rows


def write_selection(path: str | Path, rows: list[dict]) -> Path:
    """Write the picks as JSON Lines (atomically): fill in each `output` and train on the file."""
    path = Path(path)
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path
