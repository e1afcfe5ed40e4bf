"""Ad copy: N distinct candidates, near-duplicates removed, ranking follows the documented score."""

from __future__ import annotations

import pytest

from weaver.apps import adcopy
from weaver.apps.adcopy import AdRequest, build_record, generate_adcopy, parse_attributes, score_candidates
from weaver.apps.source import LocalSource
from weaver.apps.text import jaccard
from weaver.errors import WeaverError
from weaver.safety import load_policy


class ScriptedBackend:
    """Returns scripted candidates round by round; log-likelihoods by a fixed table."""

    supports_loglik = True

    def __init__(self, rounds, logliks):
        self.rounds, self.logliks, self.calls = list(rounds), logliks, 0

    def generate(self, records, task, params):
        self.calls += 1
        assert task == "adcopy" and params.temperature > 0
        return [self.rounds.pop(0)]

    def loglik(self, record, task, texts):
        return [self.logliks[t] for t in texts]


def test_attributes_are_parsed_into_readable_keywords():
    assert parse_attributes("类型#上衣*颜色#白色*风格#简约") == [("类型", "上衣"), ("颜色", "白色"), ("风格", "简约")]
    record = build_record(AdRequest(attributes="类型#上衣*颜色#白色", lang="zh", keywords=["显瘦"]))
    assert record.input == "类型: 上衣\n颜色: 白色\n关键词: 显瘦"
    with pytest.raises(WeaverError, match="key#value"):
        parse_attributes("类型上衣")
    with pytest.raises(WeaverError, match="--product"):
        build_record(AdRequest())


def test_near_duplicates_removed_and_ranked_by_documented_score():
    a = "Grip the trail with our lightweight running shoes, built for muddy weekend miles and happy feet."
    a_dup = "Grip the trail with our lightweight running shoes, built for muddy weekend miles and happy feet!"
    b = "Weekend runners: lightweight shoes that love mud as much as you do. Lace up and go."
    c = "Shoes."
    d = "Run further on Saturday with cushioning that keeps up with every hill, root and puddle you meet."
    backend = ScriptedBackend([[a, a_dup, c], [b, a, d]], {a: -2.0, b: -1.0, c: -0.5, d: -1.5})
    req = AdRequest(product="trail running shoes", audience="weekend runners", tone="playful",
                    keywords=["grip", "lightweight"])
    cands = generate_adcopy(backend, req, n=4, policy=load_policy(audit_log="off"))
    texts = [x.text for x in cands]
    assert sorted(texts) == sorted([a, c, b, d]) and backend.calls == 2
    assert all(jaccard(x, y) < 0.6 for i, x in enumerate(texts) for y in texts[i + 1:])
    for cand in cands:  # the score is exactly the documented formula
        expected = (adcopy.W_LIKELIHOOD * cand.likelihood + adcopy.W_KEYWORDS * cand.keyword_coverage
                    + adcopy.W_LENGTH * cand.length_fit)
        assert cand.score == pytest.approx(expected)
    assert [x.score for x in cands] == sorted((x.score for x in cands), reverse=True)
    assert texts[0] == a  # both keywords, good length, decent likelihood
    assert cands[-1].text == c  # too short, no keyword


def test_blocklisted_candidates_are_dropped_and_pii_redacted():
    backend = ScriptedBackend([["Buy now, call 415-555-0134 today for a deal on shoes!", "fuck you and your shoes"]]
                              + [[]] * 3, {})
    backend.supports_loglik = False
    cands = generate_adcopy(backend, AdRequest(product="shoes"), n=2, policy=load_policy(audit_log="off"))
    assert [c.text for c in cands] == ["Buy now, call [PHONE] today for a deal on shoes!"]
    assert cands[0].likelihood == 0.0


def test_tiny_model_gives_n_distinct_ranked_candidates(tiny_model_dir):
    backend = LocalSource(str(tiny_model_dir), backend="transformers")
    cands = generate_adcopy(backend, AdRequest(product="a white cotton shirt", tone="warm", keywords=["cotton"]),
                            n=3, policy=load_policy(audit_log="off"), max_new_tokens=12)
    assert len(cands) == 3 and len({c.text for c in cands}) == 3
    assert all(0 < c.likelihood <= 1 for c in cands)
    assert [c.score for c in cands] == sorted((c.score for c in cands), reverse=True)


def test_score_candidates_without_likelihood():
    ranked = score_candidates(["a cotton shirt for warm days, soft and easy to wear all week long", "x"], None,
                              ["cotton"])
    assert ranked[0].keyword_coverage == 1.0 and ranked[1].keyword_coverage == 0.0
