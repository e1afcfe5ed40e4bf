"""Paired bootstrap confidence intervals for "tuned minus base" on the same examples.

    ci = paired_bootstrap(base_scores, tuned_scores, n_resamples=1000, seed=0)
    ci.delta, ci.low, ci.high, ci.significant

Each resample draws example indices with replacement and scores BOTH systems on the same draw
(Koehn 2004), so per-example difficulty cancels out. `aggregate` turns the rows of a resample into
a score: the mean for per-example metrics, or e.g. corpus BLEU from summed sufficient statistics.
The interval is the percentile interval of the resampled differences.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class DeltaCI:
    """A base-vs-tuned comparison of one metric."""

    base: float
    tuned: float
    delta: float
    low: float
    high: float
    p_value: float
    """Share of resamples in which the difference is <= 0 (one-sided; for tuned > base)."""

    @property
    def significant(self) -> bool:
        """True when the confidence interval excludes zero."""
        return self.low > 0 or self.high < 0

    def to_dict(self) -> dict:
        return {**asdict(self), "significant": self.significant}


def _mean(rows: np.ndarray) -> float:
    return float(rows.mean())


def paired_bootstrap(
    base: Sequence,
    tuned: Sequence,
    aggregate: Callable[[np.ndarray], float] = _mean,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> DeltaCI:
    """Paired bootstrap confidence interval of aggregate(tuned) - aggregate(base).

    Args:
        base: per-example scores (or rows of statistics) of the base model.
        tuned: the same for the tuned model, in the same example order.
        aggregate: maps a resampled array (rows = examples) to one score; default the mean.
        n_resamples: number of bootstrap resamples.
        seed: RNG seed (results are reproducible).
        confidence: two-sided confidence level.
    Returns:
        DeltaCI with the full-sample scores, their difference and the interval.
    Raises:
        ValueError: when the inputs are empty or of different lengths.
    """
    b, t = np.asarray(base, dtype=float), np.asarray(tuned, dtype=float)
    if len(b) != len(t) or len(b) == 0:
        raise ValueError(f"paired bootstrap needs equal, non-empty samples; got {len(b)} and {len(t)}")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(b), size=(n_resamples, len(b)))
    diffs = np.array([aggregate(t[i]) - aggregate(b[i]) for i in idx])
    alpha = (1.0 - confidence) / 2
    low, high = np.quantile(diffs, [alpha, 1 - alpha])
    base_score, tuned_score = aggregate(b), aggregate(t)
    return DeltaCI(
        base=base_score,
        tuned=tuned_score,
        delta=tuned_score - base_score,
        low=float(low),
        high=float(high),
        p_value=float((diffs <= 0).mean()),
    )


def bootstrap_interval(
    scores: Sequence,
    aggregate: Callable[[np.ndarray], float] = _mean,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float, float]:
    """(score, low, high): a percentile bootstrap interval for one system (used when there is no base)."""
    s = np.asarray(scores, dtype=float)
    if len(s) == 0:
        raise ValueError("bootstrap needs a non-empty sample")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(s), size=(n_resamples, len(s)))
    vals = np.array([aggregate(s[i]) for i in idx])
    alpha = (1.0 - confidence) / 2
    low, high = np.quantile(vals, [alpha, 1 - alpha])
    return aggregate(s), float(low), float(high)
