"""Label-light training data: `weaver data synth` writes outputs (self-training) or inputs (instruction
back-translation) with a model and keeps only what passes measured filters.

    s = SynthSettings(mode="selftrain", k=4)
    summary = synthesize("runs/sft", "articles.jsonl", "synth.jsonl", DataConfig(task="summarize"), s)

selftrain: for each unlabelled input the model writes K samples; the medoid (the sample with the highest mean
ROUGE-L to the others) is the candidate output. backtranslate (Humpback / Weaver style): for each output that
has no input (a headline, an ad, a reply) the model writes K candidate inputs; the one under which the original
output is most likely is kept (among those that do not restate the output). Every candidate is scored
(weaver.tuning.synth_filters) and kept only when it passes all filters: length and repetition bounds, the safety
policy, no copy of the output (backtranslate), agreement among the K samples, the mean token log-probability of
the output (teacher-forced on the transformers model, since llama.cpp returns no log-probs) and near-duplicate
removal. Kept records carry `meta.synthetic` with their scores.

Generation runs locally (--backend) or on a pool of OpenAI-compatible servers (servers=[URL, ...]: at most
per_server requests in flight on each, weaver.eval.remote.RemoteGenerator); scoring always runs here.

Inputs are streamed (weaver.data.synthetic.stream_unlabelled): a first pass checks every row and counts them,
then they are read again a chunk at a time, so a large file is never held in memory (the kept texts the
near-duplicate filter compares against are).

Resumable: one JSON line per finished input is appended (and fsynced) to OUT (kept) or OUT's .rejected.jsonl
sibling; a restarted run skips the inputs those files already hold. The summary (OUT's .summary.json) is
recomputed from both files. It generates with a model, so it lives in tuning/, above generate/.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from weaver.config import DataConfig
from weaver.data.chat import render_messages
from weaver.data.records import Record
from weaver.data.synthetic import SYNTHETIC, stream_unlabelled
from weaver.data.tasks import get_task, render_prompt
from weaver.errors import ConfigError
from weaver.tuning import synth_filters as F
from weaver.tuning.synth_files import SynthFiles
from weaver.tuning.synth_filters import SynthSettings

log = logging.getLogger(__name__)

WHAT_INPUT = {
    "summarize": "the conversation or article that this summary summarizes",
    "headline": "the news article this headline was written for",
    "adcopy": "the product attributes (a short 'name: value; name: value' list) this ad was written from",
    "support_reply": "the customer message this reply answers",
    "translate": "the text in the source language that this is a translation of",
    "continue": "the opening passage that this text continues",
}
WHAT_INPUT_ZH = {
    "summarize": "这段摘要所概括的对话或文章", "headline": "这个标题所对应的新闻文章",
    "adcopy": "这条广告所依据的商品属性（“名称：取值；名称：取值”形式的简短列表）",
    "support_reply": "这条回复所回答的客户消息", "translate": "这段译文的源语言原文",
    "continue": "这段文字所接续的开头",
}
INVERT = "Here is a text:\n\n{output}\n\nWrite {what}. Write only that, nothing before or after it."
INVERT_ZH = "下面是一段文字：\n\n{output}\n\n请写出{what}。只写这一内容，前后不要加任何说明。"


def invert_prompt(tokenizer, record: Record, data_cfg: DataConfig) -> str:
    """The prompt asking the model for the input that record.output was written from."""
    if data_cfg.lang == "zh":
        what = WHAT_INPUT_ZH.get(data_cfg.task, "这段文字所回应的请求或输入")
        text = INVERT_ZH.format(output=record.output, what=what)
    else:
        what = WHAT_INPUT.get(data_cfg.task, "the request or input that this text answers")
        text = INVERT.format(output=record.output, what=what)
    return render_messages(tokenizer, [{"role": "user", "content": text}])


def _params(s: SynthSettings, data_cfg: DataConfig, max_new_tokens: int):
    from weaver.generate.sampling import SamplingParams

    stop = list(get_task(data_cfg.task).stop) if s.mode == "selftrain" else []
    return SamplingParams(max_new_tokens=max_new_tokens, temperature=s.temperature, top_p=s.top_p, n=s.k,
                          stop=stop, seed=s.seed)


def selftrain_chunk(records: list[Record], generator, scorer, data_cfg: DataConfig, s: SynthSettings) -> list[dict]:
    """Candidates for unlabelled inputs: {record (output = the medoid sample), text, scores} per input."""
    tok = generator.tok
    prompts = [render_prompt(tok, r, data_cfg) for r in records]
    budget = s.max_new_tokens or get_task(data_cfg.task).max_new_tokens
    outs = generator.generate(prompts, _params(s, data_cfg, budget))
    picks = [F.agreement([c.text for c in out], data_cfg.lang) for out in outs]
    texts = [[c.text for c in out][best] for out, (_, best) in zip(outs, picks)]
    logprobs = scorer(prompts, texts)
    rows = []
    for r, text, (agree, best), lp, out in zip(records, texts, picks, logprobs, outs):
        rec = Record(f"{r.id}+synth", r.instruction, r.input, text, r.system, meta=dict(r.meta), source=r.source)
        rows.append({"record": rec, "text": text, "scores": {"logprob": lp, "agreement": agree, "k": len(out),
                                                             "truncated": out[best].finish_reason == "length"}})
    return rows


def backtranslate_chunk(records: list[Record], generator, scorer, data_cfg: DataConfig,
                        s: SynthSettings) -> list[dict]:
    """Candidates for outputs without inputs: {record (input = the best generated one), text, scores}, the
    best being the input under which the original output has the highest mean token log-probability."""
    tok = generator.tok
    budget = s.max_new_tokens or 256
    outs = generator.generate([invert_prompt(tok, r, data_cfg) for r in records], _params(s, data_cfg, budget))
    flat = [(i, c.text) for i, out in enumerate(outs) for c in out]
    cands = [Record(f"{records[i].id}+synth", "", text, records[i].output, records[i].system,
                    meta=dict(records[i].meta), source=records[i].source) for i, text in flat]
    lps = scorer([render_prompt(tok, c, data_cfg) for c in cands], [c.output for c in cands])
    rows = []
    for i, r in enumerate(records):
        mine = [j for j, (owner, _) in enumerate(flat) if owner == i]
        copy = {j: round(F.rouge_l(flat[j][1], r.output, data_cfg.lang), 4) if flat[j][1] else 0.0 for j in mine}
        fresh = [j for j in mine if copy[j] <= s.max_copy] or mine  # a copy of the output is no input
        best = max(fresh, key=lambda j: lps[j])
        agree, _ = F.agreement([flat[j][1] for j in mine], data_cfg.lang)
        rows.append({"record": cands[best], "text": flat[best][1],
                     "scores": {"logprob": lps[best], "agreement": agree, "k": len(mine), "copy": copy[best]}})
    return rows


def make_scorer(model, tok, data_cfg: DataConfig, batch_size: int = 8):
    """scorer(prompts, texts) -> mean token log-probability (nats) of each text after its prompt."""
    from weaver.eval.runner import reference_nll

    def score(prompts: list[str], texts: list[str]) -> list[float]:
        sums, counts = reference_nll(model, tok, prompts, texts, data_cfg.max_seq_len, batch_size)
        return [round(-s / c, 4) if c else float("-inf") for s, c in zip(sums, counts)]

    return score


def synthesize(model_spec: str, inputs: str | Path, out: str | Path, data_cfg: DataConfig, s: SynthSettings, *,
               backend: str = "auto", batch_size: int = 8, limit: int | None = None, safety: str | None = None,
               calibrate: str | None = None, servers: list[str] | None = None, server_model: str | None = None,
               per_server: int = 1, generator=None, scorer_model=None, progress=None) -> dict:
    """Run synthesis over a file, resumably; returns the summary (also written next to OUT).

    Args:
        model_spec: model or tuned run that writes (and scores) the text.
        inputs: unlabelled inputs (selftrain) or outputs without inputs (backtranslate).
        out: the kept records (JSON Lines); rejected ones go to OUT's .rejected.jsonl sibling.
        data_cfg: task, language, columns, on_error (how prompts are rendered and rows read).
        s: mode, K, sampling and the filters' thresholds.
        backend: decoding backend for generation (auto: llama.cpp on a CPU when it can run the model).
        limit: use only the first N rows of inputs.
        safety: safety policy file (default: the packaged one).
        calibrate: labelled records; min_logprob (when not set) becomes the 10th percentile of the model's mean
            token log-prob of their reference outputs.
        servers, server_model, per_server: generate on these OpenAI-compatible servers (a pool serving
            server_model, per_server requests in flight on each) instead of locally; model_spec, loaded here on
            transformers, still renders the prompts and scores the log-prob filter, so it must be the model the
            servers serve.
        generator, scorer_model: a Generator and a (model, tokenizer) to use instead of loading model_spec (tests).
        progress: called with (finished inputs, total inputs, kept) after each chunk (default: a stderr line).
    Raises:
        ConfigError: bad settings, or OUT holds a run made with other settings. DataError: malformed rows.
    """
    from weaver.safety import load_policy

    total, records = stream_unlabelled(inputs, "input" if s.mode == "selftrain" else "output",
                                       data_cfg.columns or None, data_cfg.on_error, limit)
    if servers and not server_model:
        raise ConfigError("--server needs --server-model: the model id the servers serve (see GET /v1/models)")
    files = SynthFiles(out)
    if generator is None and servers:
        from weaver.eval.remote import RemoteGenerator
        from weaver.models.loading import load_model

        scorer_model = scorer_model or load_model(model_spec, merge=True)
        generator = RemoteGenerator(servers, server_model, scorer_model[1], per_server=per_server)
    if generator is None:
        from weaver.generate.engine import load_generator

        generator, _, loaded = load_generator(model_spec, backend=backend, batch_size=batch_size)
        scorer_model = (loaded, generator.tok) if loaded is not None else None
    if scorer_model is None:  # llama.cpp returns no log-probs: score on the transformers model
        from weaver.models.loading import load_model

        scorer_model = load_model(model_spec, merge=True)
    scorer = make_scorer(*scorer_model, data_cfg, batch_size)
    s = _calibrated(s, calibrate, scorer, scorer_model[1], data_cfg)
    settings = {"model": str(model_spec), "inputs": str(inputs), "task": data_cfg.task, "lang": data_cfg.lang,
                **s.to_dict()}
    files.start(settings)
    done, kept_texts = files.finished("output" if s.mode == "selftrain" else "input")
    policy = load_policy(safety, audit_log="off")
    chunk_fn = selftrain_chunk if s.mode == "selftrain" else backtranslate_chunk
    report = progress or _stderr_progress
    finished, kept = 0, len(kept_texts)  # one text per kept row
    step = max(max(1, batch_size // s.k) * 2, -(-getattr(generator, "workers", 1) // s.k))  # a pool kept busy
    for chunk, skipped in _todo_chunks(records, done, step):
        finished += skipped
        if not chunk:
            break
        rows = chunk_fn(chunk, generator, scorer, data_cfg, s)
        kept_rows, rejected_rows = [], []
        for row, src in zip(rows, chunk):
            reason = F.first_failure(row["text"], row["scores"], s, data_cfg.lang, policy, kept_texts)
            if reason is None:
                kept_texts.append(row["text"])
                kept_rows.append(_kept(row, src, s, model_spec))
            else:
                rejected_rows.append({"id": src.id, "source": src.source, "rejected": reason, "text": row["text"],
                                      "scores": row["scores"]})
        files.append(kept_rows, rejected_rows)
        finished, kept = finished + len(chunk), kept + len(kept_rows)
        report(finished, total, kept)
    if servers and hasattr(generator, "close"):
        generator.close()
    return files.write_summary(settings, total)


def _todo_chunks(records, done: set[str], step: int):
    """(up to `step` records not yet done, how many done ones were passed over before them), read lazily; a
    last (empty chunk, skipped) when the inputs end on done records."""
    chunk, skipped = [], 0
    for r in records:
        if r.id in done:
            skipped += 1
            continue
        chunk.append(r)
        if len(chunk) == step:
            yield chunk, skipped
            chunk, skipped = [], 0
    if chunk or skipped:
        yield chunk, skipped


def _kept(row: dict, src: Record, s: SynthSettings, model_spec: str) -> dict:
    rec: Record = row["record"]
    meta = {**rec.meta, SYNTHETIC: {"mode": s.mode, "model": str(model_spec), "source_id": src.id,
                                    "source": src.source, "scores": row["scores"]}}
    out = {"id": rec.id, "instruction": rec.instruction, "input": rec.input, "output": rec.output, "meta": meta}
    if rec.system:
        out["system"] = rec.system
    return out


def _calibrated(s: SynthSettings, calibrate: str | None, scorer, tok, data_cfg: DataConfig) -> SynthSettings:
    """s with min_logprob measured on labelled records when asked (and not set by hand)."""
    if not calibrate:
        return s
    if s.min_logprob_set:
        raise ConfigError("--calibrate measures --min-logprob: give one or the other")
    import numpy as np

    from weaver.data.readers import read_records

    labelled = read_records(calibrate, data_cfg.columns or None, data_cfg.on_error)
    lps = scorer([render_prompt(tok, r, data_cfg) for r in labelled], [r.output for r in labelled])
    threshold = round(float(np.percentile(lps, 10)), 4)
    log.info("--calibrate %s: min_logprob = %.3f (10th percentile of %d references)", calibrate, threshold,
             len(labelled))
    return s.with_min_logprob(threshold, f"10th percentile of {len(labelled)} labelled references in {calibrate}")


def _stderr_progress(finished: int, total: int, kept: int) -> None:
    print(f"synth: {finished}/{total} inputs done, {kept} kept", file=sys.stderr, flush=True)


def summary_text(summary: dict) -> str:
    """The summary as the CLI prints it: how many each filter removed, and the scores' spread."""
    lines = [f"{summary['finished']}/{summary['inputs']} inputs done: kept {summary['kept']}, "
             f"rejected {summary['rejected']} ({summary['settings']['mode']}, K={summary['settings']['k']})"]
    for name, row in summary["filters"].items():
        lines.append(f"  {name:<12} {row['threshold']:<28} checked {row['checked']:>5}  removed {row['removed']:>5}")
    for name, q in summary["scores"].items():
        lines.append(f"  {name:<12} p10 {q['p10']:.3f}  p50 {q['p50']:.3f}  p90 {q['p90']:.3f}")
    return "\n".join(lines)
