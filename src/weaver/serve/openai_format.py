"""OpenAI response shapes: whole responses, server-sent-event chunks and the model list.

Chat responses (`chat.completion` / `chat.completion.chunk`) are used for /v1/chat/completions and
/v1/weaver/{task}; text completions (`text_completion`) for /v1/completions. A stream ends with
`data: [DONE]`; an error that happens mid-stream (a timeout) is sent as an `{"error": ...}` event first.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from fastapi.responses import StreamingResponse

from weaver.serve.scheduler import Job


@dataclass
class Usage:
    prompt_tokens: int
    completion_tokens: int = 0

    def as_dict(self) -> dict:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens}


@dataclass
class Meta:
    """What every chunk of one response repeats: kind (chat | text), model id, id, creation time."""

    kind: str
    model: str
    usage: Usage
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:24])
    created: int = field(default_factory=lambda: int(time.time()))

    def head(self, chunk: bool) -> dict:
        if self.kind == "chat":
            obj, prefix = ("chat.completion.chunk" if chunk else "chat.completion"), "chatcmpl-"
        else:
            obj, prefix = "text_completion", "cmpl-"
        return {"id": prefix + self.id, "object": obj, "created": self.created, "model": self.model}


def _finish(reason: str | None) -> str:
    return "length" if reason == "length" else "stop"


def full_response(meta: Meta, job: Job) -> dict:
    """The whole (non-streamed) response body with usage."""
    choices = []
    for i, row in enumerate(job.rows):
        if meta.kind == "chat":
            choice = {"index": i, "message": {"role": "assistant", "content": row.text}}
        else:
            choice = {"index": i, "text": row.text}
        choices.append({**choice, "finish_reason": _finish(row.finish_reason), "logprobs": None})
    meta.usage.completion_tokens = sum(r.completion_tokens for r in job.rows)
    return {**meta.head(chunk=False), "choices": choices, "usage": meta.usage.as_dict()}


def _chunk(meta: Meta, index: int, text: str | None = None, finish: str | None = None, role: bool = False) -> str:
    if meta.kind == "chat":
        delta = {"role": "assistant", "content": ""} if role else ({"content": text} if text is not None else {})
        choice = {"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}
    else:
        choice = {"index": index, "text": text or "", "finish_reason": finish, "logprobs": None}
    return _sse({**meta.head(chunk=True), "choices": [choice]})


def _sse(obj: dict) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


async def stream_events(meta: Meta, job: Job, events: asyncio.Queue, cancel: threading.Event,
                        include_usage: bool) -> AsyncIterator[str]:
    """SSE lines for one job; when the client goes away (the task is cancelled) generation is cancelled."""
    try:
        if meta.kind == "chat":
            for i in range(len(job.rows)):
                yield _chunk(meta, i, role=True)
        while True:
            event = await events.get()
            if event[0] == "done":
                break
            yield _chunk(meta, event[1], text=event[2])
        error = job.error or next((f"generation stopped: {r.finish_reason}" for r in job.rows
                                   if r.finish_reason in ("timeout", "error")), None)
        if error:
            yield _sse({"error": {"message": error, "type": "server_error", "param": None,
                                  "code": "generation_failed"}})
        else:
            for i, row in enumerate(job.rows):
                yield _chunk(meta, i, finish=_finish(row.finish_reason))
            if include_usage:
                meta.usage.completion_tokens = sum(r.completion_tokens for r in job.rows)
                yield _sse({**meta.head(chunk=True), "choices": [], "usage": meta.usage.as_dict()})
        yield "data: [DONE]\n\n"
    finally:
        cancel.set()


def sse_response(gen: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(gen, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def task_info(task) -> dict:
    """A task's public description for the page and clients."""
    return {"name": task.name, "fields": list(task.fields), "description": task.description,
            "max_tokens": task.max_new_tokens, "stop": list(task.stop)}


def models_list(backend) -> dict:
    """GET /v1/models: every served id; tuned runs say which task they were tuned for."""
    data = []
    for model_id, adapter in backend.model_ids.items():
        entry = {"id": model_id, "object": "model", "created": 0, "owned_by": "weaver",
                 "weaver": {"kind": "adapter" if adapter else "base"}}
        cfg = backend.data_configs.get(model_id)
        if cfg is not None:
            entry["weaver"]["task"] = cfg.task
        data.append(entry)
    return {"object": "list", "data": data}
