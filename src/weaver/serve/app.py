"""The FastAPI app: OpenAI-compatible endpoints, task endpoints and the writer's web page.

    from weaver.serve.app import create_app
    from weaver.serve.settings import ServeSettings
    app = create_app(ServeSettings(model="runs/headline"))   # then: uvicorn.run(app, host="127.0.0.1")

Endpoints: POST /v1/chat/completions, POST /v1/completions, GET /v1/models, POST /v1/weaver/{task},
GET /v1/weaver/tasks, GET /health (503 while the model loads, then 200 with batching counters), and the
page at /. The model loads in a background thread at startup; requests go through the batching
scheduler (scheduler.py), so generation never blocks the event loop, and the rest of a request's CPU work
(the safety policy, rendering, tokenizing) runs in a worker thread. A request text too long to fit the
context window whatever its tokens (`ServerState.max_text_chars`) is refused before any of that work.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from weaver.errors import ConfigError, WeaverError
from weaver.generate.engine import make_backend
from weaver.generate.rows import Backend, BatchParams, Row
from weaver.serve import openai_format as fmt
from weaver.serve.app_routes import apps_router
from weaver.serve.content_filter import filter_response, gate_prompt, safe_stream_events, server_policy
from weaver.serve.errors import (
    APIError,
    BodyLimitMiddleware,
    check_api_key,
    check_unicode,
    install_error_handlers,
    key_dependency,
)
from weaver.serve.explanations import TaskResponse, documented, explain_router, explain_task_response
from weaver.serve.scheduler import Job, Scheduler
from weaver.serve.schemas import ChatRequest, CompletionRequest, SamplingRequest, TaskRequest
from weaver.serve.settings import ServeSettings
from weaver.serve.studio import studio_router

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
PREP_THREADS = 2
"""Requests prepared (safety policy, rendering, tokenizing) in parallel; more wait their turn."""
PAGE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
            "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


class ServerState:
    """The backend, the scheduler and whether the model is loading, ready or failed."""

    def __init__(self, settings: ServeSettings, backend: Backend):
        self.settings = settings
        self.backend = backend
        self.scheduler = Scheduler(backend, settings.max_batch, settings.max_queue, settings.batch_wait_ms / 1000)
        self.status = "loading"
        self.error: str | None = None
        self.policy = server_policy(settings)
        self.max_text_chars = 0
        """Longest request text that could fit the context window: window x the longest token's characters."""
        self.prep_limiter: anyio.CapacityLimiter | None = None
        """Worker threads preparing requests (safety policy, rendering, tokenizing) at once; made on first use."""

    def load(self) -> None:
        """Load the model (runs in a background thread), then start the scheduler."""
        try:
            if not self.backend.model_ids:
                self.backend.plan()
            self.backend.load()
        except WeaverError as exc:
            self.status, self.error = "error", str(exc)
            log.error("model failed to load: %s", exc)
            return
        except Exception as exc:  # noqa: BLE001 - reported by /health instead of killing the server
            self.status, self.error = "error", f"{type(exc).__name__}: {exc}"
            log.exception("model failed to load")
            return
        # A token stands for at most as many characters as its vocabulary entry has (byte-level BPE writes one
        # character per byte, SentencePiece one per character), so a text longer than this cannot fit.
        longest_token = max(map(len, self.backend.tokenizer.get_vocab()), default=1)
        self.max_text_chars = self.backend.context_window * max(1, longest_token)
        self.scheduler.start()
        self.status = "ready"

    def require_ready(self) -> None:
        if self.status == "loading":
            raise APIError(503, "the model is still loading; retry in a few seconds", code="model_loading",
                           type_="server_error")
        if self.status == "error":
            raise APIError(503, f"the model failed to load: {self.error}", code="model_load_failed")

    def adapter_for(self, model_id: str | None) -> tuple[str, str | None]:
        """(model id, adapter name or None for the base) for a request's `model`; 404 when unknown."""
        ids = self.backend.model_ids
        model_id = model_id or self.backend.default_model
        if model_id not in ids:
            raise APIError(404, f"the model {model_id!r} does not exist; served models: {', '.join(ids)}",
                           param="model", code="model_not_found")
        return model_id, ids[model_id]


