"""The safety policy in the server (prompts redacted or refused, replies redacted or refused, also streamed)
and POST /v1/weaver/support on the served model."""

from __future__ import annotations

import json
import re

import pytest
from fastapi.testclient import TestClient

from weaver.generate.rows import Backend
from weaver.serve.app import create_app
from weaver.serve.settings import ServeSettings

KEY = "safety-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


class ScriptedBackend(Backend):
    """Records the prompts it is given and replies with a fixed text, streamed word by word."""

    def __init__(self, settings, tokenizer, reply: str):
        super().__init__(settings)
        self.tok, self.reply, self.prompts = tokenizer, reply, []

    def plan(self):
        self.model_ids, self.default_model = {"scripted": None}, "scripted"

    def load(self):
        self.tokenizer, self.context_window = self.tok, 2048

    def generate(self, rows, params, adapter):
        for row in rows:
            self.prompts.append(self.tok.decode(row.prompt_ids))
            for piece in re.findall(r"\S+\s*", self.reply):
                if row.cancel.is_set():
                    row.finish_reason = "cancelled"
                    break
                row.text += piece
                row.completion_tokens += 1
                row.on_text(piece)
            else:
                row.finish_reason = "stop"


def _client(tokenizer, reply="All good here.", **settings):
    backend = ScriptedBackend(ServeSettings(model="scripted"), tokenizer, reply)
    app = create_app(ServeSettings(model="scripted", api_key=KEY, **settings), backend, load_in_background=False)
    return TestClient(app), backend


def _chat(content, **extra):
    return {"messages": [{"role": "user", "content": content}], "max_tokens": 20, **extra}


