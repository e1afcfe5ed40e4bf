"""Every client mistake gets its status and OpenAI's error envelope, never a 500; loading, queue and timeouts."""

from __future__ import annotations

import threading
import time

import httpx
import openai
import pytest

from weaver.generate.transformers_backend import TransformersBackend
from weaver.serve.settings import ServeSettings

from .conftest import batching_stats, live_server, wait_for

CHAT = "/v1/chat/completions"
USER = [{"role": "user", "content": "Hello"}]


def assert_envelope(resp: httpx.Response, status: int, param: str | None = None, code: str | None = None) -> dict:
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and len(error["message"]) > 10
    if param is not None:
        assert error["param"] == param
    if code is not None:
        assert error["code"] == code
    return error


@pytest.mark.parametrize("path,body,param", [
    (CHAT, {"messages": USER, "temperature": 5}, "temperature"),
    (CHAT, {"messages": USER, "top_p": 0}, "top_p"),
    (CHAT, {"messages": USER, "n": 0}, "n"),
    (CHAT, {"messages": USER, "n": 5}, "n"),  # over this server's max_n=4
    (CHAT, {"messages": USER, "max_tokens": 0}, "max_tokens"),
    (CHAT, {"messages": USER, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    (CHAT, {"messages": USER, "stop": [""]}, "stop"),
    (CHAT, {"messages": []}, "messages"),
    (CHAT, {}, "messages"),
    (CHAT, {"messages": "Hello"}, "messages"),
    (CHAT, {"messages": [{"role": "bot", "content": "hi"}]}, "messages.0.role"),
    (CHAT, {"messages": [{"role": "user", "content": "  "}]}, "messages"),
    (CHAT, {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}]}, None),
    ("/v1/completions", {"prompt": []}, "prompt"),
    ("/v1/completions", {"prompt": "hi", "seed": -1}, "seed"),
    ("/v1/weaver/headline", {"text": "an article"}, None),
    ("/v1/weaver/headline", {"input": ""}, None),
    ("/v1/weaver/headline", {"input": "an article", "n": "many"}, "n"),
])
def test_invalid_values_are_400(server, auth, path, body, param):
    assert_envelope(httpx.post(server + path, json=body, headers=auth), 400, param=param)


def test_invalid_json_is_400(server, auth):
    resp = httpx.post(server + CHAT, content=b'{"messages": [', headers={**auth, "Content-Type": "application/json"})
    assert "JSON" in assert_envelope(resp, 400)["message"]


def test_prompt_plus_max_tokens_over_context_window_is_400(server, auth):
    long_text = "word " * 700  # ~700 tokens; the tiny model's window is 1024
    resp = httpx.post(server + CHAT, json={"messages": [{"role": "user", "content": long_text}], "max_tokens": 500},
                      headers=auth)
    assert "context window" in assert_envelope(resp, 400, param="max_tokens", code="context_length_exceeded")["message"]
    resp = httpx.post(server + "/v1/completions", json={"prompt": "word " * 1100}, headers=auth)
    assert_envelope(resp, 400, code="context_length_exceeded")


def test_missing_or_wrong_key_is_401_and_health_stays_open(server, auth):
    assert_envelope(httpx.post(server + CHAT, json={"messages": USER}), 401, code="invalid_api_key")
    for header in ("Bearer wrong-key", "Basic dGVzdA==", "Bearer"):
        assert_envelope(httpx.get(server + "/v1/models", headers={"Authorization": header}), 401)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server + "/v1", api_key="nope", max_retries=0).models.list()
    assert httpx.get(server + "/health").status_code == 200
    assert httpx.get(server + "/").status_code == 200


def test_unknown_model_task_or_path_is_404(server, client, auth):
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="no-such-model", messages=USER, max_tokens=2)
    assert info.value.body["code"] == "model_not_found"
    assert_envelope(httpx.post(server + "/v1/weaver/limerick", json={"input": "x"}, headers=auth), 404,
                    code="task_not_found")
    assert_envelope(httpx.get(server + "/v1/nothing", headers=auth), 404)


def test_body_too_large_is_413(server, auth):
    big = {"messages": [{"role": "user", "content": "x" * 1_200_000}]}
    assert_envelope(httpx.post(server + CHAT, json=big, headers=auth), 413, code="request_too_large")

    def chunks():  # no Content-Length: the limit is enforced while the body streams in
        for _ in range(13):
            yield b"x" * 100_000

    resp = httpx.post(server + CHAT, content=chunks(), headers={**auth, "Content-Type": "application/json"})
    assert_envelope(resp, 413, code="request_too_large")


