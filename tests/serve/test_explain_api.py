"""`explain: true` on POST /v1/weaver/{task}, the apps routes and /v1/weaver/support (docs/EXPLAIN.md)."""

from __future__ import annotations

import json
import re

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from weaver.eval import explain as ex
from weaver.serve.app import create_app
from weaver.serve.settings import ServeSettings

KEY = "explain-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
ARTICLE = ("The city council approved a new budget on Tuesday. It adds money for buses and bike lanes.\n\n"
           "The mayor said the plan would cut traffic in the centre within two years.")
ZH_ARTICLE = "上海今天宣布新的交通计划。地铁票价下调10%！市民表示欢迎，专家认为效果还要观察。"
SENTENCE_KEYS = {"sentence", "start", "end", "supported", "score", "sources", "unsupported_entities"}


@pytest.fixture(scope="module")
def client(runs):
    # a tiny run with a random LoRA: unlike the bare tiny base (line breaks only), it writes words when greedy
    settings = ServeSettings(model=str(runs["headline"]), api_key=KEY, threads=1, backend="transformers")
    with TestClient(create_app(settings, load_in_background=False)) as c:
        yield c


def check_explanation(items: list[dict], output: str, documents: dict[str, str], key: str = "field",
                      generated: int | None = None) -> None:
    """Well-formed: one entry per sentence of output[:generated] in order, every offset slices its text exactly."""
    head = output[:generated]
    assert [i["sentence"] for i in items] == [head[a:b] for a, b in ex.sentence_spans(head)
                                              if re.search(r"\w", head[a:b])]
    for item in items:
        assert set(item) == SENTENCE_KEYS
        assert output[item["start"] : item["end"]] == item["sentence"]
        assert isinstance(item["supported"], bool) and 0.0 <= item["score"] <= 1.0
        assert all(isinstance(e, str) for e in item["unsupported_entities"])
        assert 1 <= len(item["sources"]) <= 2
        for src in item["sources"]:
            assert set(src) == {"index", key, "sentence", "start", "end", "score"}
            assert documents[src[key]][src["start"] : src["end"]] == src["sentence"]
        assert item["score"] >= max(s["score"] for s in item["sources"])


def test_task_route_has_no_explanation_unless_asked(client):
    resp = client.post("/v1/weaver/summarize", headers=AUTH, json={"input": ARTICLE, "max_tokens": 12})
    assert resp.status_code == 200, resp.text
    assert "explanation" not in resp.json()["choices"][0]


def test_task_route_explains_each_choice_against_the_input(client):
    body = {"input": ARTICLE, "max_tokens": 24, "explain": True, "n": 2, "temperature": 0.9, "seed": 5}
    resp = client.post("/v1/weaver/summarize", headers=AUTH, json=body)
    assert resp.status_code == 200, resp.text
    choices = resp.json()["choices"]
    assert len(choices) == 2 and any(c["explanation"] for c in choices)
    for choice in choices:
        content = choice["message"]["content"]
        check_explanation(choice["explanation"], content, {"input": ARTICLE})
        # exactly what weaver.eval.explain says of this reply and this input (nothing else is a source)
        assert choice["explanation"] == ex.explain_spans(content, {"input": ARTICLE})
    # the output's text is unchanged by asking for the explanation (greedy, same prompt)
    plain = client.post("/v1/weaver/summarize", headers=AUTH, json={**body, "explain": False}).json()
    assert [c["message"]["content"] for c in plain["choices"]] == [c["message"]["content"] for c in choices]


def test_task_route_explains_a_reply_to_a_chinese_source(client):
    # sampled: the tiny random model's greedy reply to this prompt is only line breaks
    body = {"input": ZH_ARTICLE, "lang": "zh", "max_tokens": 24, "explain": True, "temperature": 1.0, "seed": 1}
    resp = client.post("/v1/weaver/summarize", headers=AUTH, json=body)
    assert resp.status_code == 200, resp.text
    choice = resp.json()["choices"][0]
    content, items = choice["message"]["content"], choice["explanation"]
    assert items == ex.explain_spans(content, {"input": ZH_ARTICLE}, "zh")
    check_explanation(items, content, {"input": ZH_ARTICLE})
    cited = {s["sentence"] for i in items for s in i["sources"]}
    assert cited and cited <= set(ex.split_sentences(ZH_ARTICLE, "zh"))
    threshold = ex.THRESHOLDS[("zh", ex._embedder() is not None)]
    assert all(i["supported"] is (i["score"] >= threshold) for i in items)


