"""The server's loaded model as a text source for the apps: POST /v1/weaver/support and /v1/weaver/apps/* run on it.

    router = support_router(settings.support_index, lambda: ServedSource(state), policy)

`ServedSource.generate(records, task, params)` renders each record with weaver.data.tasks.render_prompt
(the default model's own data settings when it was tuned for that task) and queues the prompts on the
server's batching scheduler, so support replies share batches and the one copy of the weights with every
other request. It blocks until done: call it off the event loop (support_router runs it in a worker thread).
"""

from __future__ import annotations

import threading
import time

from weaver.config import DataConfig
from weaver.data.records import Record
from weaver.data.tasks import render_prompt
from weaver.generate.rows import BatchParams, Row
from weaver.generate.sampling import SamplingParams
from weaver.serve.errors import APIError
from weaver.serve.scheduler import Job


class ServedSource:
    """Generates with the server's default model through its scheduler (the apps' text-source interface)."""

    supports_loglik = False

    def __init__(self, state, model: str | None = None, lang: str = "en"):
        self.state = state
        self.model = model
        self.lang = lang

    def _prompt_ids(self, record: Record, task: str, model_id: str) -> list[int]:
        backend = self.state.backend
        cfg = backend.data_configs.get(model_id)
        if cfg is None or cfg.task != task:
            cfg = DataConfig(task=task, lang=self.lang)
        prompt = render_prompt(backend.tokenizer, record, cfg)
        return backend.encode(prompt)

    def generate(self, records: list[Record], task: str, params: SamplingParams) -> list[list[str]]:
        """params.n texts per record, in input order.

        Raises:
            APIError: 503 while loading, 400 when a prompt fills the context window, 429 queue full,
                500 when generation failed, 504 on timeout.
        """
        state = self.state
        state.require_ready()
        model_id, adapter = state.adapter_for(self.model)
        settings, window = state.settings, state.backend.context_window
        deadline = time.monotonic() + settings.request_timeout_s
        state.scheduler.check_room()  # a full queue answers 429 (QueueFull) before any rendering or tokenizing
        rows = []
        for record in records:
            ids = self._prompt_ids(record, task, model_id)
            if len(ids) >= window:
                raise APIError(400, f"the {task} prompt has {len(ids)} tokens, which fills the model's context "
                                    f"window of {window} tokens" + ("; ask with fewer passages (k)"
                                                                    if task == "support_reply" else ""),
                               param="k" if task == "support_reply" else None, code="context_length_exceeded")
            budget = min(params.max_new_tokens, window - len(ids))
            rows += [Row(ids, budget, list(params.stop), deadline=deadline) for _ in range(params.n)]
        done = threading.Event()
        batch = BatchParams(params.temperature, params.top_p, params.repetition_penalty, params.seed)
        job = Job(rows, adapter, batch, on_done=lambda job: done.set())
        state.scheduler.submit(job)  # QueueFull -> 429 (serve.errors)
        if not done.wait(settings.request_timeout_s + 30):
            for row in rows:
                row.cancel.set()
            raise APIError(504, "the request timed out waiting for the model", code="timeout")
        if job.error:
            raise APIError(500, job.error, code="generation_failed", type_="server_error")
        if any(r.finish_reason == "timeout" for r in rows):
            raise APIError(504, f"the request took longer than the server's limit of {settings.request_timeout_s:g} s",
                           code="timeout")
        n = params.n
        return [[r.text for r in rows[i * n : (i + 1) * n]] for i in range(len(records))]
