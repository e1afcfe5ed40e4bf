"""The apps against a second real OpenAI-compatible server: llama.cpp's own HTTP server (xllamacpp) on the
embedded SmolLM2 GGUF, started here without any weaver code in between. It caps `n` at its parallel slots, so
the newsroom's sampled alternatives exercise ServerSource's one-choice-per-request fallback."""

from __future__ import annotations

import json

import httpx
import pytest

from weaver.apps.adcopy import AdRequest, generate_adcopy
from weaver.apps.newsroom import run_newsroom
from weaver.apps.source import ServerSource, default_params
from weaver.data.records import Record
from weaver.safety import load_policy


@pytest.fixture(scope="module")
def llama_server(llama_cpp_server):
    return llama_cpp_server


def test_llama_cpp_server_refuses_n_above_its_slots(llama_server):
    """The peer behaviour the fallback exists for (if llama.cpp changes it, this says so)."""
    body = {"model": "smollm2", "messages": [{"role": "user", "content": "Hi"}], "n": 3, "max_tokens": 4}
    resp = httpx.post(f"{llama_server}/v1/chat/completions", json=body, timeout=60)
    assert resp.status_code == 400 and "'n'" in resp.json()["error"]["message"]


def test_server_source_asks_one_choice_per_request_where_n_is_refused(llama_server):
    src = ServerSource(llama_server, "smollm2")
    params = default_params("headline", 12, n=3, temperature=0.9, top_p=0.95, seed=5)
    texts = src.generate([Record("a", "", "The harbour reopened on Monday after repairs.", "")], "headline", params)
    assert len(texts) == 1 and len(texts[0]) == 3 and all(isinstance(t, str) for t in texts[0])
    assert src.one_choice_only
    greedy = src.generate([Record("a", "", "The harbour reopened on Monday after repairs.", "")], "headline",
                          default_params("headline", 12))
    assert len(greedy[0]) == 1 and greedy[0][0]


def test_newsroom_and_adcopy_run_on_the_peer_server(llama_server, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"id": f"n{i}", "text": t}) + "\n" for i, t in enumerate([
        "The city council voted on Tuesday to reopen the harbour, closed since the storm in March.",
        "A local bakery won the regional bread award for the third year running."])), encoding="utf-8")
    source = ServerSource(llama_server, "smollm2")
    policy = load_policy(audit_log="off")
    result = run_newsroom(source, src, tmp_path / "out", n_headlines=2, policy=policy, max_new_tokens=16,
                          progress=False, grounding=False)
    assert sorted(result.done) == ["n0", "n1"] and not result.failed
    entry = json.loads((tmp_path / "out" / "articles" / "n0.json").read_text())
    assert entry["summary"] and entry["headline"] and len(entry["alternatives"]) <= 2
    ads = generate_adcopy(source, AdRequest(product="trail running shoes", audience="weekend runners"), n=2,
                          policy=policy, max_new_tokens=24)
    assert ads and all(c.text for c in ads)
