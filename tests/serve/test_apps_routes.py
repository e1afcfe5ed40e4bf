"""POST /v1/weaver/apps/newsroom and /v1/weaver/apps/adcopy on the served (tiny) model."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from weaver.serve.app import create_app
from weaver.serve.settings import ServeSettings

KEY = "apps-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
ARTICLE = ("The city council approved a new budget on Tuesday that adds money for buses and bike lanes. "
           "The mayor said the plan would cut traffic in the centre within two years.")


@pytest.fixture(scope="module")
def client(tiny_model_dir):
    settings = ServeSettings(model=str(tiny_model_dir), api_key=KEY, threads=1, backend="transformers")
    with TestClient(create_app(settings, load_in_background=False)) as c:
        yield c


def test_newsroom_route_needs_the_key(client):
    resp = client.post("/v1/weaver/apps/newsroom", json={"articles": [{"text": ARTICLE}]})
    assert resp.status_code == 401 and resp.json()["error"]["type"] == "authentication_error"


def test_newsroom_route_writes_summary_headline_alternatives_and_reports_a_too_long_article(client):
    long_text = "word " * 3000  # longer than the tiny model's 1024-token window
    body = {"articles": [{"id": "budget", "title": "Budget", "text": ARTICLE}, {"text": long_text},
                         {"text": "Mail jane.doe@example.com about the strike at the port."}],
            "n_headlines": 2, "max_new_tokens": 6}
    resp = client.post("/v1/weaver/apps/newsroom", headers=AUTH, json=body)
    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert out["object"] == "weaver.newsroom"
    assert [a["id"] for a in out["articles"]] == ["budget", "article-3"]  # input order, default ids
    assert [f["id"] for f in out["failed"]] == ["article-2"] and "context window" in out["failed"][0]["error"]
    first = out["articles"][0]
    assert first["title"] == "Budget" and isinstance(first["summary"], str) and first["summary"]
    assert len(first["alternatives"]) <= 2 and first["headline"] not in first["alternatives"]
    # the article's PII never reached the model: the prompt gate redacted it
    assert out["articles"][1]["safety"]["redactions"]
    # the summary is what the per-task route gives for the same article (same prompt, greedy)
    same = client.post("/v1/weaver/summarize", headers=AUTH, json={"input": ARTICLE, "max_tokens": 6}).json()
    assert same["choices"][0]["message"]["content"] == first["summary"]


def test_newsroom_route_rejects_duplicate_ids_and_unknown_models(client):
    twice = {"articles": [{"id": "a", "text": ARTICLE}, {"id": "a", "text": ARTICLE}]}
    resp = client.post("/v1/weaver/apps/newsroom", headers=AUTH, json=twice)
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "duplicate_id"
    resp = client.post("/v1/weaver/apps/newsroom", headers=AUTH,
                       json={"model": "nope", "articles": [{"text": ARTICLE}]})
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "model_not_found"
    resp = client.post("/v1/weaver/apps/newsroom", headers=AUTH, json={"articles": []})
    assert resp.status_code == 400


def test_adcopy_route_returns_distinct_candidates_ranked_by_the_documented_score(client):
    body = {"product": "trail running shoes", "audience": "weekend runners", "tone": "playful",
            "keywords": ["grip", "light"], "n": 3, "max_new_tokens": 12, "seed": 3}
    resp = client.post("/v1/weaver/apps/adcopy", headers=AUTH, json=body)
    assert resp.status_code == 200, resp.text
    out = resp.json()
    cands, weights = out["candidates"], out["score"]["weights"]
    assert out["score"]["likelihood"] is False and 1 <= len(cands) <= 3
    assert len({c["text"] for c in cands}) == len(cands)
    for c in cands:
        assert c["likelihood"] == 0.0
        expect = weights["keyword_coverage"] * c["keyword_coverage"] + weights["length_fit"] * c["length_fit"]
        assert c["score"] == pytest.approx(expect)
    assert [c["score"] for c in cands] == sorted((c["score"] for c in cands), reverse=True)
    again = client.post("/v1/weaver/apps/adcopy", headers=AUTH, json=body).json()
    assert again["candidates"] == cands  # seeded sampling: the same request gives the same candidates


def test_adcopy_route_takes_attribute_strings_and_rejects_an_empty_request(client):
    resp = client.post("/v1/weaver/apps/adcopy", headers=AUTH,
                       json={"attributes": "类型#上衣*颜色#白色*风格#简约", "lang": "zh", "n": 2, "max_new_tokens": 8})
    assert resp.status_code == 200, resp.text
    assert resp.json()["candidates"]
    resp = client.post("/v1/weaver/apps/adcopy", headers=AUTH, json={"n": 2})
    assert resp.status_code == 400 and "product" in resp.json()["error"]["message"]
    resp = client.post("/v1/weaver/apps/adcopy", headers=AUTH, json={"product": "x", "lang": "fr"})
    assert resp.status_code == 400
