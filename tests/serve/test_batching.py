"""16 concurrent clients all succeed, share forward passes, and get exactly what they would get alone."""

from __future__ import annotations

import threading

import httpx

PROMPTS = [f"Story {i}: the {word}" for i, word in enumerate(
    ["river", "market", "train", "school", "garden", "storm", "bridge", "harbour"])]


def _requests(base_id: str) -> list[dict]:
    # half to the base model, half to an adapter: a batch must never mix them
    # the server's default repetition penalty (1.1) applies: a padded batch row must still equal the row alone
    return [{"model": base_id if i % 2 else "summary", "prompt": p, "max_tokens": 12, "temperature": 0}
            for i, p in enumerate(PROMPTS * 2)]


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


def test_padded_rows_equal_rows_alone_under_the_repetition_penalty(tiny_model_dir):
    """A padded batch row equals the row alone under a strong repetition penalty, even when the pad id is the
    token the reply starts with (the server decodes with the engine's padding-blind penalty)."""
    from weaver.generate.rows import BatchParams, Row
    from weaver.generate.transformers_backend import TransformersBackend
    from weaver.serve.settings import ServeSettings

    backend = TransformersBackend(ServeSettings(model=str(tiny_model_dir), threads=1))
    backend.load()
    short = backend.tokenizer("Hi", add_special_tokens=False)["input_ids"]
    long = backend.tokenizer("A much longer prompt about the river market and the train", add_special_tokens=False)[
        "input_ids"]
    params = BatchParams(temperature=0.0, repetition_penalty=3.0)

    def run(prompts):
        rows = [Row(list(p), 12) for p in prompts]
        backend.generate(rows, params, None)
        return [list(r.decoder.ids) for r in rows]

    alone = run([short])[0]
    # pad with the very token the short prompt's reply starts with: a penalty that sees pads would avoid it
    backend.tokenizer.pad_token_id = alone[0]
    assert run([short, long])[0] == alone
