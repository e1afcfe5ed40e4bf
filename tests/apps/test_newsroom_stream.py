"""Newsroom batches at scale: articles stream from the input, and a pool of servers takes them with bounded
concurrency per server."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

from weaver.apps.newsroom import check_input, run_newsroom
from weaver.apps.source import ServerPool, ServerSource, open_source
from weaver.errors import DataError, WeaverError
from weaver.safety import load_policy


def _jsonl(path, n: int, start: int = 0):
    with open(path, "a", encoding="utf-8") as fh:
        for i in range(start, start + n):
            fh.write(json.dumps({"id": f"a{i:03d}", "text": f"The harbour of town {i} reopened on Monday."}) + "\n")
    return path


class Servers:
    """Mock OpenAI-compatible servers: each request takes 30 ms; in-flight requests counted per host."""

    def __init__(self):
        self.lock = threading.Lock()
        self.now: dict[str, int] = {}
        self.most: dict[str, int] = {}
        self.total_most = 0
        self.calls: dict[str, int] = {}

    def handler(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        with self.lock:
            self.now[host] = self.now.get(host, 0) + 1
            self.most[host] = max(self.most.get(host, 0), self.now[host])
            self.total_most = max(self.total_most, sum(self.now.values()))
            self.calls[host] = self.calls.get(host, 0) + 1
        time.sleep(0.03)
        with self.lock:
            self.now[host] -= 1
        n = json.loads(request.content)["n"]
        return httpx.Response(200, json={"choices": [{"index": i, "message": {"role": "assistant",
                                                                             "content": f"from {host} {i}"}}
                                                     for i in range(n)]})


def test_a_pool_spreads_articles_over_servers_within_their_limit(tmp_path):
    servers = Servers()
    pool = ServerPool(["http://gpu1:8000", "http://gpu2:8000"], "news", per_server=2)
    for s in pool.servers:
        s.client = httpx.Client(base_url=s.url, transport=httpx.MockTransport(servers.handler))
    src = _jsonl(tmp_path / "in.jsonl", 12)
    out = tmp_path / "out"
    result = run_newsroom(pool, src, out, n_headlines=1, policy=load_policy(audit_log="off"), progress=False,
                          grounding=False)
    assert pool.workers == 4 and sorted(result.done) == [f"a{i:03d}" for i in range(12)] and not result.failed
    assert set(servers.calls) == {"gpu1", "gpu2"} and min(servers.calls.values()) >= 6
    assert max(servers.most.values()) <= 2  # never more than per_server in flight on one server
    assert servers.total_most > 1
    digest = (out / "digest.md").read_text()
    positions = [digest.index(f"a{i:03d}") for i in range(12)]
    assert positions == sorted(positions)  # input order, whatever order they finished in
    again = run_newsroom(pool, src, out, n_headlines=1, policy=load_policy(audit_log="off"), progress=False,
                         grounding=False)
    assert len(again.skipped) == 12 and not again.done


class GrowingInput:
    """A source that appends an article to the input file on its first call: only a streaming reader sees it."""

    lang = "en"
    supports_loglik = False

    def __init__(self, path):
        self.path, self.grown = path, False

    def generate(self, records, task, params):
        if not self.grown:
            _jsonl(self.path, 1, start=99)
            self.grown = True
        return [[f"{task} of {r.id}"] * params.n for r in records]


def test_articles_stream_from_the_input(tmp_path):
    src = _jsonl(tmp_path / "in.jsonl", 3)
    result = run_newsroom(GrowingInput(src), src, tmp_path / "out", n_headlines=0,
                          policy=load_policy(audit_log="off"), progress=False, grounding=False)
    assert result.done == ["a000", "a001", "a002", "a099"]  # the line written while the batch ran was read


def test_bad_inputs_fail_before_any_model_is_loaded(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n\n", encoding="utf-8")
    with pytest.raises(DataError, match="no articles"):
        check_input(tmp_path / "empty.jsonl")
    with pytest.raises(DataError, match="folder of .txt/.md"):
        check_input(tmp_path / "missing")
    check_input(_jsonl(tmp_path / "ok.jsonl", 1))


def test_open_source_builds_a_pool_from_repeated_servers():
    one = open_source(server=["http://a:1"], server_model="m")
    assert isinstance(one, ServerSource)
    pool = open_source(server=["http://a:1", "http://b:1"], server_model="m", per_server=3)
    assert isinstance(pool, ServerPool) and pool.workers == 6
    with pytest.raises(WeaverError, match="per-server"):
        ServerPool(["http://a:1"], "m", per_server=0)


def test_the_cli_takes_repeated_servers(tmp_path, capsys):
    from weaver.cli import main

    src = _jsonl(tmp_path / "in.jsonl", 2)
    code = main(["newsroom", "--server", "http://127.0.0.1:9", "--server", "http://127.0.0.1:9", "--per-server", "2",
                 "--server-model", "m", "--in", str(src), "--out", str(tmp_path / "out"), "--no-grounding"])
    assert code == 3  # nothing listens on port 9: both articles fail with the reason, the digest is still written
    err = capsys.readouterr().err
    assert err.count("cannot reach") == 2 and (tmp_path / "out" / "digest.md").exists()
