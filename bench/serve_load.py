"""Serving under load, per backend: aggregate tokens/s, p50/p99 latency and errors at 1, 4 and 16 clients.

    .venv/bin/python bench/serve_load.py                       # SmolLM2-135M-Instruct (embedded), both backends
    .venv/bin/python bench/serve_load.py --backends llamacpp --clients 1,4,16 --requests 4 --threads 2
    .venv/bin/python bench/serve_load.py --smoke               # tiny random model, seconds (CI)

The server runs in this process exactly as `weaver serve` builds it (`create_app` + uvicorn on
127.0.0.1, dynamic batching with --max-batch); each client is a thread that sends `--requests` chat
requests one after another over HTTP (greedy, `--max-tokens` new tokens, different writing prompts).
Aggregate tokens/s = completion tokens (from `usage`) / wall time of the level; latency is per request.
Two ratio columns: aggregate tokens/s over the same backend's single-client figure, and over the transformers
backend's figure at the same number of clients (goal: llama.cpp >= 2x transformers at 16 clients, zero
errors). Written to bench/RESULTS.md, section serve_load.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
TOPICS = ["a lighthouse keeper", "a night market", "a lost train ticket", "the first day of school", "a rooftop garden",
          "a summer storm", "an old bridge", "a harbour at dawn", "a chess club", "a bakery's new recipe",
          "a city marathon", "a museum heist", "a village library", "a mountain rescue", "a robot gardener",
          "a winter festival"]


def _tiny_model(out: Path) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                      max_position_embeddings=1024, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    LlamaForCausalLM(cfg).save_pretrained(out)
    AutoTokenizer.from_pretrained(ROOT / "tests" / "fixtures" / "smollm2-tokenizer").save_pretrained(out)
    return out


def _start(settings):
    import httpx
    import uvicorn

    from weaver.serve.app import create_app
    from weaver.serve.protocol import uvicorn_options

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(create_app(settings), **uvicorn_options(settings)))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(3000):
        try:
            if httpx.get(url + "/health", timeout=5).status_code == 200:
                return url, server, thread
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError("the server did not become ready in 300 s")


def _level(url: str, clients: int, requests: int, max_tokens: int) -> dict:
    import httpx

    latencies, tokens, errors = [], [0], [0]
    lock = threading.Lock()
    barrier = threading.Barrier(clients)

    def client(c: int) -> None:
        with httpx.Client(timeout=600) as http:
            barrier.wait()
            for r in range(requests):
                topic = TOPICS[(c * requests + r) % len(TOPICS)]
                body = {"messages": [{"role": "user", "content": f"Write a short story about {topic}."}],
                        "max_tokens": max_tokens, "temperature": 0}
                t = time.perf_counter()
                resp = http.post(url + "/v1/chat/completions", json=body)
                with lock:
                    if resp.status_code == 200:
                        latencies.append(time.perf_counter() - t)
                        tokens[0] += resp.json()["usage"]["completion_tokens"]
                    else:
                        errors[0] += 1

    before = httpx.get(url + "/health").json()["batching"]
    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    after = httpx.get(url + "/health").json()["batching"]
    batches = max(1, after["batches"] - before["batches"])
    lat = sorted(latencies) or [float("nan")]
    p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))]
    return {"clients": clients, "requests": clients * requests, "tokens": tokens[0], "wall": wall,
            "tok_s": tokens[0] / wall, "p50": statistics.median(lat), "p99": p99,
            "errors": errors[0], "mean_batch": (after["rows"] - before["rows"]) / batches}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--clients", default="1,4,16")
    ap.add_argument("--requests", type=int, default=None, help="requests per client (default 4, smoke 2)")
    ap.add_argument("--max-tokens", type=int, default=None, help="new tokens per request (default 64, smoke 16)")
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=None, help="torch / llama.cpp threads (default: their own)")
    ap.add_argument("--backends", default="transformers,llamacpp", help="comma-separated decoding backends")
    ap.add_argument("--smoke", action="store_true", help="tiny random model, a few requests (CI)")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from run import SHARED_NOTE, write_section

    from weaver.serve.settings import ServeSettings

    requests = args.requests or (2 if args.smoke else 4)
    max_tokens = args.max_tokens or (16 if args.smoke else 64)
    results: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        model = str(_tiny_model(Path(tmp) / "tiny")) if args.smoke else args.model
        for backend in args.backends.split(","):
            settings = ServeSettings(model=model, backend=backend, max_batch=args.max_batch, max_queue=256,
                                     threads=args.threads, repetition_penalty=1.0)
            url, server, thread = _start(settings)
            try:
                _level(url, 1, 1, max_tokens)  # warm-up, not counted
                results[backend] = []
                for clients in [int(c) for c in args.clients.split(",")]:
                    results[backend].append(_level(url, clients, requests, max_tokens))
                    print(backend, results[backend][-1], flush=True)
            finally:
                server.should_exit = True
                thread.join(timeout=30)
    cmd = "python bench/serve_load.py " + " ".join(argv if argv is not None else sys.argv[1:])
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    lines = ["## Serving under load (`serve_load.py`)", "", f"Command: `{cmd.strip()}`", "",
             f"Model `{'tiny random (smoke)' if args.smoke else args.model}` (llama.cpp: its GGUF), "
             f"--max-batch {args.max_batch} (llama.cpp: as many parallel slots), threads {args.threads or 'default'}; "
             f"each client sends {requests} chat requests in sequence, greedy, {max_tokens} new tokens max. "
             f"Load average at the end: {load}. " + SHARED_NOTE, "",
             "| backend | clients | requests | completion tokens | aggregate tok/s | x 1 client | x transformers | "
             "p50 latency s | p99 latency s | errors | mean batch rows |", "|---" * 11 + "|"]
    hf = {r["clients"]: r["tok_s"] for r in results.get("transformers", [])}
    for backend, rows in results.items():
        for r in rows:
            vs_hf = f"{r['tok_s'] / hf[r['clients']]:.2f}x" if r["clients"] in hf else "—"
            lines.append(f"| {backend} | {r['clients']} | {r['requests']} | {r['tokens']} | {r['tok_s']:.1f} "
                         f"| {r['tok_s'] / rows[0]['tok_s']:.2f}x | {vs_hf} | {r['p50']:.2f} | {r['p99']:.2f} "
                         f"| {r['errors']} | {r['mean_batch']:.1f} |")
    errors = sum(r["errors"] for rows in results.values() for r in rows)
    if "llamacpp" in results and hf:
        top = results["llamacpp"][-1]
        ratio = top["tok_s"] / hf.get(top["clients"], float("nan"))
        goal = "met" if ratio >= 2 and errors == 0 else "NOT met"
        lines += ["", f"Goal (llama.cpp >= 2x the transformers backend at {top['clients']} clients, zero errors): "
                  f"{goal} ({ratio:.2f}x, {errors} errors)."]
    write_section("serve_load", "\n".join(lines))
    print("\n".join(lines))
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