@pytest.mark.parametrize("value", ["maybe", [True], {"on": 1}, 2])
def test_a_bad_explain_value_is_a_400_naming_it(client, value):
    resp = client.post("/v1/weaver/summarize", headers=AUTH, json={"input": ARTICLE, "explain": value})
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "explain"
    for path, body in (("/v1/weaver/apps/newsroom", {"articles": [{"text": ARTICLE}]}),
                       ("/v1/weaver/apps/adcopy", {"product": "shoes"})):
        resp = client.post(path, headers=AUTH, json={**body, "explain": value})
        assert resp.status_code == 400 and resp.json()["error"]["param"] == "explain", path


def test_explain_with_stream_is_refused(client):
    resp = client.post("/v1/weaver/summarize", headers=AUTH, json={"input": ARTICLE, "explain": True, "stream": True})
    assert resp.status_code == 400
    err = resp.json()["error"]
    assert err["param"] == "explain" and "stream" in err["message"]


def test_newsroom_route_explains_each_summary_in_its_article(client):
    articles = [{"id": "budget", "title": "City budget", "text": ARTICLE}, {"id": "zh", "text": ZH_ARTICLE}]
    body = {"articles": articles, "n_headlines": 0, "max_new_tokens": 24}
    plain = client.post("/v1/weaver/apps/newsroom", headers=AUTH, json=body).json()
    assert all("explanation" not in a for a in plain["articles"])
    resp = client.post("/v1/weaver/apps/newsroom", headers=AUTH, json={**body, "explain": True})
    assert resp.status_code == 200, resp.text
    out = resp.json()["articles"]
    assert [a["id"] for a in out] == ["budget", "zh"] and any(a["explanation"] for a in out)
    for art, sent in zip(out, articles):
        docs = {k: sent[k] for k in ("title", "text") if sent.get(k)}
        check_explanation(art["explanation"], art["summary"], docs)


def test_adcopy_route_explains_each_candidate_in_the_request_fields(client):
    body = {"product": "Trail running shoes with a grippy sole. They weigh 250 grams.", "audience": "weekend runners",
            "keywords": ["grip", "", "light"], "n": 2, "max_new_tokens": 20, "seed": 3, "explain": True}
    resp = client.post("/v1/weaver/apps/adcopy", headers=AUTH, json=body)
    assert resp.status_code == 200, resp.text
    cands = resp.json()["candidates"]
    assert cands and any(c["explanation"] for c in cands)
    docs = {"product": body["product"], "audience": body["audience"], "keywords[0]": "grip", "keywords[2]": "light"}
    for cand in cands:
        check_explanation(cand["explanation"], cand["text"], docs)