def _request_text(state: ServerState, text: str, param: str) -> str:
    """A text of the request as the model will see it: refused at once when it cannot fit the context window
    (before the safety policy and the tokenizer spend time on it), then checked by the safety policy."""
    if len(text) > state.max_text_chars:
        raise APIError(400, f"{param} has {len(text)} characters: more than the model's context window of "
                            f"{state.backend.context_window} tokens can hold (at most {state.max_text_chars} "
                            "characters); shorten it", param=param, code="context_length_exceeded")
    return gate_prompt(state.policy, text, param)


def _encode_all(state: ServerState, build_prompts: Callable[[], list[str]]) -> list[list[int]]:
    """Build the request's prompts (safety policy, rendering) and tokenize them; runs in a worker thread."""
    prompts = build_prompts()
    check_unicode(prompts)
    if state.settings.log_prompts:
        log.info("prompts: %r", prompts)
    return [state.backend.encode(p) for p in prompts]


def _max_tokens(state: ServerState, body: SamplingRequest, lengths: list[int], default: int,
                requested: int | None) -> int:
    """The reply budget; 400 when prompt + max_tokens does not fit the context window (never truncated)."""
    window = state.backend.context_window
    longest = max(lengths)
    if requested is not None:
        if longest + requested > window:
            raise APIError(400, f"the prompt has {longest} tokens and max_tokens is {requested}: together they "
                                f"exceed the model's context window of {window} tokens; shorten the prompt or lower "
                                "max_tokens",
                           param="max_tokens", code="context_length_exceeded")
        return requested
    if longest >= window:
        raise APIError(400, f"the prompt has {longest} tokens, which fills the model's context window of {window} "
                            "tokens; shorten the prompt", param="messages", code="context_length_exceeded")
    return min(default, window - longest)


async def _run(state: ServerState, request: Request, body: SamplingRequest, build_prompts: Callable[[], list[str]],
               kind: str, default_max: int, requested_max: int | None, default_temperature: float, stop: list[str]):
    """Build and queue one request's rows (prompts x n) and answer it, streamed or whole.

    build_prompts (the safety policy and rendering) runs in a worker thread with the tokenizer."""
    s = state.settings
    model_id, adapter = state.adapter_for(body.model)
    if body.n > s.max_n:
        raise APIError(400, f"n is {body.n}, more than this server's limit of {s.max_n}", param="n")
    check_unicode(stop)
    state.scheduler.check_room()  # a full queue answers 429 (QueueFull) before any rendering or tokenizing
    # Few threads at a time: CPU-bound Python holds the GIL, and the event loop (/health, streams) needs it too.
    state.prep_limiter = state.prep_limiter or anyio.CapacityLimiter(PREP_THREADS)
    ids = await anyio.to_thread.run_sync(_encode_all, state, build_prompts, limiter=state.prep_limiter)
    max_tokens = _max_tokens(state, body, [len(x) for x in ids], default_max, requested_max)
    temperature = default_temperature if body.temperature is None else body.temperature
    params = BatchParams(temperature, body.top_p, body.repetition_penalty or s.repetition_penalty, body.seed)
    loop = asyncio.get_running_loop()
    events: asyncio.Queue = asyncio.Queue()
    cancel = threading.Event()
    deadline = time.monotonic() + s.request_timeout_s

    def put(event):
        try:
            loop.call_soon_threadsafe(events.put_nowait, event)
        except RuntimeError:  # the event loop is gone (server shutting down)
            cancel.set()

    rows = []
    for p_ids in ids:
        for _ in range(body.n):
            index = len(rows)
            rows.append(Row(p_ids, max_tokens, stop, lambda piece, i=index: put(("text", i, piece)), cancel, deadline))
    job = Job(rows, adapter, params, on_done=lambda job: put(("done",)))
    state.scheduler.submit(job)  # QueueFull -> 429 (serve.errors)
    usage = fmt.Usage(sum(len(x) for x in ids))
    meta = fmt.Meta(kind, model_id, usage)
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        if state.policy is not None:
            return fmt.sse_response(safe_stream_events(state.policy, meta, job, events, cancel, include_usage))
        return fmt.sse_response(fmt.stream_events(meta, job, events, cancel, include_usage))
    await _wait(request, events, cancel, deadline)
    _raise_job_error(job, s)
    response = fmt.full_response(meta, job)
    if state.policy is not None:
        filter_response(state.policy, response, kind)
    return JSONResponse(response)


