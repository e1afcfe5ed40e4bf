"""The safety policy (weaver.safety) applied to the server's HTTP requests, responses and streams.

    policy = server_policy(settings)            # None with --no-safety
    text = gate_prompt(policy, text, "messages")    # redacted text, or APIError 400 content_policy_violation
    filter_response(policy, body, "chat")           # whole responses: redacted, or refusal + content_filter

Streams (`safe_stream_events`) are checked as they arrive, one weaver.safety.StreamGuard per choice: when
a choice's text matches the blocklist, generation is cancelled and the choice ends with a chunk carrying
the refusal and `finish_reason: "content_filter"`.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

from weaver.safety import SafetyPolicy, StreamGuard, load_policy
from weaver.serve import openai_format as fmt
from weaver.serve.errors import APIError, check_unicode
from weaver.serve.scheduler import Job
from weaver.serve.settings import ServeSettings


def server_policy(settings: ServeSettings) -> SafetyPolicy | None:
    """The policy the server enforces: settings.safety_policy (else $WEAVER_SAFETY / packaged), None when off.

    Raises:
        ConfigError: the policy file is missing or invalid.
    """
    return load_policy(settings.safety_policy) if settings.safety else None


def gate_prompt(policy: SafetyPolicy | None, text: str, param: str) -> str:
    """The request text to use: unchanged or redacted.

    Raises:
        APIError: 400 content_policy_violation when the policy blocks the text (or invalid_unicode).
    """
    if policy is None:
        return text
    check_unicode([text])
    decision = policy.check_prompt(text, app="api")
    if decision.blocked:
        raise APIError(400, decision.text, param=param, code="content_policy_violation")
    return decision.text


def filter_response(policy: SafetyPolicy, body: dict, kind: str) -> dict:
    """Apply check_output to every choice of a whole response (in place); blocked ones get content_filter."""
    for choice in body["choices"]:
        holder, key = (choice["message"], "content") if kind == "chat" else (choice, "text")
        decision = policy.check_output(holder[key] or "", app="api")
        holder[key] = decision.text
        if decision.blocked:
            choice["finish_reason"] = "content_filter"
    return body


async def safe_stream_events(policy: SafetyPolicy, meta: fmt.Meta, job: Job, events: asyncio.Queue,
                             cancel: threading.Event, include_usage: bool) -> AsyncIterator[str]:
    """fmt.stream_events with the policy applied; a blocked choice stops the whole stream."""
    guards = [StreamGuard(policy) for _ in job.rows]
    try:
        if meta.kind == "chat":
            for i in range(len(job.rows)):
                yield fmt._chunk(meta, i, role=True)
        blocked = None
        while blocked is None:
            event = await events.get()
            if event[0] == "done":
                break
            i = event[1]
            out = guards[i].push(event[2])
            if guards[i].refusal is not None:
                blocked = i
                cancel.set()
            elif out:
                yield fmt._chunk(meta, i, text=out)
        for i, guard in enumerate(guards):
            if i != blocked:
                rest = guard.flush()
                if rest:
                    yield fmt._chunk(meta, i, text=rest)
        error = None if blocked is not None else (job.error or next(
            (f"generation stopped: {r.finish_reason}" for r in job.rows if r.finish_reason in ("timeout", "error")),
            None))
        if error:
            yield fmt._sse({"error": {"message": error, "type": "server_error", "param": None,
                                      "code": "generation_failed"}})
        else:
            for i, row in enumerate(job.rows):
                if i == blocked:
                    yield fmt._chunk(meta, i, text=guards[i].refusal, finish="content_filter")
                else:
                    reason = "content_filter" if blocked is not None else fmt._finish(row.finish_reason)
                    yield fmt._chunk(meta, i, finish=reason)
            if include_usage:
                meta.usage.completion_tokens = sum(r.completion_tokens for r in job.rows)
                yield fmt._sse({**meta.head(chunk=True), "choices": [], "usage": meta.usage.as_dict()})
        yield "data: [DONE]\n\n"
    finally:
        cancel.set()
