"""The safety policy (weaver.apps.safety) applied by the server to every request text and every reply.

    policy = server_policy(settings)            # None with --no-safety
    text = gate_prompt(policy, text, "messages")    # redacted text, or APIError 400 content_policy_violation
    filter_response(policy, body, "chat")           # whole responses: redacted, or refusal + content_filter

Streams (`safe_stream_events`) are checked as they arrive: each choice's accumulated text is matched
against the blocklist on every piece; when it matches, generation is cancelled and the choice ends with a
chunk carrying the refusal and `finish_reason: "content_filter"`. Text is released only up to the last
character that cannot be part of an email or a digit group (a space, punctuation other than . _ % + - @,
a Chinese character) and redacted piece by piece, so PII that itself contains spaces (a phone number
written "555 123 4567") can be split between two released pieces and slip through, as can a run of more
than MAX_HOLD such characters; whole responses have no such gap.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import AsyncIterator

from weaver.apps.safety import PII_KINDS, SafetyPolicy, load_policy
from weaver.serve import openai_format as fmt
from weaver.serve.errors import APIError, check_unicode
from weaver.serve.scheduler import Job
from weaver.serve.settings import ServeSettings

# Characters PII is written with (emails, digit groups); text is released up to the last other character.
_PII_TAIL = re.compile(r"[A-Za-z0-9._%+@\-]*$")
MAX_HOLD = 64
"""A tail of PII characters longer than this is released except its last MAX_HOLD // 2 characters."""


def server_policy(settings: ServeSettings) -> SafetyPolicy | None:
    """The policy the server enforces: settings.safety_policy (else $WEAVER_SAFETY / packaged), None when off.

    Raises:
        ConfigError: the policy file is missing or invalid.
    """
    return load_policy(settings.safety_policy) if settings.safety else None


def permissive_policy() -> SafetyPolicy:
    """A policy that allows everything and logs nothing (for apps called while --no-safety is given)."""
    return SafetyPolicy({"pii": {k: False for k in PII_KINDS}, "audit_log": None}, "<--no-safety>")


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


class StreamGuard:
    """One streamed choice: holds text back to a whitespace boundary, redacts it, spots blocked text."""

    def __init__(self, policy: SafetyPolicy):
        self.policy = policy
        self.text = ""
        self.sent = 0
        self.refusal: str | None = None

    def push(self, piece: str) -> str:
        """Add a piece; returns the (redacted) text to send now, "" when held back or blocked."""
        self.text += piece
        if self.policy.blocked_terms(self.text):
            self.refusal = self.policy.check_output(self.text, app="api").text
            return ""
        end = _PII_TAIL.search(self.text, self.sent).start()
        if len(self.text) - end > MAX_HOLD:
            end = len(self.text) - MAX_HOLD // 2
        return self._release(end) if end > self.sent else ""

    def flush(self) -> str:
        """The rest of the text (redacted); logs the decision on the whole choice."""
        self.policy.check_output(self.text, app="api")
        return self._release(len(self.text))

    def _release(self, end: int) -> str:
        segment, self.sent = self.text[self.sent : end], end
        return self.policy.redact(segment)[0] if segment else ""


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