async def _wait(request: Request, events: asyncio.Queue, cancel: threading.Event, deadline: float) -> None:
    """Wait for the job's done event; a client that hangs up cancels its generation at once."""
    watcher = asyncio.create_task(_cancel_on_disconnect(request, cancel))
    try:
        while True:
            try:
                event = await asyncio.wait_for(events.get(), timeout=1.0)
            except asyncio.TimeoutError:
                if time.monotonic() > deadline + 30:  # the scheduler never picked it up: give up
                    cancel.set()
                    raise APIError(504, "the request timed out waiting for the model", code="timeout") from None
                continue
            if event[0] == "done":
                return
    finally:
        watcher.cancel()


async def _cancel_on_disconnect(request: Request, cancel: threading.Event) -> None:
    """Set `cancel` when the client disconnects. The body has been read, so the next ASGI message the server
    sends is http.disconnect (streamed responses get the same from Starlette's StreamingResponse)."""
    try:
        while (await request.receive())["type"] != "http.disconnect":
            pass
    except Exception:  # noqa: BLE001 - a receive that fails means the connection is gone too
        pass
    cancel.set()


def _raise_job_error(job: Job, s: ServerState | ServeSettings) -> None:
    if job.error:
        raise APIError(500, job.error, code="generation_failed", type_="server_error")
    if any(r.finish_reason == "timeout" for r in job.rows):
        raise APIError(504, f"the request took longer than the server's limit of {s.request_timeout_s:g} s "
                            "(weaver serve --request-timeout)", code="timeout")


def _build_router(state: ServerState) -> APIRouter:
    v1 = APIRouter(prefix="/v1", dependencies=[key_dependency(state.settings.api_key)])

    @v1.get("/models")
    def models():
        state.require_ready()
        return fmt.models_list(state.backend)

    @v1.post("/chat/completions")
    async def chat(body: ChatRequest, request: Request):
        from weaver.data.chat import render_messages

        state.require_ready()

        def prompts() -> list[str]:
            messages = [{"role": "system" if m.role == "developer" else m.role,
                         "content": _request_text(state, m.text(), "messages")} for m in body.messages]
            return [render_messages(state.backend.tokenizer, messages, add_generation_prompt=True)]

        requested = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
        return await _run(state, request, body, prompts, "chat", state.settings.default_max_tokens, requested,
                          1.0, body.stop_list())

    @v1.post("/completions")
    async def completions(body: CompletionRequest, request: Request):
        state.require_ready()
        if any(not p for p in body.prompts()):
            raise APIError(400, "prompt is empty", param="prompt")
        if body.stream and len(body.prompts()) > 1:
            raise APIError(400, "streaming supports one prompt per request", param="prompt")
        return await _run(state, request, body, lambda: [_request_text(state, p, "prompt") for p in body.prompts()],
                          "text", state.settings.default_max_tokens, body.max_tokens, 1.0, body.stop_list())

    @v1.get("/weaver/tasks")
    def tasks():
        from weaver.data.tasks import TASKS

        return {"object": "list", "data": [fmt.task_info(t) for name, t in TASKS.items() if name != "custom"]}

    @v1.post("/weaver/{task}", responses=documented(TaskResponse, "A chat.completion (explain: true adds each "
                                                                  "choice's explanation)."))
    async def weaver_task(task: str, body: TaskRequest, request: Request):
        from weaver.data.tasks import TASKS

        state.require_ready()
        if task not in TASKS:
            raise APIError(404, f"unknown task {task!r}; tasks: {', '.join(TASKS)}", param="task",
                           code="task_not_found")
        model_id, _ = state.adapter_for(body.model)
        if body.explain and body.stream:
            raise APIError(400, "explain needs the whole reply: leave out stream (or set it to false)", param="explain")

        def prompts() -> list[str]:
            fields = {k: _request_text(state, v, k) if isinstance(v, str) else v for k, v in body.fields().items()}
            return [_task_prompt(state, task, model_id, body, fields)]

        default_t = 0.0 if body.n == 1 else 0.8
        stop = body.stop_list() or list(TASKS[task].stop)
        response = await _run(state, request, body, prompts, "chat", TASKS[task].max_new_tokens, body.max_tokens,
                              default_t, stop)
        if body.explain:
            return await anyio.to_thread.run_sync(explain_task_response, response, body.fields(), body.lang)
        return response

    return v1


