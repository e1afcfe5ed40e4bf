"""The served-model backend: OpenAI-compatible chat requests built from weaver.data.tasks messages."""

from __future__ import annotations

import json

import httpx
import pytest

from weaver.apps.source import ServerSource, default_params, open_source
from weaver.data.records import Record
from weaver.errors import WeaverError


def test_http_backend_sends_task_messages_and_returns_n_texts():
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append(body)
        choices = [{"index": i, "message": {"role": "assistant", "content": f" text {i} "}} for i in range(body["n"])]
        return httpx.Response(200, json={"choices": choices})

    backend = ServerSource("http://srv", "news-lora")
    backend.client = httpx.Client(base_url="http://srv", transport=httpx.MockTransport(handler))
    out = backend.generate([Record("a", "", "An article.", "")], "headline", default_params("headline", n=2))
    assert out == [["text 0", "text 1"]]
    assert seen[0]["model"] == "news-lora" and seen[0]["stop"] == ["\n"] and seen[0]["max_tokens"] == 32
    assert seen[0]["messages"][-1]["content"].startswith("Write a short, accurate headline")


def test_http_backend_errors_are_one_sentence():
    backend = ServerSource("http://srv", "m")
    backend.client = httpx.Client(base_url="http://srv", transport=httpx.MockTransport(
        lambda r: httpx.Response(404, json={"error": {"message": "model 'm' not found"}})))
    with pytest.raises(WeaverError, match="answered 404: model 'm' not found"):
        backend.generate([Record("a", "", "x", "")], "headline", default_params("headline"))
    with pytest.raises(WeaverError, match="--server-model"):
        open_source(server="http://srv")


def test_a_refused_n_falls_back_to_one_request_per_text():
    """vLLM and OpenAI take n; llama.cpp's server caps it at its slots, some servers refuse n > 1 (mock here;
    tests/apps/test_peer_server.py does it on the real llama.cpp server)."""
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append((body["n"], body["seed"]))
        if body["n"] > 1:
            return httpx.Response(400, json={"error": {"message": "Only n=1 is supported"}})
        return httpx.Response(200, json={"choices": [{"index": 0, "message": {"content": f"seed {body['seed']}"}}]})

    backend = ServerSource("http://srv", "m")
    backend.client = httpx.Client(base_url="http://srv", transport=httpx.MockTransport(handler))
    rec = Record("a", "", "An article.", "")
    assert backend.generate([rec], "headline", default_params("headline", n=3, seed=7)) == [["seed 7", "seed 8",
                                                                                               "seed 9"]]
    assert backend.generate([rec], "headline", default_params("headline", n=2, seed=1)) == [["seed 1", "seed 2"]]
    assert seen == [(3, 7), (1, 7), (1, 8), (1, 9), (1, 1), (1, 2)]  # refused once, then never asked again
    other = ServerSource("http://srv", "m")
    other.client = httpx.Client(base_url="http://srv", transport=httpx.MockTransport(
        lambda r: httpx.Response(400, json={"error": {"message": "max_tokens is too large"}})))
    with pytest.raises(WeaverError, match="max_tokens is too large"):  # other 400s are errors, not a fallback
        other.generate([rec], "headline", default_params("headline", n=3))
