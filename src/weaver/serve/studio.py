"""The writer's studio API: what the page at / records (requests, drafts, choices, edits) and its history.

    POST /v1/weaver/feedback  {"type": "request", "view": "write", "task": "headline", "model": "news",
                               "fields": {"input": "..."}, "drafts": [{"text": "...", "model": "news"}],
                               "blind": false}                                    -> {"id": "<request id>", ...}
    POST /v1/weaver/feedback  {"type": "draft", "request_id": "...", "text": "...", "model": "news"}
                                                          (a regenerated draft)   -> {"draft": 3, ...}
    POST /v1/weaver/feedback  {"type": "event", "request_id": "...", "kind": "choose", "draft": 0}
                              (kinds: choose, edit + text, rate + value 1-5, thumbs_down, sent + text)
    GET  /v1/weaver/history?limit=50&view=newsroom   -> {"object": "list", "data": [request, ...]} newest first
    GET  /v1/weaver/history/{id}                      -> one request: drafts, events, chosen, final
    POST /v1/weaver/digest    {"format": "md"|"html"|"jsonl", "articles": [{"id", "title", "summary", "headline",
                               "alternatives"}]}   -> the newsroom digest file (weaver.apps.newsroom.write_digest)
    GET  /v1/weaver/studio                            -> {"recording": bool, "support": bool, "base_model": id}

The page posts a request once its drafts have finished streaming, then one event per action. Every text is
checked again by the server's safety policy before it is stored (the packaged policy when the server runs
with --no-safety): PII is stored redacted and blocked text is refused (400), so the store never holds what
the policy removes; the API key is never stored. Which model wrote a draft is the server's word: `is_base`
comes from the served model ids, not from the page. The store is weaver.apps.feedback.FeedbackStore at
`--studio-db` (default $WEAVER_HOME/studio.sqlite, opened on first use; `--studio-db none` records nothing
and these routes answer 404). Bodies are limited to FEEDBACK_MAX_BYTES, fields by the schemas below.
"""

from __future__ import annotations

import threading
from typing import Annotated, Literal

import anyio
from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from weaver.apps.feedback import EVENTS, Draft, FeedbackStore, default_path
from weaver.errors import WeaverError
from weaver.serve.errors import APIError, check_unicode, key_dependency

FEEDBACK_MAX_BYTES = 512_000
"""Largest POST /v1/weaver/feedback body (an article and eight drafts fit many times over)."""
MAX_TEXT = 100_000
MAX_DRAFTS = 32
VIEWS = ("write", "newsroom", "adcopy", "support")

Text = Annotated[str, StringConstraints(max_length=MAX_TEXT)]
ModelId = Annotated[str, StringConstraints(min_length=1, max_length=200)]
RequestId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DraftIn(_Strict):
    text: Text = Field(..., description="The draft as the page received it.")
    model: ModelId | None = Field(None, description="Served model id that wrote it (default: the request's).")


class RequestIn(_Strict):
    type: Literal["request"]
    view: Literal[VIEWS] = "write"
    task: str = Field(..., min_length=1, max_length=64, description="A task from GET /v1/weaver/tasks.")
    model: ModelId | None = None
    fields: dict[Annotated[str, StringConstraints(min_length=1, max_length=64)], Text] = Field(
        default_factory=dict, max_length=20, description="The request's fields (input, title, product, ...).")
    drafts: list[DraftIn] = Field(..., min_length=1, max_length=MAX_DRAFTS)
    blind: bool = Field(False, description="Drafts of the tuned model and its base shown without labels.")


class DraftAdd(_Strict):
    type: Literal["draft"]
    request_id: RequestId
    text: Text
    model: ModelId | None = None


class EventIn(_Strict):
    type: Literal["event"]
    request_id: RequestId
    kind: Literal[EVENTS]
    draft: int | None = Field(None, ge=0, lt=MAX_DRAFTS * 4)
    text: Text | None = None
    value: float | None = Field(None, ge=1, le=5)


class DigestArticle(_Strict):
    id: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    title: Annotated[str, StringConstraints(max_length=2000)] = ""
    source: Annotated[str, StringConstraints(max_length=2000)] = "studio"
    summary: Text = ""
    headline: Text = ""
    alternatives: list[Text] = Field(default_factory=list, max_length=20)


class DigestIn(_Strict):
    format: Literal["md", "html", "jsonl"] = "md"
    articles: list[DigestArticle] = Field(..., min_length=1, max_length=200)


Feedback = Annotated[RequestIn | DraftAdd | EventIn, Field(discriminator="type")]


async def _body_limit(request: Request) -> None:
    """413 for a feedback body over FEEDBACK_MAX_BYTES (the server-wide limit is larger)."""
    if len(await request.body()) > FEEDBACK_MAX_BYTES:
        raise APIError(413, f"a feedback body may have at most {FEEDBACK_MAX_BYTES} bytes",
                       code="request_too_large")


