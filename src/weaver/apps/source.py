"""Where the apps' text comes from: a local model (any catalog name, HF folder or tuned run) or a server.

    source = open_source(model="smollm2-135m-instruct")                   # local, in-process
    source = open_source(server="http://127.0.0.1:8000", server_model="my-adapter")  # a `weaver serve`
    source = open_source(server=[URL1, URL2], server_model="news", per_server=4)   # a pool, 4 in flight each
    texts = source.generate([record], "headline", SamplingParams(max_new_tokens=32, n=3, temperature=0.8))

Both build prompts only through weaver.data.tasks: the local source renders them with `render_prompt`
(the run's own data settings when the run was tuned for the same task, so a tuned model is asked exactly
as it was trained), the server source sends `build_messages(...)` to the OpenAI-compatible
`/v1/chat/completions` endpoint and the server renders them with its model's template.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from weaver.config import DEFAULT_BACKEND, DataConfig, load_config
from weaver.data.records import Record
from weaver.data.tasks import build_messages, get_task, render_prompt
from weaver.errors import WeaverError, server_error_message
from weaver.generate.sampling import SamplingParams

log = logging.getLogger(__name__)


def data_config_for(task: str, lang: str = "en", run_dir: Path | None = None) -> DataConfig:
    """The DataConfig to render a task's prompts: the run's own when it was tuned for this task.

    Args:
        task: app task (summarize, headline, adcopy, support_reply).
        lang: instruction language when the run does not say.
        run_dir: tuned run directory, if the model is one.
    """
    if run_dir is not None and (run_dir / "config.yaml").is_file():
        try:
            cfg = load_config(run_dir / "config.yaml").data
        except WeaverError as exc:
            log.warning("ignoring %s/config.yaml for prompts: %s", run_dir, exc)
        else:
            if cfg.task == task:
                return cfg
    return DataConfig(task=task, lang=lang)


def default_params(task: str, max_new_tokens: int | None = None, **overrides) -> SamplingParams:
    """SamplingParams with the task's stop strings and max_new_tokens (capped by max_new_tokens), then overrides."""
    t = get_task(task)
    limit = min(t.max_new_tokens, max_new_tokens) if max_new_tokens else t.max_new_tokens
    params = SamplingParams(max_new_tokens=limit, stop=list(t.stop), repetition_penalty=1.1)
    return dataclasses.replace(params, **overrides)


class LocalSource:
    """An in-process model driven by weaver.generate.engine.Generator on either decoding backend.

    Ad-copy ranking's likelihood term needs the model's log-probabilities of whole texts, which only the
    transformers backend gives (`supports_loglik`); on llama.cpp candidates are ranked without it.
    """

    def __init__(self, spec: str, lang: str = "en", batch_size: int = 8, backend: str = DEFAULT_BACKEND,
                 gguf_quant: str = "q8_0"):
        from weaver.generate.engine import load_generator
        from weaver.models.loading import resolve

        self.spec = spec
        self.lang = lang
        self.run_dir = resolve(spec).run_dir
        self.generator, _, model = load_generator(spec, backend, gguf_quant=gguf_quant, batch_size=batch_size)
        self.supports_loglik = model is not None

    @property
    def tokenizer(self):
        return self.generator.tok

    def prompt(self, record: Record, task: str) -> str:
        """The rendered prompt of a record for a task."""
        return render_prompt(self.tokenizer, record, data_config_for(task, self.lang, self.run_dir))

    def generate(self, records: list[Record], task: str, params: SamplingParams) -> list[list[str]]:
        """params.n texts per record, in input order."""
        prompts = [self.prompt(r, task) for r in records]
        return [[c.text for c in cs] for cs in self.generator.generate(prompts, params)]

    def loglik(self, record: Record, task: str, texts: list[str]) -> list[float]:
        """Mean log-probability per token of each text as the reply to the record (length-normalised)."""
        import torch

        tok, model = self.tokenizer, self.generator.model
        prompt_ids = self.generator.backend.encode(self.prompt(record, task))  # a seq2seq source ends in EOS
        seq2seq = model.config.is_encoder_decoder
        out = []
        with torch.inference_mode():
            for text in texts:
                ids = tok(text, add_special_tokens=False)["input_ids"]
                if not ids:
                    out.append(float("-inf"))
                    continue
                if seq2seq:  # the encoder reads the source, the decoder is teacher-forced on the text
                    logits = model(input_ids=torch.tensor([prompt_ids]), labels=torch.tensor([ids])).logits[0]
                else:
                    logits = model(torch.tensor([prompt_ids + ids])).logits[0, len(prompt_ids) - 1 : -1]
                logp = torch.log_softmax(logits.float(), -1).gather(1, torch.tensor(ids)[:, None])
                out.append(float(logp.mean()))
        return out


