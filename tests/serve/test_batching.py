"""16 concurrent clients all succeed, share forward passes, and get exactly what they would get alone."""

from __future__ import annotations

import threading

import httpx

PROMPTS = [f"Story {i}: the {word}" for i, word in enumerate(
    ["river", "market", "train", "school", "garden", "storm", "bridge", "harbour"])]


def _requests(base_id: str) -> list[dict]:
    # half to the base model, half to an adapter: a batch must never mix them
    return [{"model": base_id if i % 2 else "summary", "prompt": p, "max_tokens": 12, "temperature": 0,
             "repetition_penalty": 1.0} for i, p in enumerate(PROMPTS * 2)]


def test_sixteen_concurrent_clients_are_batched_and_correct(client, server, auth, tiny_model_dir):
    bodies = _requests(tiny_model_dir.name)
    alone = [httpx.post(server + "/v1/completions", json=b, headers=auth, timeout=60).json()["choices"][0]["text"]
             for b in bodies]
    before = httpx.get(server + "/health").json()["batching"]
    barrier = threading.Barrier(len(bodies))
    results: dict[int, httpx.Response] = {}

    def call(i: int) -> None:
        barrier.wait()
        results[i] = httpx.post(server + "/v1/completions", json=bodies[i], headers=auth, timeout=120)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [results[i].status_code for i in range(len(bodies))] == [200] * len(bodies)
    assert [results[i].json()["choices"][0]["text"] for i in range(len(bodies))] == alone
    after = httpx.get(server + "/health").json()["batching"]
    batches = after["batches"] - before["batches"]
    rows = after["rows"] - before["rows"]
    assert rows == len(bodies)
    assert batches < len(bodies)  # shared forward passes, not one request at a time
    assert after["max_batch_rows"] > 1
