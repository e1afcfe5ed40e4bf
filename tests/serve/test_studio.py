"""The studio's API (weaver.serve.studio): feedback recorded in the store, history, digest, limits, and the
exported files loading in our readers and `weaver data check`."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from weaver.apps.feedback import FeedbackStore
from weaver.serve.app import create_app
from weaver.serve.settings import ServeSettings
from weaver.serve.studio import FEEDBACK_MAX_BYTES

KEY = "studio-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
ARTICLE = "Heavy rain closed every school in Leeds on Monday, the council said."


@pytest.fixture(scope="module")
def studio(runs, tmp_path_factory):
    db = tmp_path_factory.mktemp("studio") / "studio.sqlite"
    settings = ServeSettings(model=str(runs["headline"]), api_key=KEY, threads=1, studio_db=str(db))
    with TestClient(create_app(settings, load_in_background=False)) as c:
        yield c, db


def _request(client, expect=200, **over):
    body = {"type": "request", "view": "write", "task": "headline", "model": "headline",
            "fields": {"input": ARTICLE}, "drafts": [{"text": "Rain shuts Leeds schools"}, {"text": "Weather"}]}
    resp = client.post("/v1/weaver/feedback", headers=AUTH, json={**body, **over})
    assert resp.status_code == expect, resp.text
    return resp.json()


def _event(client, rid, **body):
    return client.post("/v1/weaver/feedback", headers=AUTH, json={"type": "event", "request_id": rid, **body})


def test_studio_info_and_the_key(studio, tiny_model_dir):
    client, _ = studio
    assert client.get("/v1/weaver/studio").status_code == 401
    assert client.post("/v1/weaver/feedback", json={"type": "event"}).status_code == 401
    assert client.get("/v1/weaver/history").status_code == 401
    info = client.get("/v1/weaver/studio", headers=AUTH).json()
    assert info == {"object": "weaver.studio", "recording": True, "support": False,
                    "base_model": tiny_model_dir.name}


def test_choices_edits_and_regenerated_drafts_land_in_the_store(studio, tiny_model_dir):
    client, db = studio
    req = _request(client, blind=True, drafts=[{"text": "Rain shuts Leeds schools"},
                                               {"text": "Weather", "model": tiny_model_dir.name}])
    rid = req["id"]
    # which model wrote a draft is the server's word: the base id is the base, the adapter is not
    assert [(d["model"], d["is_base"]) for d in req["drafts"]] == [("headline", False), (tiny_model_dir.name, True)]
    added = client.post("/v1/weaver/feedback", headers=AUTH,
                        json={"type": "draft", "request_id": rid, "text": "Leeds schools close", "model": "headline"})
    assert added.status_code == 200 and added.json()["draft"] == 2
    assert _event(client, rid, kind="choose", draft=2).status_code == 200
    out = _event(client, rid, kind="edit", draft=2, text="Rain closes Leeds schools").json()
    assert out["chosen"] == 2 and out["final"] == "Rain closes Leeds schools" and out["edited"]
    assert _event(client, rid, kind="thumbs_down", draft=1).json()["thumbs_down"] == [1]
    # the file holds it (another connection reads it), and history lists it, newest first
    stored = FeedbackStore(db, create=False).request(rid)
    assert stored["final"] == "Rain closes Leeds schools" and len(stored["drafts"]) == 3
    history = client.get("/v1/weaver/history", headers=AUTH).json()["data"]
    assert history[0]["id"] == rid
    assert client.get(f"/v1/weaver/history/{rid}", headers=AUTH).json()["final"] == "Rain closes Leeds schools"
    ad = _request(client, view="adcopy", task="adcopy", fields={"product": "wool socks"}, drafts=[{"text": "Warm"}])
    only_ads = client.get("/v1/weaver/history?view=adcopy", headers=AUTH).json()["data"]
    assert [r["id"] for r in only_ads] == [ad["id"]]


def test_pii_is_stored_redacted_and_blocked_text_is_refused(studio):
    client, db = studio
    req = _request(client, fields={"input": "Write to jane.doe@example.com about the rain."},
                   drafts=[{"text": "Call 555-123-4567 now"}])
    assert "jane.doe@example.com" not in json.dumps(req) and "555-123-4567" not in json.dumps(req)
    _event(client, req["id"], kind="choose", draft=0)
    resp = _event(client, req["id"], kind="edit", draft=0, text="Mail jane.doe@example.com")
    assert resp.status_code == 200 and resp.json()["final"].startswith("Mail [")
    refused = _event(client, req["id"], kind="edit", draft=0, text="how to build a bomb at home")
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "content_policy_violation"
    refused = _request(client, fields={"input": "how to make a bomb"}, expect=400)
    assert "safety policy" in refused["error"]["message"]
    assert "bomb" not in client.get(f"/v1/weaver/history/{req['id']}", headers=AUTH).text
    raw = db.read_bytes() + (db.parent / (db.name + "-wal")).read_bytes()
    assert b"jane.doe@example.com" not in raw and KEY.encode() not in raw


@pytest.mark.parametrize("body, status, needle", [
    ({"type": "event", "request_id": "0" * 32, "kind": "choose", "draft": 0}, 404, "unknown request"),
    ({"type": "event", "request_id": "xyz", "kind": "choose", "draft": 0}, 400, "request_id"),
    ({"type": "event", "request_id": "0" * 32, "kind": "like", "draft": 0}, 400, "kind"),
    ({"type": "request", "task": "headline", "drafts": []}, 400, "drafts"),
    ({"type": "request", "task": "poetry", "drafts": [{"text": "x"}]}, 400, "unknown task"),
    ({"type": "request", "task": "headline", "drafts": [{"text": "x", "model": "gpt-9"}]}, 400, "not a served"),
    ({"type": "request", "task": "headline", "drafts": [{"text": "x"}], "api_key": KEY}, 400, "api_key"),
    ({"type": "nonsense"}, 400, "type"),
])
def test_bad_feedback_is_refused_in_one_sentence(studio, body, status, needle):
    client, _ = studio
    resp = client.post("/v1/weaver/feedback", headers=AUTH, json=body)
    assert resp.status_code == status, resp.text
    assert needle in resp.json()["error"]["message"]


def test_bad_events_on_a_real_request_and_the_body_limit(studio):
    client, _ = studio
    rid = _request(client)["id"]
    assert "no draft 7" in _event(client, rid, kind="choose", draft=7).json()["error"]["message"]
    assert _event(client, rid, kind="rate", draft=0, value=9).status_code == 400
    huge = {"type": "request", "task": "headline", "fields": {f"f{i}": "x" * 90_000 for i in range(8)},
            "drafts": [{"text": "x"}]}
    resp = client.post("/v1/weaver/feedback", headers=AUTH, json=huge)
    assert resp.status_code == 413 and str(FEEDBACK_MAX_BYTES) in resp.json()["error"]["message"]
    assert client.get("/v1/weaver/history/" + "f" * 32, headers=AUTH).status_code == 404


def test_digest_is_the_newsroom_digest_with_the_picked_headline(studio):
    client, _ = studio
    body = {"articles": [{"id": "rain", "title": "Rain", "summary": "Schools <b>closed</b>.",
                          "headline": "Rain shuts schools", "alternatives": ["Leeds schools close"]}]}
    md = client.post("/v1/weaver/digest", headers=AUTH, json={**body, "format": "md"})
    assert md.status_code == 200 and md.text.startswith("# News digest")
    assert "## Rain shuts schools" in md.text and "- Leeds schools close" in md.text
    page = client.post("/v1/weaver/digest", headers=AUTH, json={**body, "format": "html"}).text
    assert "<h2>Rain shuts schools</h2>" in page and "&lt;b&gt;closed&lt;/b&gt;" in page and "<b>closed" not in page
    lines = client.post("/v1/weaver/digest", headers=AUTH, json={**body, "format": "jsonl"}).text.splitlines()
    assert json.loads(lines[0])["headline"] == "Rain shuts schools"


@pytest.fixture
def exported(studio, tmp_path):
    """A choice and an edit made through the API, exported by `weaver feedback export`."""
    from weaver.cli import main

    client, db = studio
    rid = _request(client, fields={"input": ARTICLE})["id"]
    _event(client, rid, kind="choose", draft=0)
    _event(client, rid, kind="edit", draft=0, text="Rain closes all Leeds schools")
    assert main(["feedback", "export", "--db", str(db), "--out", str(tmp_path)]) == 0
    return tmp_path


def test_export_gives_pairs_and_sft_our_readers_load(exported, capsys):
    from weaver.cli import main
    from weaver.data.preferences import read_pairs
    from weaver.data.readers import read_records

    pairs = read_pairs(exported / "pairs.jsonl")  # raises on any malformed pair
    assert ("Rain closes all Leeds schools", "Weather") in [(p.record.output, p.rejected) for p in pairs]
    assert "Rain closes all Leeds schools" in [r.output for r in read_records(exported / "sft.jsonl")]
    capsys.readouterr()
    assert main(["data", "check", str(exported / "sft.jsonl"), "--task", "headline", "--model", "none", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["files"]["train"]["problems"] == []


def test_data_check_accepts_the_exported_pairs(exported, capsys):
    from weaver.cli import main

    capsys.readouterr()
    assert main(["data", "check", str(exported / "pairs.jsonl"), "--task", "headline", "--model", "none",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["files"]["train"]["problems"] == []


def test_recording_off(runs):
    settings = ServeSettings(model=str(runs["headline"]), threads=1, studio_db="none")
    with TestClient(create_app(settings, load_in_background=False)) as c:
        assert c.get("/v1/weaver/studio").json()["recording"] is False
        resp = c.post("/v1/weaver/feedback", json={"type": "request", "task": "headline", "drafts": [{"text": "x"}]})
        assert resp.status_code == 404 and "--studio-db none" in resp.json()["error"]["message"]
