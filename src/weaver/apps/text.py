"""Small text utilities shared by the apps: near-duplicate removal and keyword coverage.

    dedup(["Big sale today!", "Big sale today!!", "New shoes"])   # ["Big sale today!", "New shoes"]
    jaccard("abc def", "abc deg")                                   # character 3-gram Jaccard, 0..1

Near-duplicates are found with character 3-gram Jaccard similarity on a normalised form (NFKC, lower
case, punctuation and spaces removed), which works the same for English and Chinese.
"""

from __future__ import annotations

import re
import unicodedata

NEAR_DUP = 0.6
"""Two texts whose character 3-gram Jaccard similarity is at least this are near-duplicates."""
_DROP = re.compile(r"[\W_]+", re.UNICODE)


def normalize(text: str) -> str:
    """NFKC, lower case, without punctuation or spaces (the form compared for duplicates)."""
    return _DROP.sub("", unicodedata.normalize("NFKC", text).lower())


def char_ngrams(text: str, n: int = 3) -> set[str]:
    """The set of character n-grams of the normalised text (the whole text when shorter than n)."""
    t = normalize(text)
    return {t[i : i + n] for i in range(len(t) - n + 1)} if len(t) >= n else ({t} if t else set())


def jaccard(a: str, b: str, n: int = 3) -> float:
    """Character n-gram Jaccard similarity of two texts (1.0 for two empty texts)."""
    x, y = char_ngrams(a, n), char_ngrams(b, n)
    return len(x & y) / len(x | y) if x | y else 1.0


def dedup(texts: list[str], threshold: float = NEAR_DUP, keep: list[str] | None = None) -> list[str]:
    """Texts in order, dropping empty ones and any near-duplicate of an earlier one (or of `keep`).

    Args:
        texts: candidates, best first (the first of a near-duplicate group survives).
        threshold: Jaccard similarity at or above which two texts count as the same.
        keep: texts already chosen elsewhere that candidates must also differ from.
    Returns:
        The surviving texts.
    """
    chosen: list[str] = []
    for text in texts:
        if not normalize(text):
            continue
        if all(jaccard(text, other) < threshold for other in (keep or []) + chosen):
            chosen.append(text)
    return chosen


def keyword_coverage(text: str, keywords: list[str]) -> float:
    """Share of keywords (0..1) that occur in text, compared in normalised form; 1.0 when there are none."""
    if not keywords:
        return 1.0
    t = normalize(text)
    return sum(1 for k in keywords if normalize(k) and normalize(k) in t) / len(keywords)
