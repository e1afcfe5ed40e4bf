"""The paired bootstrap on synthetic cases whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from weaver.eval.metrics import bleu_stats, corpus_bleu
from weaver.eval.stats import bootstrap_interval, paired_bootstrap


def test_constant_gain_has_a_degenerate_interval():
    base = np.random.default_rng(1).normal(30, 10, size=50)
    ci = paired_bootstrap(base, base + 1.0, n_resamples=200)
    assert ci.delta == pytest.approx(1.0)
    assert ci.low == pytest.approx(1.0) and ci.high == pytest.approx(1.0)
    assert ci.significant and ci.p_value == 0.0


def test_interval_matches_the_normal_approximation():
    rng = np.random.default_rng(2)
    base = rng.normal(20, 8, size=400)
    diff = rng.normal(0.5, 1.0, size=400)
    ci = paired_bootstrap(base, base + diff, n_resamples=2000, seed=3)
    half = 1.96 * diff.std(ddof=1) / np.sqrt(len(diff))
    assert ci.delta == pytest.approx(diff.mean())
    assert ci.low == pytest.approx(diff.mean() - half, abs=0.02)
    assert ci.high == pytest.approx(diff.mean() + half, abs=0.02)
    assert ci.significant  # mean 0.5, half-width ~0.1


def test_no_difference_is_not_significant():
    base = np.random.default_rng(4).normal(20, 8, size=200)
    tuned = base + np.tile([1.0, -1.0], 100)  # paired differences average exactly zero
    ci = paired_bootstrap(base, tuned)
    assert ci.delta == pytest.approx(0.0)
    assert ci.low < 0 < ci.high and not ci.significant


def test_pairing_matters():
    # large per-example variance, small consistent gain: paired -> significant
    base = np.random.default_rng(5).normal(50, 30, size=60)
    assert paired_bootstrap(base, base + 0.3).significant


def test_seeded_and_reproducible():
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=30), rng.normal(size=30)
    assert paired_bootstrap(a, b, seed=9) == paired_bootstrap(a, b, seed=9)
    assert paired_bootstrap(a, b, seed=9).low != paired_bootstrap(a, b, seed=10).low


def test_corpus_metric_aggregate():
    refs = [["the cat sat on the mat"], ["a dog barked at night"], ["it rained all day long"]]
    base = bleu_stats(["a cat", "dog", "sun"], refs)
    tuned = bleu_stats(["the cat sat on the mat", "a dog barked at night", "it rained all day long"], refs)
    ci = paired_bootstrap(base, tuned, aggregate=corpus_bleu, n_resamples=100)
    assert ci.tuned == pytest.approx(100.0)
    assert ci.base == pytest.approx(corpus_bleu(base))
    assert ci.low > 0


def test_single_system_interval_and_bad_input():
    score, low, high = bootstrap_interval([1.0, 2.0, 3.0, 4.0], n_resamples=500)
    assert score == 2.5 and 1.0 <= low < 2.5 < high <= 4.0
    with pytest.raises(ValueError):
        paired_bootstrap([1.0], [1.0, 2.0])
