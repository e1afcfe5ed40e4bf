"""weaver.eval.explain.sentence_spans / explain_spans: the API's `explanation` with exact character offsets."""

from __future__ import annotations

import pytest

from weaver.eval import explain as ex

SOURCE = ("  Heavy rain flooded the centre of Leeds on Friday. Schools closed early and 300 homes lost power.\n\n"
          "The council said repairs would take a week.  ")


@pytest.mark.parametrize(("text", "lang"), [
    (SOURCE, "en"),
    ("Dr. Smith came at 3.5 p.m.  He left!\r\nThen (quietly) the U.S. team won.", "en"),
    ("  今天下雨了。他说：“我不去！”你呢？\n\n最后一行  ", "zh"),
])
def test_sentence_spans_slice_the_text_into_its_sentences(text, lang):
    spans = ex.sentence_spans(text, lang)
    assert [text[a:b] for a, b in spans] == ex.split_sentences(text, lang)
    assert all(a < b for a, b in spans) and all(b1 <= a2 for (_, b1), (a2, _) in zip(spans, spans[1:]))


def test_sentence_spans_find_a_repeated_sentence_at_each_place():
    text = "It rained. It rained. It rained."
    assert ex.sentence_spans(text, "en") == [(0, 10), (11, 21), (22, 32)]


def test_explain_spans_marks_support_sources_and_invented_entities():
    out = "Floods hit Leeds on Friday and schools closed early. The mayor won 45 awards in Paris."
    items = ex.explain_spans(out, {"input": SOURCE}, lang="en", use_embeddings=False)
    assert [i["sentence"] for i in items] == ex.split_sentences(out, "en")
    first, second = items
    assert first["supported"] and not second["supported"] and first["score"] > second["score"]
    assert first["score"] >= ex.THRESHOLDS[("en", False)] > second["score"]
    assert first["sources"][0]["sentence"].startswith(("Heavy rain", "Schools closed"))
    assert set(second["unsupported_entities"]) == {"45", "Paris"} and first["unsupported_entities"] == []
    for item in items:
        assert out[item["start"] : item["end"]] == item["sentence"]
        assert len(item["sources"]) == 2 and item["sources"][0]["score"] >= item["sources"][1]["score"]
        for src in item["sources"]:
            assert src["field"] == "input" and SOURCE[src["start"] : src["end"]] == src["sentence"]
            assert ex.split_sentences(SOURCE, "en")[src["index"]] == src["sentence"]


def test_explain_spans_over_several_documents_names_each_source_and_ignores_citations():
    docs = {"faq-1": "Open Settings. Choose Reset password.", "faq-2": "Refunds take 5 days. Call us at 555-0100."}
    out = "Choose Reset password in Settings [faq-1]. Refunds take 5 days [faq-2].\n[faq-1]"
    items = ex.explain_spans(out, docs, lang="en", key="passage", ignore=r"\[[\w.-]+\]", use_embeddings=False)
    assert len(items) == 2  # the bare citation on its own line is no claim
    assert [i["sources"][0]["passage"] for i in items] == ["faq-1", "faq-2"] and all(i["supported"] for i in items)
    assert items[1]["sources"][0]["index"] == 2  # positions run over the documents in order
    for item in items:
        assert out[item["start"] : item["end"]] == item["sentence"] and item["unsupported_entities"] == []
        for src in item["sources"]:
            assert docs[src["passage"]][src["start"] : src["end"]] == src["sentence"]
    # without `ignore`, a citation's id counts against its sentence as an invented number
    raw = ex.explain_spans(out, docs, lang="en", key="passage", use_embeddings=False)
    assert len(raw) == 3 and raw[0]["unsupported_entities"] == ["1"] and raw[0]["score"] < items[0]["score"]


def test_explain_spans_chinese_and_empty_cases():
    src = "上海今天宣布新的交通计划。地铁票价下调10%！市民表示欢迎。"
    out = "上海宣布交通计划。票价下调20%。"
    items = ex.explain_spans(out, {"input": src}, use_embeddings=False)  # zh detected
    assert [i["sentence"] for i in items] == ["上海宣布交通计划。", "票价下调20%。"]
    assert items[0]["sources"][0]["sentence"] == "上海今天宣布新的交通计划。" and items[0]["supported"]
    assert items[1]["unsupported_entities"] == ["20%"]
    for item in items:
        assert out[item["start"] : item["end"]] == item["sentence"]
        assert all(src[s["start"] : s["end"]] == s["sentence"] for s in item["sources"])
    assert ex.explain_spans("", {"input": src}) == []
    nothing = ex.explain_spans("Something happened.", {"input": ""}, lang="en", use_embeddings=False)
    assert nothing[0]["supported"] is False and nothing[0]["sources"] == []