class ServerSource:
    """A model served by `weaver serve` (or any OpenAI-compatible server), called with httpx."""

    supports_loglik = False
    one_choice_only = False
    """Set when the server refused n > 1: every text is then a request of its own."""

    def __init__(self, url: str, model_id: str, lang: str = "en", api_key: str | None = None, timeout: float = 300):
        import httpx

        self.url = url.rstrip("/")
        self.model_id = model_id
        self.lang = lang
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def generate(self, records: list[Record], task: str, params: SamplingParams) -> list[list[str]]:
        """params.n texts per record from POST /v1/chat/completions.

        A server that takes fewer choices per request than params.n (llama.cpp's caps `n` at its parallel slots;
        others refuse n > 1) answers 400 naming the field `n`: the texts are then asked one request each, seeds
        seed, seed + 1, ..., and so from then on.

        Raises:
            WeaverError: the server is unreachable or answers with an error.
        """
        cfg = DataConfig(task=task, lang=self.lang)
        out = []
        for record in records:
            body = {
                "model": self.model_id, "messages": build_messages(record, cfg), "n": params.n,
                "max_tokens": params.max_new_tokens, "temperature": params.temperature, "top_p": params.top_p,
                "seed": params.seed, "stop": params.stop or None,
            }
            if params.n > 1 and not self.one_choice_only:
                status, reply = self._post(body)
                if status == 400 and _names_field_n(reply):
                    self.one_choice_only = True
                else:
                    out.append(self._texts(status, reply))
                    continue
            if params.n > 1:
                texts = []
                for i in range(params.n):
                    seed = None if params.seed is None else params.seed + i
                    texts += self._texts(*self._post({**body, "n": 1, "seed": seed}))
                out.append(texts)
            else:
                out.append(self._texts(*self._post(body)))
        return out

    def _post(self, body: dict):
        import httpx

        try:
            resp = self.client.post("/v1/chat/completions", json=body)
        except httpx.HTTPError as exc:
            raise WeaverError(f"cannot reach {self.url} ({exc}); is `weaver serve` running there?") from None
        return resp.status_code, resp

    def _texts(self, status: int, resp) -> list[str]:
        if status != 200:
            raise WeaverError(f"the server at {self.url} answered {status}: {server_error_message(resp)}")
        return [str(c["message"]["content"]).strip() for c in resp.json()["choices"]]


def _names_field_n(resp) -> bool:
    """A 400 about the request's `n` (llama.cpp: "Field 'n': Value must be between 1 <= value <= 2")."""
    import re

    pattern = r"(?:field|param(?:eter)?)\W+n\b|\bn\b\W*(?:must|should|is|only)|\bn\s*=\s*1\b"
    return bool(re.search(pattern, server_error_message(resp), re.IGNORECASE))


class ServerPool:
    """Several OpenAI-compatible servers serving the same model id, with at most `per_server` requests in flight
    on each: a call waits for a free slot, so `workers` (servers x per_server) callers keep every server busy and
    none overloaded. Thread-safe; one httpx connection pool per server."""

    supports_loglik = False

    def __init__(self, urls: list[str], model_id: str, lang: str = "en", per_server: int = 1,
                 api_key: str | None = None, timeout: float = 300):
        import queue

        if per_server < 1:
            raise WeaverError(f"--per-server must be at least 1, not {per_server}")
        self.servers = [ServerSource(u, model_id, lang=lang, api_key=api_key, timeout=timeout) for u in urls]
        self.lang, self.model_id, self.workers = lang, model_id, len(urls) * per_server
        self._slots: queue.Queue = queue.Queue()
        for _ in range(per_server):  # interleaved: free slots go round the servers
            for server in self.servers:
                self._slots.put(server)

    def generate(self, records: list[Record], task: str, params: SamplingParams) -> list[list[str]]:
        """As ServerSource.generate, on the next server with a free slot."""
        server = self._slots.get()
        try:
            return server.generate(records, task, params)
        finally:
            self._slots.put(server)


def open_source(model: str | None = None, server: str | list[str] | None = None, server_model: str | None = None,
                lang: str = "en", batch_size: int = 8, backend: str = DEFAULT_BACKEND, gguf_quant: str = "q8_0",
                per_server: int = 1):
    """A LocalSource for --model (on --backend), a ServerSource for one --server/--server-model, or a ServerPool
    for several --server URLs (per_server requests in flight on each).

    Raises:
        WeaverError: --server without --server-model.
    """
    servers = [server] if isinstance(server, str) else list(server or [])
    if servers:
        if not server_model:
            raise WeaverError("--server needs --server-model: the model id the server serves (see GET /v1/models)")
        if len(servers) == 1 and per_server == 1:
            return ServerSource(servers[0], server_model, lang=lang)
        return ServerPool(servers, server_model, lang=lang, per_server=per_server)
    from weaver.models.catalog import DEFAULT_MODEL

    return LocalSource(model or DEFAULT_MODEL, lang=lang, batch_size=batch_size, backend=backend,
                       gguf_quant=gguf_quant)