class Studio:
    """The store (opened on first use), the policy texts pass before storing, and one lock around both."""

    def __init__(self, state):
        self.state = state
        setting = state.settings.studio_db
        self.path = None if (setting or "").lower() == "none" else (setting or str(default_path()))
        self.lock = threading.Lock()
        self._store: FeedbackStore | None = None
        self._policy = None

    @property
    def store(self) -> FeedbackStore:
        if self.path is None:
            raise APIError(404, "this server records nothing (weaver serve --studio-db none)",
                           code="studio_off")
        if self._store is None:
            try:
                self._store = FeedbackStore(self.path)
            except WeaverError as exc:
                raise APIError(500, f"the studio store cannot be opened: {exc}", code="studio_store",
                               type_="server_error") from None
        return self._store

    def policy(self):
        if self._policy is None:
            from weaver.safety import load_policy

            self._policy = self.state.policy or load_policy(self.state.settings.safety_policy)
        return self._policy

    def clean(self, text: str, param: str, prompt: bool = False) -> str:
        """The text as the safety policy lets it be stored (redacted); 400 when the policy blocks it."""
        check_unicode([text])
        policy = self.policy()
        decision = policy.check_prompt(text, app="studio") if prompt else policy.check_output(text, app="studio")
        if decision.blocked:
            raise APIError(400, f"{param} is refused by the safety policy and was not stored", param=param,
                           code="content_policy_violation")
        return decision.text

    def draft(self, text: str, model: str | None, param: str) -> Draft:
        """A Draft whose is_base the served model ids decide."""
        ids = self.state.backend.model_ids
        if model is not None and model not in ids:
            raise APIError(400, f"{param}: {model!r} is not a served model ({', '.join(ids)})", param=param,
                           code="model_not_found")
        is_base = model is not None and ids[model] is None
        return Draft(self.clean(text, param), model, is_base)

    def record(self, body) -> dict:
        """Store one feedback body; returns the request as stored."""
        from weaver.data.tasks import TASKS

        self.state.require_ready()
        if isinstance(body, RequestIn):
            if body.task not in TASKS:
                raise APIError(400, f"unknown task {body.task!r}; tasks: {', '.join(TASKS)}", param="task")
            fields = {k: self.clean(v, f"fields.{k}", prompt=True) for k, v in body.fields.items()}
            drafts = [self.draft(d.text, d.model or body.model, f"drafts.{i}") for i, d in enumerate(body.drafts)]
            with self.lock:
                rid = self.store.add_request(body.task, drafts, fields, model=body.model, view=body.view,
                                             blind=body.blind)
                return self.store.request(rid)
        try:
            if isinstance(body, DraftAdd):
                draft = self.draft(body.text, body.model, "text")
                with self.lock:
                    index = self.store.add_draft(body.request_id, draft)
                    return {**self.store.request(body.request_id), "draft": index}
            text = None if body.text is None else self.clean(body.text, "text")
            with self.lock:
                self.store.add_event(body.request_id, body.kind, body.draft, text, body.value)
                return self.store.request(body.request_id)
        except WeaverError as exc:
            code = "not_found" if str(exc).startswith("unknown request") else "invalid_value"
            raise APIError(404 if code == "not_found" else 400, str(exc), code=code) from None

    def history(self, limit: int, view: str | None) -> dict:
        with self.lock:
            return {"object": "list", "data": self.store.history(limit, view)}

    def one(self, request_id: str) -> dict:
        with self.lock:
            try:
                return self.store.request(request_id)
            except WeaverError as exc:
                raise APIError(404, str(exc), code="not_found") from None


def digest(body: DigestIn) -> Response:
    """The newsroom digest of the articles as the editor left them, written by weaver.apps.newsroom.write_digest
    (the HTML escapes every text), or one JSON line per article."""
    import json
    import tempfile
    from pathlib import Path

    from weaver.apps.newsroom import write_digest

    entries = [a.model_dump() for a in body.articles]
    if body.format == "jsonl":
        text = "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries)
        return Response(text, media_type="application/jsonl; charset=utf-8")
    with tempfile.TemporaryDirectory(prefix="weaver-digest-") as tmp:
        write_digest(Path(tmp), entries, {})
        text = (Path(tmp) / f"digest.{body.format}").read_text(encoding="utf-8")
    media = "text/markdown" if body.format == "md" else "text/html"
    return Response(text, media_type=f"{media}; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="digest.{body.format}"'})


def studio_router(state) -> APIRouter:
    """The studio's routes for a weaver.serve.app.ServerState, behind the server's API key."""
    studio = Studio(state)
    router = APIRouter(prefix="/v1/weaver", dependencies=[key_dependency(state.settings.api_key)])

    @router.get("/studio")
    def info():
        state.require_ready()
        ids = state.backend.model_ids
        return {"object": "weaver.studio", "recording": studio.path is not None,
                "support": bool(state.settings.support_index),
                "base_model": next((m for m, adapter in ids.items() if adapter is None), None)}

    @router.post("/feedback", dependencies=[Depends(_body_limit)])
    async def feedback(body: Feedback):
        return await anyio.to_thread.run_sync(studio.record, body)

    @router.post("/digest", dependencies=[Depends(_body_limit)])
    async def digest_route(body: DigestIn):
        return await anyio.to_thread.run_sync(digest, body)

    @router.get("/history")
    async def history(limit: int = Query(50, ge=1, le=500), view: Literal[VIEWS] | None = None):
        return await anyio.to_thread.run_sync(studio.history, limit, view)

    @router.get("/history/{request_id}")
    async def one(request_id: str):
        return await anyio.to_thread.run_sync(studio.one, request_id)

    return router
