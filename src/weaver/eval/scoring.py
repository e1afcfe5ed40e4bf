"""Per-example scores of each system and their base-vs-tuned comparison (the numbers in the report).

    scores = score_outputs({"outputs": [...], "nll": [...], "tokens": [...]}, refs_list, "en", cfg.eval)
    table = compare({"base": {..., "scores": s0}, "tuned": {..., "scores": s1}}, "en", 1000)

`METRICS` lists every metric with how its per-example values aggregate (mean, or corpus-level from
summed statistics for BLEU, chrF and perplexity) and which direction is better.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from weaver.eval import metrics as M
from weaver.eval.stats import bootstrap_interval, paired_bootstrap


@dataclass(frozen=True)
class Metric:
    """How one metric is named, aggregated and read."""

    name: str
    label: str
    better: str | None  # "higher" | "lower" | None (neither: e.g. length ratio, closer to 1 is better)
    aggregate: str = "mean"  # mean | bleu | chrf | perplexity


METRICS = [
    Metric("rouge1", "ROUGE-1", "higher"),
    Metric("rouge2", "ROUGE-2", "higher"),
    Metric("rougeL", "ROUGE-L", "higher"),
    Metric("rougeLsum", "ROUGE-Lsum", "higher"),
    Metric("rouge1_word", "ROUGE-1 (jieba words)", "higher"),
    Metric("rouge2_word", "ROUGE-2 (jieba words)", "higher"),
    Metric("rougeL_word", "ROUGE-L (jieba words)", "higher"),
    Metric("rouge1_char", "ROUGE-1 (characters)", "higher"),
    Metric("rouge2_char", "ROUGE-2 (characters)", "higher"),
    Metric("rougeL_char", "ROUGE-L (characters)", "higher"),
    Metric("bleu", "BLEU", "higher", "bleu"),
    Metric("bleu4_sentence", "BLEU-4 (sentence mean, characters)", "higher"),
    Metric("chrf", "chrF", "higher", "chrf"),
    Metric("semantic", "Semantic similarity", "higher"),
    Metric("perplexity", "Reference perplexity", "lower", "perplexity"),
    Metric("length_ratio", "Length ratio (pred/ref)", None),
    Metric("distinct1", "Distinct-1", "higher"),
    Metric("distinct2", "Distinct-2", "higher"),
    Metric("repeat3", "Repeated 3-grams %", "lower"),
    Metric("faithfulness", "Supported sentences % (grounding)", "higher"),
    Metric("invented", "Sentences with invented numbers/names %", "lower"),
]
BY_NAME = {m.name: m for m in METRICS}


def grounding(sources: list[str], outputs: list[str], lang: str) -> tuple[dict[str, list], list[dict]]:
    """Per-example faithfulness (share of output sentences supported by the source, 0-100; an empty output
    supports nothing: 0) and invented share (sentences with a number/name the source lacks, 0-100), plus each
    example's unsupported sentences and invented entities for the report (weaver.eval.explain)."""
    from weaver.eval.explain import explain

    faith, invented, details = [], [], []
    for src, out in zip(sources, outputs):
        ex = explain(src, out, lang=lang)
        faith.append(100.0 * (ex.faithfulness or 0.0))
        invented.append(100.0 * (ex.invented_share or 0.0))
        details.append({"unsupported": [s.text for s in ex.sentences if not s.supported],
                        "invented": sorted({e for s in ex.sentences for e in s.unsupported_entities})})
    return {"faithfulness": faith, "invented": invented}, details


