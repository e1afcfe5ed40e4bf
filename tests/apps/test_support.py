"""Support: retrieval on a real FAQ (cs_reply_twitter_ibm) with paraphrased questions, hand-over, grounding."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from weaver.apps.retrieval import Index, build_index, chunk_document, tokenize
from weaver.apps.support import answer
from weaver.errors import DataError
from weaver.safety import load_policy

FIXTURES = Path(__file__).parent / "fixtures"
RECALL3_FLOOR = 0.97  # measured 1.00 (36/36) for hybrid, embedding and lexical; allow one miss


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    out = tmp_path_factory.mktemp("kb") / "kb.sqlite"
    build_index(FIXTURES / "support_faq.jsonl", out)
    return Index(out)


def _questions():
    return [json.loads(x) for x in (FIXTURES / "support_questions.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("mode", ["hybrid", "embedding", "lexical"])
def test_paraphrased_questions_retrieve_the_right_passage(index, mode):
    on_topic = [q for q in _questions() if q["answer_id"]]
    hits3 = sum(q["answer_id"] in [h.id for h in index.search(q["question"], 3, mode)[0]] for q in on_topic)
    recall3 = hits3 / len(on_topic)
    print(f"{mode} recall@3 = {recall3:.3f} on {len(on_topic)} paraphrased questions")
    assert recall3 >= RECALL3_FLOOR


class Recorder:
    def __init__(self, reply="Did you try resetting your password by completing the steps on this page [faq-1665]?"):
        self.records, self.reply = [], reply

    def generate(self, records, task, params):
        assert task == "support_reply"
        self.records += records
        return [[self.reply] for _ in records]


def test_off_topic_questions_hand_over_without_generating(index):
    backend = Recorder()
    policy = load_policy(audit_log="off")
    for q in [q for q in _questions() if q["answer_id"] is None]:
        reply = answer(backend, index, q["question"], policy=policy)
        assert reply.handed_over and "human" in reply.text and reply.confidence < 0.3
    assert backend.records == []


def test_reply_is_grounded_in_cited_passages(index):
    backend = Recorder()
    reply = answer(backend, index, "I forgot my Gmail password and lost the phone number tied to it",
                   policy=load_policy(audit_log="off"))
    assert not reply.handed_over and reply.citations == ["faq-1665"]
    assert reply.text.endswith("Sources: [faq-1665]")
    assert not reply.uncited
    prompt_input = backend.records[0].input
    assert all(f"[{h.id}]" in prompt_input for h in reply.passages)  # passages with ids are in the prompt
    assert "cite" in backend.records[0].instruction


def test_uncited_reply_cites_nothing_says_so_and_pii_is_redacted(index):
    backend = Recorder(reply="Write to us at help@example.com and we will sort it out.")
    reply = answer(backend, index, "Someone hacked my Spotify, my email is ann@example.com",
                   policy=load_policy(audit_log="off"))
    assert "ann@example.com" not in backend.records[0].input and "[EMAIL]" in backend.records[0].input
    assert "help@example.com" not in reply.text and "[EMAIL]" in reply.text
    assert reply.passages and reply.citations == [] and reply.uncited
    assert reply.text.endswith("Sources: none cited. Check this reply against the knowledge base before sending it.")
    body = reply.to_dict()
    assert body["citations"] == [] and body["uncited"] is True and len(body["passages"]) == len(reply.passages)


def test_only_the_cited_passage_is_a_citation(index):
    question = "I forgot my Gmail password and lost the phone number tied to it"
    first = answer(Recorder(), index, question, policy=load_policy(audit_log="off"))
    others = [h.id for h in first.passages if h.id != "faq-1665"]
    assert others  # several passages were given, one was cited
    reply = answer(Recorder(reply="Use the recovery form [faq-1665]."), index, question,
                   policy=load_policy(audit_log="off"))
    assert reply.citations == ["faq-1665"] and not reply.uncited
    assert not any(i in reply.text for i in others)


def test_index_is_rebuilt_incrementally(tmp_path):
    kb = tmp_path / "kb"
    kb.mkdir()
    rows = [json.loads(x) for x in (FIXTURES / "support_faq.jsonl").read_text().splitlines()[:4]]
    faq = kb / "faq.jsonl"
    faq.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (kb / "returns.md").write_text("# Returns\n\nYou can return shoes within 30 days.\n\n# Refunds\n\nRefunds "
                                   "take five working days after we receive the parcel.\n")
    embedded = []

    def counting_embed(texts):
        from weaver.apps.retrieval import _embed

        embedded.extend(texts)
        return _embed(texts)

    out = tmp_path / "kb.sqlite"
    assert build_index(kb, out, counting_embed)["added"] == 5 and len(embedded) == 6
    embedded.clear()
    assert build_index(kb, out, counting_embed)["unchanged"] == 5 and embedded == []
    rows[0]["answer"] = "A new answer."
    new = {"id": "faq-new", "question": "Do you ship to Canada?", "answer": "Yes, within 7 days."}
    faq.write_text("".join(json.dumps(r) + "\n" for r in rows[:3] + [new]))
    (kb / "returns.md").unlink()
    stats = build_index(kb, out, counting_embed)
    assert (stats["added"], stats["updated"], stats["removed"], stats["unchanged"]) == (1, 1, 2, 2)
    assert len(embedded) == 2
    idx = Index(out)
    assert sorted(idx.ids) == sorted([r["id"] for r in rows[:3]] + ["faq-new"])
    assert idx.search("Can you deliver to Canada?", 1)[0][0].id == "faq-new"


def test_bad_knowledge_base_is_reported_with_file_and_line(tmp_path):
    bad = tmp_path / "faq.jsonl"
    bad.write_text('{"question": "q", "answer": "a"}\n{"question": "only a question"}\n')
    with pytest.raises(DataError, match=r"faq.jsonl:2: .*'question' and 'answer'"):
        build_index(bad, tmp_path / "kb.sqlite")
    with pytest.raises(DataError, match="does not exist"):
        build_index(tmp_path / "missing", tmp_path / "kb.sqlite")


def test_chinese_lexical_retrieval_and_chunking(tmp_path):
    kb = tmp_path / "kb"
    kb.mkdir()
    (kb / "faq.csv").write_text("id,question,answer\nzh-1,如何申请退货？,收到商品七天内可在订单页面申请退货。\n"
                                "zh-2,运费怎么算？,订单满九十九元包邮，否则运费十元。\n", encoding="utf-8")
    (kb / "en.jsonl").write_text("\n".join((FIXTURES / "support_faq.jsonl").read_text().splitlines()[:5]) + "\n")
    out = tmp_path / "kb.sqlite"
    build_index(kb, out)
    hits, _ = Index(out).search("我想退货，怎么申请", 1, "lexical")
    assert hits[0].id == "zh-1"
    assert "退货" in tokenize("我想退货")
    chunks = chunk_document("# A\n\n" + "One sentence here. " * 80 + "\n\n# B\n\nShort.")
    assert [h for h, _ in chunks][-1] == "B" and all(len(t) <= 820 for _, t in chunks)


def test_http_route_answers_and_hands_over(index):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from weaver.serve.app_routes import support_router

    app = FastAPI()
    app.include_router(support_router(str(index.path), Recorder, policy=load_policy(audit_log="off")))
    client = TestClient(app)
    ok = client.post("/v1/weaver/support", json={"question": "I forgot my Gmail password and lost my phone number"})
    assert ok.status_code == 200 and not ok.json()["handed_over"]
    assert ok.json()["citations"] == ["faq-1665"] and ok.json()["uncited"] is False
    uncited = client.post("/v1/weaver/support", json={"question": "Someone hacked my Spotify and changed my password"})
    assert uncited.json()["citations"] == [] and uncited.json()["uncited"] is True and uncited.json()["passages"]
    off = client.post("/v1/weaver/support", json={"question": "What is the capital of Australia?"})
    assert off.json()["handed_over"] is True
    assert client.post("/v1/weaver/support", json={"question": ""}).status_code == 422


def test_reply_sentences_are_grounded_in_the_passages(index):
    question = "I forgot my Gmail password and lost the phone number tied to it"
    grounded = answer(Recorder(), index, question, policy=load_policy(audit_log="off"))
    g = grounded.grounding
    assert g["faithfulness"] == 1.0 and g["sentences"][0]["passage"] == "faq-1665"
    assert "resetting your password" in g["sentences"][0]["source"] and not grounded.needs_review
    invented = Recorder(reply="Our office in Paris is open on Sundays [faq-1665]. We refund 500 dollars.")
    reply = answer(invented, index, question, policy=load_policy(audit_log="off"))
    assert reply.citations == ["faq-1665"] and reply.grounding["faithfulness"] < 0.5 and reply.needs_review
    assert reply.text.endswith("not supported by the knowledge base: check it before sending it.")
    assert reply.to_dict()["needs_review"] is True and "500" in reply.grounding["sentences"][1]["unsupported_entities"]
