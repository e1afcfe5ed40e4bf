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


def _complete(client, base: str, body: dict, what: str) -> dict:
    """One POST /v1/completions of body (request_body's): {text, finish_reason, completion_tokens, prompt_tokens}.

    Raises:
        WeaverError: the server is unreachable, answers an error, or its reply has no text (`what` names the option).
    """
    import httpx

    try:
        resp = client.post("/v1/completions", json=body)
    except httpx.HTTPError as exc:
        raise WeaverError(f"{what}: cannot reach {base} ({exc})") from None
    if resp.status_code != 200:
        raise WeaverError(f"{what}: {base} answered {resp.status_code} for model "
                          f"{body['model']!r}: {server_error_message(resp)}")
    try:
        reply = resp.json()
        choice = reply["choices"][0]
        text = str(choice["text"])
    except (ValueError, KeyError, IndexError, TypeError):
        raise WeaverError(f"{what}: {base} sent a completion without choices[0].text: {resp.text[:200]}") from None
    usage = reply.get("usage") or {}
    return {"text": text.strip(), "finish_reason": str(choice.get("finish_reason") or ""),
            "completion_tokens": int(usage.get("completion_tokens") or 0),
            "prompt_tokens": int(usage.get("prompt_tokens") or 0)}


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

        def one(prompt: str) -> dict:
            result = _complete(client, base, request_body(model_id, prompt, params), "--eval.server")
            if progress is not None:
                progress(1)
            return result

        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            results = list(pool.map(one, prompts))
        seconds = time.perf_counter() - t0
    return [r["text"] for r in results], {"new_tokens": sum(r["completion_tokens"] for r in results),
                                          "seconds": seconds,
                                          "finish_length": sum(r["finish_reason"] == "length" for r in results)}


class RemoteGenerator:
    """Generator.generate on a pool of OpenAI-compatible servers that serve one model id (`weaver data synth
    --server URL --server-model ID`, the URL repeated for a pool): each prompt, rendered here by `tok` exactly as
    for the local model, goes to POST /v1/completions, at most `per_server` requests in flight on each server.
    The n samples of a prompt are n requests with seeds seed, seed + 1, ... (servers cap or refuse n > 1).

        gen = RemoteGenerator(["http://gpu1:8000", "http://gpu2:8000"], "news", tok, per_server=8)
        outs = gen.generate(prompts, SamplingParams(n=4, temperature=0.8))   # [[Completion] * 4 per prompt]

    Raises (generate): WeaverError naming `what` when a server is unreachable or answers an error.
    """

    def __init__(self, urls: list[str], model_id: str, tok, per_server: int = 1, timeout: float = 300.0,
                 api_key: str | None = None, what: str = "--server", transport=None):
        import queue

        import httpx

        if not urls:
            raise WeaverError(f"{what}: give at least one server URL")
        if not model_id:
            raise WeaverError(f"{what} needs --server-model: the model id the servers serve (see GET /v1/models)")
        if per_server < 1:
            raise WeaverError(f"--per-server must be at least 1, not {per_server}")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.tok, self.model_id, self.what = tok, model_id, what
        self.clients = [(u.rstrip("/"), httpx.Client(base_url=u.rstrip("/"), headers=headers, timeout=timeout,
                                                     transport=transport,
                                                     limits=httpx.Limits(max_connections=per_server)))
                        for u in urls]
        self.workers = len(urls) * per_server
        self._slots: queue.Queue = queue.Queue()
        for _ in range(per_server):  # interleaved: free slots go round the servers
            for client in self.clients:
                self._slots.put(client)

    def generate(self, prompts: list[str], params) -> list[list]:
        from weaver.generate.sampling import Completion

        if params.num_beams != 1:
            raise WeaverError(f"{self.what}: OpenAI-compatible servers take no beam search")

        def one(job: tuple[int, int]) -> Completion:
            i, j = job
            base, client = self._slots.get()
            try:
                body = request_body(self.model_id, prompts[i], params)
                body["seed"] = None if params.seed is None else params.seed + j
                r = _complete(client, base, body, self.what)
            finally:
                self._slots.put((base, client))
            return Completion(r["text"], r["prompt_tokens"], r["completion_tokens"],
                              "length" if r["finish_reason"] == "length" else "stop")

        jobs = [(i, j) for i in range(len(prompts)) for j in range(max(1, params.n))]
        with ThreadPoolExecutor(max_workers=min(self.workers, max(1, len(jobs)))) as pool:
            done = list(pool.map(one, jobs))
        n = max(1, params.n)
        return [done[i * n:(i + 1) * n] for i in range(len(prompts))]

    def close(self) -> None:
        for _, client in self.clients:
            client.close()
