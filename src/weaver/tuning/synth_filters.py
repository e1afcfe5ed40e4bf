"""The settings and filters of `weaver data synth` (weaver.tuning.synth): each one a measured score and a bound.

    s = SynthSettings(mode="selftrain", k=4)          # thresholds default per mode; every one validated
    score, best = agreement(["a b c", "a b d", "x"], "en")   # mean pairwise ROUGE-L F1 (0-1), the medoid's index
    first_failure(text, scores, s, "en", policy, kept)       # None (keep) or the first filter it fails

Filters, in the order they are applied (the summary counts how many each removed):
  empty      the candidate shows nothing;
  truncated  selftrain: the sample stopped at max_new_tokens, not at its end (training on it teaches cut-off text);
  length     fewer than min_words or more than max_words words (characters for Chinese);
  repetition over max_repeat % of its word 3-grams already occurred earlier in it (a decoding loop);
  safety     the safety policy blocks it or finds PII to redact in it (weaver.safety);
  copy       backtranslate: ROUGE-L F1 of the generated input with the output is above max_copy (an input that
             repeats its output makes that output likely without saying what it was written from);
  agreement  the K samples' mean pairwise ROUGE-L F1 is below min_agreement (the model is unsure);
  logprob    its mean token log-probability (nats, teacher-forced) is below min_logprob;
  duplicate  ROUGE-L F1 of at least `dedup` with a text already kept (near-duplicate).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from weaver.errors import ConfigError
from weaver.eval import metrics as M

MODES = ("selftrain", "backtranslate")
FILTERS = ("empty", "truncated", "length", "repetition", "safety", "copy", "agreement", "logprob", "duplicate")
DEFAULT_MIN_LOGPROB = {"selftrain": -2.0, "backtranslate": -3.0}
"""Defaults of min_logprob: a model's own samples are far likelier under it than a human's text given a
generated input (measured on SmolLM2-135M, docs/DATA.md); --calibrate measures one on your labelled records."""
DEFAULT_MAX_COPY = {"selftrain": 1.0, "backtranslate": 0.3}
"""Measured on SmolLM2-135M support replies: asked for the customer message, it often restates the reply."""
DEFAULT_MIN_AGREEMENT = {"selftrain": 0.15, "backtranslate": 0.0}
"""Back-translated inputs legitimately differ (many inputs fit one output): off by default there."""


@dataclass
class SynthSettings:
    """Mode, sampling and filter thresholds of one synthesis run (None: the mode's default)."""

    mode: str = "selftrain"
    """selftrain (write outputs for inputs) | backtranslate (write inputs for outputs)."""
    k: int = 4
    """Samples per input (2 to 16): their agreement is measured and the best one is kept."""
    temperature: float = 0.8
    """Sampling temperature of the K samples (> 0: K greedy samples would agree trivially)."""
    top_p: float = 0.95
    """Nucleus sampling mass."""
    max_new_tokens: int | None = None
    """Tokens per sample (default: the task's for selftrain, 256 for backtranslate)."""
    min_logprob: float | None = None
    """Keep a candidate only when its mean token log-probability (nats) is at least this."""
    min_agreement: float | None = None
    """Keep only when the K samples' mean pairwise ROUGE-L F1 (0-1) is at least this."""
    min_words: int = 3
    """Fewest words (characters for Chinese) a candidate may have."""
    max_words: int = 400
    """Most words (characters for Chinese) a candidate may have."""
    max_repeat: float = 30.0
    """Highest share (%) of repeated word 3-grams."""
    max_copy: float | None = None
    """Highest ROUGE-L F1 (0-1) between a generated input and its output (backtranslate; 1 disables)."""
    dedup: float = 0.9
    """A candidate with ROUGE-L F1 of at least this to an already kept text is a near-duplicate (1 disables)."""
    keep_truncated: bool = False
    """Keep selftrain samples that stopped at max_new_tokens (off: they are rejected as truncated)."""
    seed: int = 0
    """Sampling seed."""
    logprob_from: str = ""
    """Where min_logprob came from: "set", "default" or the --calibrate measurement."""

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"--mode {self.mode!r} is not one of {', '.join(MODES)}")
        if not 2 <= self.k <= 16:
            raise ConfigError(f"--k must be from 2 to 16 (the samples' agreement needs two), got {self.k}")
        if not 0 < self.temperature <= 2:
            raise ConfigError(f"--temperature must be above 0 and at most 2, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"--top-p must be above 0 and at most 1, got {self.top_p}")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ConfigError(f"--max-new-tokens must be at least 1, got {self.max_new_tokens}")
        if not 1 <= self.min_words <= self.max_words:
            raise ConfigError(f"need 1 <= --min-words <= --max-words, got {self.min_words} and {self.max_words}")
        for flag, value in (("--max-repeat", self.max_repeat), ("--dedup", self.dedup * 100),
                            ("--min-agreement", (self.min_agreement or 0) * 100),
                            ("--max-copy", (self.max_copy or 0) * 100)):
            if not 0 <= value <= 100:
                raise ConfigError(f"{flag} is out of range (repeat: 0-100 %; dedup, agreement: 0-1), got {value}")
        if self.min_logprob is not None and not self.min_logprob <= 0:
            raise ConfigError(f"--min-logprob is a mean log-probability in nats (<= 0), got {self.min_logprob}")
        if not self.logprob_from:
            self.logprob_from = "default" if self.min_logprob is None else "set"
        if self.min_logprob is None:
            self.min_logprob = DEFAULT_MIN_LOGPROB[self.mode]
        if self.min_agreement is None:
            self.min_agreement = DEFAULT_MIN_AGREEMENT[self.mode]
        if self.max_copy is None:
            self.max_copy = DEFAULT_MAX_COPY[self.mode]

    @property
    def min_logprob_set(self) -> bool:
        """True when min_logprob was given by hand (so --calibrate would overrule it)."""
        return self.logprob_from == "set"

    def with_min_logprob(self, value: float, why: str) -> SynthSettings:
        """A copy with a measured min_logprob."""
        return dataclasses.replace(self, min_logprob=value, logprob_from=why)

    def to_dict(self) -> dict:
        """The settings written into the summary (a resumed run must use the same ones)."""
        return dataclasses.asdict(self)

    def thresholds(self) -> dict[str, str]:
        """Filter name -> its bound, in words (for the summary)."""
        cut = "off" if self.keep_truncated or self.mode != "selftrain" else "ended before max_new_tokens"
        return {"empty": "shows nothing", "truncated": cut,
                "length": f"{self.min_words}-{self.max_words} words",
                "repetition": f"<= {self.max_repeat:g}% repeated 3-grams", "safety": "policy: no block, no PII",
                "copy": "off" if self.max_copy >= 1 else f"<= {self.max_copy:g} ROUGE-L input/output",
                "agreement": f">= {self.min_agreement:g} ROUGE-L", "logprob": f">= {self.min_logprob:g} nats/token",
                "duplicate": f"< {self.dedup:g} ROUGE-L to kept"}


def rouge_l(a: str, b: str, lang: str) -> float:
    """ROUGE-L F1 (0-1) between two texts (symmetric)."""
    return M.rouge([a], [[b]], lang)[0]["rougeL"] / 100.0


def agreement(texts: list[str], lang: str) -> tuple[float, int]:
    """(mean pairwise ROUGE-L F1 of the texts, the index of the medoid: the text closest to the others)."""
    n = len(texts)
    if n < 2:
        return 1.0, 0
    sim = [[0.0] * n for _ in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            sim[i][j] = sim[j][i] = rouge_l(texts[i], texts[j], lang) if texts[i] and texts[j] else 0.0
    means = [sum(row) / (n - 1) for row in sim]
    return round(sum(means) / n, 4), max(range(n), key=lambda i: (means[i], -i))


def is_near_duplicate(text: str, kept: list[str], lang: str, threshold: float) -> bool:
    """True when text has ROUGE-L F1 >= threshold with a kept text (word-overlap prefilter, then ROUGE-L)."""
    if threshold >= 1:
        return False
    words = set(M.tokens(text, lang))
    for other in kept:
        theirs = set(M.tokens(other, lang))
        if words and theirs and len(words & theirs) / len(words | theirs) >= threshold / 2 and \
                rouge_l(text, other, lang) >= threshold:
            return True
    return False


def first_failure(text: str, scores: dict, s: SynthSettings, lang: str, policy, kept: list[str]) -> str | None:
    """The first filter (FILTERS order) the candidate fails, or None to keep it; fills scores' words/repeat."""
    from weaver.data.records import is_blank

    words = sum(1 for t in M.tokens(text, lang) if t[0].isalnum())  # punctuation is no word
    scores["words"] = words
    scores["repeat"] = round(M.repeated_ngram_rate([text], 3, lang)[0], 2)
    if is_blank(text):
        return "empty"
    if scores.get("truncated") and not s.keep_truncated:
        return "truncated"
    if not s.min_words <= words <= s.max_words:
        return "length"
    if scores["repeat"] > s.max_repeat:
        return "repetition"
    decision = policy.check_output(text, app="synth")
    if decision.action != "allow":
        return "safety"
    if scores.get("copy", 0.0) > s.max_copy:
        return "copy"
    if scores["agreement"] < s.min_agreement:
        return "agreement"
    if scores["logprob"] < s.min_logprob:
        return "logprob"
    if is_near_duplicate(text, kept, lang, s.dedup):
        return "duplicate"
    return None
