"""Grounding: sentence splitting (en, zh), per-sentence support, unsupported sentences, invented entities."""

from __future__ import annotations

import pytest

from weaver.eval import explain as ex


@pytest.mark.parametrize(("text", "sents"), [
    ("Dr. Smith arrived at 3.5 p.m. on Monday. He left early! Did he? Yes.",
     ["Dr. Smith arrived at 3.5 p.m. on Monday.", "He left early!", "Did he?", "Yes."]),
    ('She said "stop." Then the U.S. team won 2-1.\nNew line here', ['She said "stop."', "Then the U.S. team won 2-1.",
                                                                     "New line here"]),
    ("#Person1# asks for help. #Person2# agrees.", ["#Person1# asks for help.", "#Person2# agrees."]),
    ("e.g. this is one sentence. And this, another.", ["e.g. this is one sentence.", "And this, another."]),
])
def test_english_sentences(text, sents):
    assert ex.split_sentences(text, "en") == sents


def test_chinese_sentences():
    text = "今天下雨了。他说：“我不去！”你呢？我去；他也去…\n最后一行"
    assert ex.split_sentences(text) == ["今天下雨了。", "他说：“我不去！”", "你呢？", "我去；", "他也去…", "最后一行"]
    assert ex.detect_lang(text) == "zh" and ex.detect_lang("Rain today in Leeds.") == "en"


SOURCE = ("Heavy rain flooded the centre of Leeds on Friday. Schools closed early and 300 homes lost power. "
          "The council said repairs would take a week.")


@pytest.mark.parametrize("embeddings", [False, True])
def test_supported_and_unsupported_sentences(embeddings):
    if embeddings and not ex._embedder():
        pytest.skip("embedding model not installed")
    out = "Floods hit Leeds on Friday and schools closed early. The mayor won a cooking award in Paris."
    e = ex.explain(SOURCE, out, lang="en", use_embeddings=embeddings)
    first, second = e.sentences
    assert first.supported and not second.supported and first.score > second.score
    assert e.source_sentences[first.sources[0][0]].startswith(("Heavy rain", "Schools closed"))
    assert e.faithfulness == 0.5 and e.used_embeddings is embeddings
    assert "Paris" in second.unsupported_entities and first.unsupported_entities == []
    body = e.to_dict()
    assert body["sentences"][0]["sources"][0]["text"] in e.source_sentences


def test_lexical_support_counts_content_words_only():
    lex, _, _, _ = ex.support_matrix(["The schools were closing."], ["Schools closed early."], "en")
    assert lex[0, 0] == pytest.approx(1.0)  # school, close: stemmed; the, were: stop words
    lex, _, _, _ = ex.support_matrix(["学校停课了"], ["暴雨导致学校停课"], "zh")
    assert lex[0, 0] == pytest.approx(1.0)  # 了 is a function character


def test_invented_numbers_and_names():
    assert ex.missing_entities("Schools closed and 300 homes lost power.", SOURCE, "en") == []
    assert ex.missing_entities("Schools closed and 3,000 homes lost power.", SOURCE, "en") == ["3,000"]
    assert ex.missing_entities("Mayor Jane Hill said 300 homes lost power.", SOURCE, "en") == ["Mayor Jane Hill"]
    assert ex.missing_entities("#Person3# agrees.", "#Person1#: hi #Person2#: hello", "en") == ["#Person3#"]
    zh_src = "阿里小微金融公布股权架构，马云持股不超过7.7%。"
    assert ex.missing_entities("马云持股不超7.7%", zh_src, "zh") == []
    assert ex.missing_entities("马云持股不超8.7%", zh_src, "zh") == ["8.7%"]


def test_empty_output_and_empty_source():
    assert ex.explain(SOURCE, "", lang="en").faithfulness is None
    e = ex.explain("", "Something happened.", lang="en", use_embeddings=False)
    assert e.sentences[0].supported is False and e.faithfulness == 0.0