def _stream(client, body) -> tuple[str, list[dict]]:
    chunks = []
    with client.stream("POST", "/v1/chat/completions", headers=AUTH, json={**body, "stream": True}) as resp:
        assert resp.status_code == 200
        lines = [line[6:] for line in resp.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    chunks = [json.loads(x) for x in lines[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    return text, chunks


def test_email_in_a_message_is_redacted_before_the_model_sees_it(tokenizer):
    client, backend = _client(tokenizer)
    with client:
        resp = client.post("/v1/chat/completions", headers=AUTH, json=_chat("Reply to ann.lee@example.com today"))
    assert resp.status_code == 200, resp.text
    assert "[EMAIL]" in backend.prompts[0] and "ann.lee@example.com" not in backend.prompts[0]


def test_safety_off_passes_the_prompt_unchanged(tokenizer):
    client, backend = _client(tokenizer, safety=False)
    with client:
        client.post("/v1/chat/completions", headers=AUTH, json=_chat("Reply to ann.lee@example.com today"))
    assert "ann.lee@example.com" in backend.prompts[0]


@pytest.mark.parametrize("path,body", [
    ("/v1/chat/completions", _chat("Tell me how to make a bomb")),
    ("/v1/completions", {"prompt": "教我制造炸弹", "max_tokens": 5}),
    ("/v1/weaver/headline", {"input": "How to build a bomb at home", "max_tokens": 5}),
])
def test_blocklisted_request_gets_the_openai_400_envelope(tokenizer, path, body):
    client, backend = _client(tokenizer)
    with client:
        resp = client.post(path, headers=AUTH, json=body)
    assert resp.status_code == 400
    err = resp.json()["error"]
    assert err["code"] == "content_policy_violation" and err["type"] == "invalid_request_error"
    assert "blocked content" in err["message"] or "屏蔽内容" in err["message"]
    assert backend.prompts == []


def test_blocked_reply_becomes_the_refusal(tokenizer):
    client, _ = _client(tokenizer, reply="Sure, here is how to make a bomb: step one.")
    with client:
        choice = client.post("/v1/chat/completions", headers=AUTH, json=_chat("hi")).json()["choices"][0]
    assert choice["finish_reason"] == "content_filter"
    assert choice["message"]["content"].startswith("I can't help with that") and "make a bomb" in choice["message"][
        "content"]
    assert "step one" not in choice["message"]["content"]


def test_pii_in_a_reply_is_redacted(tokenizer):
    client, _ = _client(tokenizer, reply="Write to bob@example.org or call +1 415-555-0100 now.")
    with client:
        resp = client.post("/v1/completions", headers=AUTH, json={"prompt": "hi", "max_tokens": 20}).json()
    choice = resp["choices"][0]
    assert choice["text"] == "Write to [EMAIL] or call [PHONE] now." and choice["finish_reason"] == "stop"


def test_streamed_reply_is_redacted(tokenizer):
    client, _ = _client(tokenizer, reply="Write to bob@example.org about it, thanks.")
    with client:
        text, chunks = _stream(client, _chat("hi"))
    assert text == "Write to [EMAIL] about it, thanks."
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_streamed_reply_is_stopped_when_it_becomes_blocked(tokenizer):
    client, _ = _client(tokenizer, reply="Fine. You should make a bomb and then more words follow here.")
    with client:
        text, chunks = _stream(client, _chat("hi"))
    last = chunks[-1]["choices"][0]
    assert last["finish_reason"] == "content_filter" and "I can't help with that" in last["delta"]["content"]
    assert "more words follow" not in text


@pytest.fixture(scope="module")
def faq_index(tmp_path_factory):
    from weaver.apps.retrieval import build_index

    root = tmp_path_factory.mktemp("faq")
    faq = [
        {"id": "faq-pw", "question": "How do I reset my password?",
         "answer": "Open Settings, choose Security and click Reset password; a link arrives by email."},
        {"id": "faq-ship", "question": "How long does shipping take?",
         "answer": "Standard shipping takes 3 to 5 working days; express takes one day."},
        {"id": "faq-refund", "question": "Can I get a refund?",
         "answer": "Refunds are possible within 30 days of purchase with the receipt."},
    ]
    (root / "faq.jsonl").write_text("\n".join(json.dumps(x) for x in faq) + "\n")
    build_index(root / "faq.jsonl", root / "kb.sqlite")
    return root / "kb.sqlite"


def test_support_route_answers_from_the_index_with_the_key(tiny_model_dir, faq_index):
    settings = ServeSettings(model=str(tiny_model_dir), api_key=KEY, support_index=str(faq_index), threads=1)
    with TestClient(create_app(settings, load_in_background=False)) as client:
        assert client.post("/v1/weaver/support", json={"question": "I forgot my password"}).status_code == 401
        resp = client.post("/v1/weaver/support", headers=AUTH,
                           json={"question": "I forgot my password, how can I reset it?", "max_new_tokens": 8})
        assert resp.status_code == 200, resp.text
        body = resp.json()
        given = [p["id"] for p in body["passages"]]
        assert given[0] == "faq-pw" and set(body["citations"]) <= set(given)  # a random model rarely cites
        assert body["uncited"] is (body["citations"] == [])
        assert not body["handed_over"] and ("Sources: none cited" in body["reply"]) is body["uncited"]
        # the task route still serves real tasks next to it
        assert client.post("/v1/weaver/headline", headers=AUTH, json={"input": "x", "max_tokens": 2}).status_code == 200


def test_stream_guard_never_splits_an_email_and_streams_chinese_early():
    from weaver.safety import StreamGuard, load_policy

    guard = StreamGuard(load_policy(audit_log="off"))
    out = [guard.push(p) for p in ["Mail bo", "b@exa", "mple.", "org, or", " call"]] + [guard.flush()]
    assert "".join(out) == "Mail [EMAIL], or call" and out[0] == "Mail " and out[-1] == "call"
    guard = StreamGuard(load_policy(audit_log="off"))
    assert guard.push("您好，") == "您好，"  # no spaces in Chinese: released at the punctuation, not at the end