def score_outputs(system: dict[str, Any], refs_list: list[list[str]], lang: str, eval_cfg) -> dict[str, list]:
    """Per-example values (or statistics rows) of every metric for one system's outputs.

    Args:
        system: {"outputs": [...]} plus "nll"/"tokens" when perplexity was computed and "grounding" (the
            result of `grounding`) when faithfulness was measured.
        refs_list: references per example.
        lang: "en" or "zh".
        eval_cfg: EvalConfig (semantic, zh_tokens).
    Returns:
        metric name -> list with one entry per example.
    """
    preds = system["outputs"]
    rouge = M.rouge(preds, refs_list, lang, eval_cfg.zh_tokens)
    out: dict[str, list] = {k: [r[k] for r in rouge] for k in ("rouge1", "rouge2", "rougeL", "rougeLsum")}
    if lang == "zh":  # the Chinese field reports both units: characters and jieba words (LLaMA-Factory's)
        other = "word" if eval_cfg.zh_tokens == "char" else "char"
        second = M.rouge(preds, refs_list, lang, other)
        out.update({f"{k}_{other}": [r[k] for r in second] for k in ("rouge1", "rouge2", "rougeL")})
    out["bleu"] = M.bleu_stats(preds, refs_list, lang)
    if lang == "zh":  # the per-sentence character BLEU-4 that LLaMA-Factory's published numbers use
        out["bleu4_sentence"] = M.bleu4_sentence(preds, refs_list)
    out["chrf"] = M.chrf_stats(preds, refs_list)
    if eval_cfg.semantic and M.embedder_available():
        out["semantic"] = M.semantic_similarity(preds, refs_list)
    if "nll" in system:
        out["perplexity"] = [[n, c] for n, c in zip(system["nll"], system["tokens"])]
    out["length_ratio"] = M.length_ratio(preds, refs_list, lang)
    out["distinct1"] = M.distinct_n(preds, 1, lang)
    out["distinct2"] = M.distinct_n(preds, 2, lang)
    out["repeat3"] = M.repeated_ngram_rate(preds, 3, lang)
    if "grounding" in system:
        out.update(system["grounding"][0])
    return out


def _perplexity(rows: np.ndarray) -> float:
    return M.perplexity(rows[:, 0], rows[:, 1])


def aggregator(metric: Metric, lang: str):
    """The function turning an array of per-example rows into the metric's score."""
    if metric.aggregate == "bleu":
        return partial(M.corpus_bleu, lang=lang)
    if metric.aggregate == "chrf":
        return M.corpus_chrf
    if metric.aggregate == "perplexity":
        return _perplexity
    return lambda rows: float(np.mean(rows))


def verdict(metric: Metric, low: float, high: float) -> str:
    """'better' / 'worse' when the CI excludes zero in a direction that has a meaning, else a neutral word."""
    if low <= 0 <= high:
        return "no significant change"
    up = low > 0
    if metric.better is None:
        return "significantly higher" if up else "significantly lower"
    return "better" if up == (metric.better == "higher") else "worse"


def _clean(x: float) -> float | None:
    return round(float(x), 4) if math.isfinite(x) else None


def compare(systems: dict[str, dict], lang: str, n_resamples: int, seed: int = 0) -> dict[str, dict]:
    """Scores with 95% bootstrap intervals: tuned - base (paired) when both exist, else one system's score.

    Returns:
        metric name -> {label, better, base, tuned, delta, low, high, p_value, significant, verdict}
        (with a single system: {label, better, score, low, high}).
    """
    out: dict[str, dict] = {}
    labels = list(systems)
    for metric in METRICS:
        if not all(metric.name in systems[k]["scores"] for k in labels):
            continue
        agg = aggregator(metric, lang)
        entry: dict[str, Any] = {"label": metric.label, "better": metric.better}
        if len(labels) == 2:
            b, t = (systems[k]["scores"][metric.name] for k in ("base", "tuned"))
            ci = paired_bootstrap(b, t, aggregate=agg, n_resamples=n_resamples, seed=seed)
            entry.update({k: _clean(v) for k, v in ci.to_dict().items() if k != "significant"})
            entry.update(significant=ci.significant, verdict=verdict(metric, ci.low, ci.high))
        else:
            score, low, high = bootstrap_interval(systems[labels[0]]["scores"][metric.name], agg, n_resamples, seed)
            entry.update(score=_clean(score), low=_clean(low), high=_clean(high))
        out[metric.name] = entry
    return out
