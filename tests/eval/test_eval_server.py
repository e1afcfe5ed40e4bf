"""`weaver eval --server URL`: outputs from an OpenAI-compatible server (llama.cpp's own here, and a mock for the
request shape and errors), prompts rendered here, perplexity computed here."""

from __future__ import annotations

import json

import httpx
import pytest

from weaver.config import load_config
from weaver.errors import ConfigError, WeaverError
from weaver.eval.remote import generate_remote, request_body
from weaver.eval.runner import evaluate
from weaver.generate.sampling import SamplingParams

RECORDS = [{"id": str(i), "instruction": "", "input": text, "output": ref} for i, (text, ref) in enumerate([
    ("#Person1#: The train is late again.\n#Person2#: Let's take the bus.", "They take the bus."),
    ("#Person1#: Lunch at noon?\n#Person2#: Sure, the usual place.", "They agree on lunch."),
    ("#Person1#: The meeting moved to Friday.", "The meeting is on Friday.")])]


def _cfg(model_dir, tmp_path, *extra):
    test = tmp_path / "test.jsonl"
    test.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    return load_config(None, ["--model.name", str(model_dir), "--data.test", str(test), "--eval.out_dir",
                              str(tmp_path / "eval"), "--generate.max_new_tokens", "12", "--eval.bootstrap", "200",
                              "--eval.semantic", "false", "--eval.grounding", "false", *extra])


def test_both_models_served_give_the_same_greedy_text(llama_cpp_server, tiny_model_dir, tmp_path):
    """The tiny folder only lends its tokenizer (SmolLM2's, as the served GGUF's): nothing is loaded here."""
    cfg = _cfg(tiny_model_dir, tmp_path, "--eval.base", str(tiny_model_dir), "--eval.server", llama_cpp_server,
               "--eval.server_model", "smollm2", "--eval.base_server_model", "smollm2", "--eval.perplexity", "false",
               "--eval.server_concurrency", "1")
    report = evaluate(cfg)
    rows = [json.loads(line) for line in (tmp_path / "eval" / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(r["tuned"] for r in rows)
    # one served model, greedy, same prompts, one request at a time (llama.cpp's batched greedy text can depend on
    # which requests share a batch, so with concurrency above 1 the two sides may differ)
    assert [r["tuned"] for r in rows] == [r["base"] for r in rows]
    speed = json.loads((tmp_path / "eval" / "report.json").read_text())["speed"]
    assert speed["tuned"]["backend"].startswith(f"server {llama_cpp_server}") and speed["tuned"]["new_tokens"] > 0
    assert report.metrics["rougeL"]["delta"] == 0


def test_a_served_model_against_a_local_base_with_perplexity(llama_cpp_server, tiny_model_dir, tmp_path):
    cfg = _cfg(tiny_model_dir, tmp_path, "--eval.base", str(tiny_model_dir), "--eval.server", llama_cpp_server,
               "--eval.server_model", "smollm2")
    report = evaluate(cfg)
    data = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert data["speed"]["base"]["backend"] in ("transformers", "llamacpp")  # decoded here, on generate.backend
    assert data["speed"]["tuned"]["backend"].startswith("server")
    assert "perplexity" in report.metrics  # the tuned side's perplexity is computed here from model.name


def test_request_shape_and_errors():
    params = SamplingParams(max_new_tokens=8, temperature=0.0, top_p=1.0, repetition_penalty=1.1, stop=["\n"], seed=3)
    body = request_body("news", "PROMPT", params)
    assert body == {"model": "news", "prompt": "PROMPT", "max_tokens": 8, "n": 1, "temperature": 0.0, "top_p": 1.0,
                    "seed": 3, "add_special_tokens": False, "stop": ["\n"], "repetition_penalty": 1.1,
                    "repeat_penalty": 1.1}
    plain = request_body("news", "P", SamplingParams(max_new_tokens=8, repetition_penalty=1.0))
    assert "repetition_penalty" not in plain and "stop" not in plain

    def handler(request):
        if json.loads(request.content)["model"] == "missing":
            return httpx.Response(404, json={"error": {"message": "model 'missing' not found"}})
        return httpx.Response(200, json={"choices": [{"text": " ok ", "finish_reason": "length"}],
                                         "usage": {"completion_tokens": 8}})

    texts, stats = generate_remote("http://srv", "news", ["a", "b"], params, transport=httpx.MockTransport(handler))
    assert texts == ["ok", "ok"] and stats["new_tokens"] == 16 and stats["finish_length"] == 2
    with pytest.raises(WeaverError, match="answered 404 for model 'missing': model 'missing' not found"):
        generate_remote("http://srv", "missing", ["a"], params, transport=httpx.MockTransport(handler))
    with pytest.raises(WeaverError, match="beam"):
        generate_remote("http://srv", "news", ["a"], SamplingParams(num_beams=2))
    with pytest.raises(ConfigError, match="server_model"):
        load_config(None, ["--eval.server", "http://srv"])
    with pytest.raises(ConfigError, match="set it"):
        load_config(None, ["--eval.base_server_model", "b"])


def test_a_remote_generator_spreads_samples_over_a_pool_and_bounds_each_server():
    import threading
    import time

    from weaver.eval.remote import RemoteGenerator

    lock, busy, peak, seeds = threading.Lock(), {}, {}, []

    def handler(request):
        host, body = request.url.host, json.loads(request.content)
        with lock:
            busy[host] = busy.get(host, 0) + 1
            peak[host] = max(peak.get(host, 0), busy[host])
            seeds.append((body["prompt"], body["seed"]))
        time.sleep(0.02)
        with lock:
            busy[host] -= 1
        if body["prompt"] == "broken":
            return httpx.Response(500, json={"error": {"message": "out of memory"}})
        return httpx.Response(200, json={"choices": [{"text": f" {body['prompt']}/{body['seed']} ",
                                                      "finish_reason": "length" if body["seed"] else "stop"}],
                                         "usage": {"completion_tokens": 3, "prompt_tokens": 5}})

    gen = RemoteGenerator(["http://a", "http://b/"], "news", tok=None, per_server=2,
                          transport=httpx.MockTransport(handler))
    outs = gen.generate(["p0", "p1", "p2"], SamplingParams(n=3, seed=10, temperature=0.8))
    assert [[c.text for c in out] for out in outs] == [[f"p{i}/{s}" for s in (10, 11, 12)] for i in range(3)]
    assert all(c.finish_reason == "length" and c.completion_tokens == 3 for out in outs for c in out)
    assert sorted(seeds) == sorted((f"p{i}", s) for i in range(3) for s in (10, 11, 12))
    assert set(peak) == {"a", "b"} and max(peak.values()) <= 2  # both servers, never more than per_server each
    with pytest.raises(WeaverError, match="--server: http://[ab] answered 500 for model 'news': out of memory"):
        gen.generate(["broken"], SamplingParams(n=1))
    gen.close()
    with pytest.raises(WeaverError, match="--per-server"):
        RemoteGenerator(["http://a"], "news", tok=None, per_server=0)