def test_413_reaches_a_client_still_sending_its_body(server, auth):
    """A refused body (by Content-Length) is read before the 413 is sent: a client that is still sending gets the
    413, not a connection reset (the server closing on unread data resets the connection)."""
    import socket
    from urllib.parse import urlsplit

    url = urlsplit(server)
    body = b"x" * 1_100_000
    head = (f"POST {CHAT} HTTP/1.1\r\nHost: {url.hostname}\r\nAuthorization: {auth['Authorization']}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection((url.hostname, url.port), timeout=30) as sock:
        sock.sendall(head + body[:100_000])
        time.sleep(0.5)  # the server has seen the headers and refused by now
        sock.sendall(body[100_000:])
        reply = b""
        while b"request_too_large" not in reply:
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 413") and b"request_too_large" in reply, reply[:200]


def test_503_while_loading_then_ready(tiny_model_dir):
    gate = threading.Event()

    class GatedBackend(TransformersBackend):
        def load(self):
            gate.wait(30)
            super().load()

    settings = ServeSettings(model=str(tiny_model_dir), threads=1)
    with live_server(settings, GatedBackend(settings), wait_ready=False) as url:
        health = httpx.get(url + "/health")
        assert health.status_code == 503 and health.json()["status"] == "loading"
        assert_envelope(httpx.post(url + CHAT, json={"messages": USER}), 503, code="model_loading")
        assert_envelope(httpx.get(url + "/v1/models"), 503, code="model_loading")
        gate.set()
        for _ in range(300):
            if httpx.get(url + "/health").status_code == 200:
                break
            time.sleep(0.1)
        assert httpx.post(url + CHAT, json={"messages": USER, "max_tokens": 2}).status_code == 200


def test_failed_load_is_503_with_the_reason(tmp_path):
    with live_server(ServeSettings(model=str(tmp_path / "missing-model")), wait_ready=False) as url:
        for _ in range(100):
            health = httpx.get(url + "/health").json()
            if health["status"] != "loading":
                break
            time.sleep(0.1)
        assert health["status"] == "error" and "missing-model" in health["error"]
        assert "missing-model" in assert_envelope(httpx.get(url + "/v1/models"), 503)["message"]


def test_queue_full_is_429_and_disconnect_cancels_generation(tiny_model_dir):
    settings = ServeSettings(model=str(tiny_model_dir), threads=1, max_queue=1, max_batch=1, batch_wait_ms=0)
    long = {"prompt": "Hello", "max_tokens": 1000, "temperature": 0, "stream": True, "repetition_penalty": 1.0}
    with live_server(settings) as url:
        with httpx.stream("POST", url + "/v1/completions", json=long, timeout=60) as running:
            events = running.iter_lines()  # keep the iterator: dropping it closes the stream
            assert next(events).startswith("data: ")  # the long request is generating now
            waiting = {}
            thread = threading.Thread(target=lambda: waiting.update(resp=httpx.post(
                url + "/v1/completions", json={"prompt": "Hi", "max_tokens": 3}, timeout=60)))
            thread.start()
            assert wait_for(lambda: httpx.get(url + "/health").json()["queued"] == 1)
            busy = httpx.post(url + "/v1/completions", json={"prompt": "Hey", "max_tokens": 3})
            assert_envelope(busy, 429, code="queue_full")
            assert busy.headers["retry-after"] == "1"
            # the apps' routes generate through ServedSource: refused the same way, before any article is prompted
            busy = httpx.post(url + "/v1/weaver/apps/newsroom", json={"articles": [{"text": "The sea rose."}]})
            assert_envelope(busy, 429, code="queue_full")
            assert busy.headers["retry-after"] == "1"
        # leaving the block closed the stream: its generation must stop long before 1000 tokens
        assert wait_for(lambda: batching_stats(url)["cancelled_rows"] == 1)
        thread.join(timeout=60)
        assert waiting["resp"].status_code == 200
        stats = batching_stats(url)
        assert stats["rejected"] == 2
        assert stats["tokens"] < 1000


def test_request_timeout_is_504_and_ends_a_stream_with_an_error(tiny_model_dir):
    settings = ServeSettings(model=str(tiny_model_dir), threads=1, request_timeout_s=0.3)
    body = {"prompt": "Hello", "max_tokens": 1000, "temperature": 0, "repetition_penalty": 1.0}
    with live_server(settings) as url:
        assert_envelope(httpx.post(url + "/v1/completions", json=body, timeout=60), 504, code="timeout")
        with httpx.stream("POST", url + "/v1/completions", json={**body, "stream": True}, timeout=60) as resp:
            lines = [line for line in resp.iter_lines() if line]
        assert lines[-1] == "data: [DONE]"
        assert '"error"' in lines[-2]
        assert batching_stats(url)["timed_out_rows"] == 2
