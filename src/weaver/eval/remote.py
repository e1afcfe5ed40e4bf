"""Outputs of a model on an OpenAI-compatible server for `weaver eval --server URL`.

    texts, stats = generate_remote("http://gpu1:8000", "news", prompts, params, concurrency=4)

Each prompt, already rendered here by the run's tokenizer and template (weaver.data.tasks), goes as a plain
string to POST /v1/completions, so the served model sees exactly what the local one would. The request holds
the OpenAI fields (model, prompt, max_tokens, temperature, top_p, seed, stop, n=1) and, when the penalty is not
1, `repetition_penalty` (vLLM's extra sampling parameter and weaver serve's) and `repeat_penalty` (llama.cpp's
name); `add_special_tokens: false` keeps vLLM from adding a BOS the template already wrote. Servers ignore the
fields they do not know. How each server defines the penalty is its own (docs/ENGINE.md).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from weaver.errors import WeaverError, server_error_message


def request_body(model_id: str, prompt: str, params) -> dict:
    """The /v1/completions body for one prompt (params: weaver.generate.sampling.SamplingParams)."""
    body = {"model": model_id, "prompt": prompt, "max_tokens": params.max_new_tokens, "n": 1,
            "temperature": params.temperature, "top_p": params.top_p, "seed": params.seed,
            "add_special_tokens": False}
    if params.stop:
        body["stop"] = list(params.stop)
    if params.repetition_penalty != 1.0:
        body["repetition_penalty"] = body["repeat_penalty"] = params.repetition_penalty
    return body


def generate_remote(url: str, model_id: str, prompts: list[str], params, concurrency: int = 4,
                    timeout: float = 300.0, progress=None, api_key: str | None = None,
                    transport=None) -> tuple[list[str], dict]:
    """(one text per prompt, stats: new_tokens, seconds, finish_length) from the server at url.

    transport: an httpx transport instead of the network (tests).

    Raises:
        WeaverError: the server is unreachable, answers an error, or its reply has no text.
    """
    import httpx

    if params.num_beams != 1:
        raise WeaverError("--eval.server: OpenAI-compatible servers take no beam search; set generate.num_beams 1")
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    base = url.rstrip("/")
    with httpx.Client(base_url=base, headers=headers, timeout=timeout, transport=transport,
                      limits=httpx.Limits(max_connections=concurrency)) as client:

        def one(prompt: str) -> tuple[str, str, int]:
            try:
                resp = client.post("/v1/completions", json=request_body(model_id, prompt, params))
            except httpx.HTTPError as exc:
                raise WeaverError(f"--eval.server: cannot reach {base} ({exc})") from None
            if resp.status_code != 200:
                raise WeaverError(f"--eval.server: {base} answered {resp.status_code} for model "
                                  f"{model_id!r}: {server_error_message(resp)}")
            try:
                reply = resp.json()
                choice = reply["choices"][0]
                text = str(choice["text"])
            except (ValueError, KeyError, IndexError, TypeError):
                raise WeaverError(f"--eval.server: {base} sent a completion without choices[0].text: "
                                  f"{resp.text[:200]}") from None
            used = (reply.get("usage") or {}).get("completion_tokens") or 0
            if progress is not None:
                progress(1)
            return text.strip(), str(choice.get("finish_reason") or ""), int(used)

        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            results = list(pool.map(one, prompts))
        seconds = time.perf_counter() - t0
    return [r[0] for r in results], {"new_tokens": sum(r[2] for r in results), "seconds": seconds,
                                     "finish_length": sum(r[1] == "length" for r in results)}