def test_openapi_schema_documents_the_request_flag_and_the_response_fields(client):
    schema = client.get("/openapi.json", headers=AUTH).json()
    comps = schema["components"]["schemas"]
    for name in ("TaskRequest", "NewsroomRequest", "AdcopyRequest"):
        flag = comps[name]["properties"]["explain"]
        assert flag["type"] == "boolean" and flag["default"] is False and "explanation" in flag["description"]
    for name, fields in (("ExplainedSentence", SENTENCE_KEYS),
                         ("ExplanationSource", {"index", "field", "passage", "sentence", "start", "end", "score"})):
        props = comps[name]["properties"]
        assert set(props) == fields and all(p.get("description") for p in props.values()), name
    ok = schema["paths"]["/v1/weaver/{task}"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok["$ref"].endswith("/TaskResponse")
    choice = comps["ExplainedChoice"]["properties"]["explanation"]
    assert "ExplainedSentence" in json.dumps(choice)
    for path, model in (("/v1/weaver/apps/newsroom", "NewsroomResponse"), ("/v1/weaver/apps/adcopy", "AdcopyResponse")):
        ok = schema["paths"][path]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
        assert ok["$ref"].endswith(model)


# --- support: the route on a knowledge-base index with a scripted reply -------------------------------------------

FAQ = [{"id": "faq-pw", "question": "How do I reset my password?",
        "answer": "Open Settings, choose Security and click Reset password. A link arrives by email."},
       {"id": "faq-ship", "question": "How long does shipping take?",
        "answer": "Standard shipping takes 3 to 5 working days; express takes one day."}]
REPLY = "Open Settings, choose Security and click Reset password [faq-pw]. We will also refund you 500 dollars."


class ScriptedSource:
    def generate(self, records, task, params):
        return [[REPLY] for _ in records]


@pytest.fixture(scope="module")
def support_client(tmp_path_factory):
    from weaver.apps.retrieval import build_index
    from weaver.safety import load_policy
    from weaver.serve.app_routes import support_router
    from weaver.serve.errors import install_error_handlers

    root = tmp_path_factory.mktemp("kb")
    (root / "faq.jsonl").write_text("".join(json.dumps(x) + "\n" for x in FAQ))
    build_index(root / "faq.jsonl", root / "kb.sqlite")
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(support_router(str(root / "kb.sqlite"), ScriptedSource, load_policy(audit_log="off")))
    with TestClient(app) as c:
        yield c


def test_support_reply_explains_each_sentence_by_its_passage(support_client):
    question = {"question": "I forgot my password, how can I reset it?", "mode": "lexical"}
    assert "explanation" not in support_client.post("/v1/weaver/support", json=question).json()
    resp = support_client.post("/v1/weaver/support", json={**question, "explain": True})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    passages = {p["id"]: p["text"] for p in body["passages"]}
    first, second = body["explanation"]  # the Sources line the app appends is not a sentence of the reply
    check_explanation(body["explanation"], body["reply"], passages, key="passage", generated=len(REPLY))
    assert body["reply"].startswith(REPLY + "\n\nSources: [faq-pw]")
    assert first["sentence"].endswith("[faq-pw].") and first["supported"] and first["unsupported_entities"] == []
    assert first["sources"][0]["passage"] == "faq-pw"
    assert first["sources"][0]["sentence"] == "Open Settings, choose Security and click Reset password."
    assert not second["supported"] and second["unsupported_entities"] == ["500"]


def test_support_handover_has_an_empty_explanation_and_bad_flags_are_400(support_client):
    resp = support_client.post("/v1/weaver/support", json={"question": "What is the capital of Peru?",
                                                           "min_confidence": 0.99, "explain": True})
    assert resp.status_code == 200 and resp.json()["handed_over"] and resp.json()["explanation"] == []
    resp = support_client.post("/v1/weaver/support", json={"question": "password", "explain": "sure"})
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "explain"


def test_explain_route_explains_an_edited_draft_against_its_fields(client):
    draft = "The council approved a budget on Tuesday. The mayor resigned in 1999."
    sources = {"input": ARTICLE, "title": "Council budget"}
    assert client.post("/v1/weaver/explain", json={"text": draft, "sources": sources}).status_code == 401
    resp = client.post("/v1/weaver/explain", json={"text": draft, "sources": sources}, headers=AUTH)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["object"] == "weaver.explanation"
    check_explanation(body["explanation"], draft, sources)
    first, second = body["explanation"]
    assert first["supported"] and any(s["field"] == "input" and "budget" in s["sentence"] for s in first["sources"])
    assert "1999" in second["unsupported_entities"]  # the invented date is named
    assert body["explanation"] == ex.explain_spans(draft, sources)  # the same function as every explanation
    for bad in ({"text": "", "sources": sources}, {"text": draft, "sources": {}},
                {"text": draft, "sources": sources, "lang": "fr"}, {"text": draft, "sources": sources, "x": 1}):
        assert client.post("/v1/weaver/explain", json=bad, headers=AUTH).status_code in (400, 422), bad