def _task_prompt(state: ServerState, task: str, model_id: str, body: TaskRequest, fields: dict) -> str:
    """The prompt the model was tuned with: the run's data config when it was tuned for this task."""
    from weaver.config import DataConfig
    from weaver.data.tasks import record_from_fields, render_prompt

    data_cfg = state.backend.data_configs.get(model_id)
    try:
        if data_cfg is None or data_cfg.task != task:
            data_cfg = DataConfig(task=task, lang=body.lang or (data_cfg.lang if data_cfg else "en"))
        elif body.lang and body.lang != data_cfg.lang:
            data_cfg = dataclasses.replace(data_cfg, lang=body.lang, instruction=None)
        record = record_from_fields(task, fields, data_cfg)
        return render_prompt(state.backend.tokenizer, record, data_cfg)
    except WeaverError as exc:
        raise APIError(400, str(exc), code="invalid_fields") from None


def _support_router(state: ServerState) -> APIRouter:
    """POST /v1/weaver/support (weaver.apps.support) on the served model, behind the API key."""
    from weaver.safety import permissive_policy
    from weaver.serve.app_routes import support_router
    from weaver.serve.source import ServedSource

    if not Path(state.settings.support_index).expanduser().is_file():
        raise ConfigError(f"--support-index {state.settings.support_index!r} does not exist; build one with "
                          "`weaver support index --kb FAQ --out INDEX`")
    router = APIRouter(dependencies=[key_dependency(state.settings.api_key)])
    router.include_router(support_router(state.settings.support_index, lambda: ServedSource(state),
                                      state.policy or permissive_policy()))
    return router


def create_app(settings: ServeSettings, backend: Backend | None = None, load_in_background: bool = True) -> FastAPI:
    """Build the server app.

    Args:
        settings: what to serve and the limits to enforce.
        backend: a model backend (default: the one named by settings.backend).
        load_in_background: load the model in a thread at startup (503 until ready); False loads it first.
    Returns:
        The FastAPI app (run it with uvicorn).
    Raises:
        ConfigError: an unknown backend.
    """
    state = ServerState(settings, backend or make_backend(settings))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if load_in_background:
            threading.Thread(target=state.load, name="weaver-load", daemon=True).start()
        else:
            await run_in_threadpool(state.load)
        yield
        state.scheduler.stop()

    # With an API key, the schema is served by a keyed route below instead of FastAPI's open default.
    keyed = settings.api_key is not None
    app = FastAPI(title="Weaver", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None if keyed else "/openapi.json")
    app.state.weaver = state
    install_error_handlers(app)
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_body_bytes, read_timeout_s=settings.read_timeout_s)
    if settings.support_index:  # before /v1/weaver/{task}, which would otherwise take "support" as a task
        app.include_router(_support_router(state))
    app.include_router(apps_router(state))
    app.include_router(studio_router(state))  # the studio's /v1/weaver/feedback, /history, /digest, /studio
    app.include_router(explain_router(state))  # POST /v1/weaver/explain (the studio's Sources panel)
    app.include_router(_build_router(state))

    @app.get("/health")
    async def health():  # on the event loop, not in the worker threads a flood of requests may keep busy
        body = {"status": state.status, "queued": state.scheduler.queued, "batching": dict(state.scheduler.stats)}
        if state.status == "ready":
            body["models"] = list(state.backend.model_ids)
            return body
        body["error"] = state.error
        return JSONResponse(body, status_code=503)

    if keyed:

        @app.get("/openapi.json", include_in_schema=False)
        def openapi(request: Request):
            check_api_key(request, settings.api_key)
            return app.openapi()

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(STATIC / "index.html", headers={"Content-Security-Policy": PAGE_CSP})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
