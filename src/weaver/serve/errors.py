"""API errors in OpenAI's envelope, the request-size limit and the API-key check.

Every error the server answers has the body `{"error": {"message", "type", "param", "code"}}`:
400 invalid values (FastAPI's 422 validation errors are answered as 400), 401 missing or wrong key,
404 unknown model or path, 408 body not received in time, 413 body too large, 429 queue full, 503 loading,
504 timed out.
A 500 means a bug in Weaver, never a client's mistake.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from weaver.serve.scheduler import QueueFull

log = logging.getLogger(__name__)

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "invalid_request_error",
          405: "invalid_request_error", 408: "invalid_request_error", 413: "invalid_request_error",
          429: "rate_limit_error",
          503: "server_error", 504: "timeout_error"}


class APIError(HTTPException):
    """An error answered to the client in OpenAI's envelope."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 type_: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(status_code=status, detail=message, headers=headers)
        self.message = message
        self.param = param
        self.code = code
        self.type = type_ or _TYPES.get(status, "server_error")


def envelope(status: int, message: str, param: str | None = None, code: str | None = None,
             type_: str | None = None, headers: dict | None = None) -> JSONResponse:
    """A JSONResponse with OpenAI's error body."""
    body = {"error": {"message": message, "type": type_ or _TYPES.get(status, "server_error"),
                      "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None, str]:
    """(message, param, code) of the first validation error."""
    err = exc.errors()[0]
    loc = [str(p) for p in err.get("loc", ()) if p != "body"]
    param = ".".join(loc) or None
    msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
    if err.get("type") == "json_invalid":
        return "the request body is not valid JSON", None, "invalid_value"
    if err.get("type") == "missing":
        if param is None:
            return "the request needs a JSON body", None, "invalid_value"
        return f"missing required parameter {param!r}", param, "invalid_value"
    code = "unsupported_parameter" if err.get("type") == "unsupported_parameter" else "invalid_value"
    return (f"{param}: {msg}" if param else msg), param, code


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error in OpenAI's envelope (validation -> 400, a full queue -> 429 with Retry-After, HTTP errors
    keep their status)."""

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        message, param, code = _validation_message(exc)
        return envelope(400, message, param=param, code=code)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException):
        if isinstance(exc, APIError):
            return envelope(exc.status_code, exc.message, exc.param, exc.code, exc.type, headers=exc.headers)
        if exc.status_code == 404:
            return envelope(404, f"no such endpoint: {request.method} {request.url.path}", code="not_found")
        if exc.status_code == 405:
            return envelope(405, f"method {request.method} is not allowed on {request.url.path}")
        return envelope(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(QueueFull)
    async def _queue_full(request: Request, exc: QueueFull):
        return envelope(429, f"the server is busy ({exc}); retry shortly", code="queue_full",
                        headers={"Retry-After": "1"})

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception):
        log.exception("internal error on %s %s", request.method, request.url.path)
        return envelope(500, f"internal server error ({type(exc).__name__}); this is a bug in Weaver",
                        type_="server_error", code="internal_error")


CLOSE = {"Connection": "close"}
DRAIN_BYTES = 8 * 2**20
DRAIN_S = 5.0


class BodyLimitMiddleware:
    """Reject request bodies over `limit` bytes with 413, by Content-Length or while streaming in, and bodies
    that take longer than `read_timeout_s` to arrive with 408 (the headers' deadline is weaver.serve.protocol's).
    """

    def __init__(self, app, limit: int, read_timeout_s: float = 20.0):
        self.app = app
        self.limit = limit
        self.read_timeout_s = read_timeout_s

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        message = f"request body is larger than the server's limit of {self.limit} bytes"
        if length is not None and length.isdigit() and int(length) > self.limit:
            await self._drain(receive, int(length))
            return await self._reject(send, message)
        seen, complete = 0, False
        deadline = time.monotonic() + self.read_timeout_s

        async def limited_receive():
            nonlocal seen, complete
            if complete:  # after the body: only http.disconnect is left to wait for, as long as it takes
                return await receive()
            # Both refusals close the connection: the rest of the body will not be read, so it cannot be reused.
            try:
                msg = await asyncio.wait_for(receive(), timeout=max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                raise APIError(408, f"the request body did not arrive within {self.read_timeout_s:g} s (weaver "
                                    "serve --read-timeout)", code="request_timeout", headers=CLOSE) from None
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.limit:
                    raise APIError(413, message, code="request_too_large", headers=CLOSE)
            complete = msg["type"] != "http.request" or not msg.get("more_body", False)
            return msg

        await self.app(scope, limited_receive, send)

    async def _drain(self, receive, length: int) -> None:
        """Read and drop a refused body of up to DRAIN_BYTES (for at most DRAIN_S) before answering 413: a client
        still sending when the connection closes gets a reset instead of the 413 (seen in the fuzz suite with a
        1.1 MB body). Bigger or slower bodies are not read; their connection is closed after the 413."""
        if length > max(DRAIN_BYTES, self.limit):
            return
        end = time.monotonic() + DRAIN_S
        try:
            while True:
                msg = await asyncio.wait_for(receive(), timeout=max(0.0, end - time.monotonic()))
                if msg["type"] != "http.request" or not msg.get("more_body", False):
                    return
        except asyncio.TimeoutError:
            return

    @staticmethod
    async def _reject(send, message: str) -> None:
        body = json.dumps({"error": {"message": message, "type": "invalid_request_error", "param": None,
                                     "code": "request_too_large"}}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


def check_unicode(texts) -> None:
    """400 invalid_unicode when a text holds a lone surrogate: JSON's \\ud800 escape is valid to Python's parser,
    but the tokenizer would fail on it (a 500)."""
    try:
        for text in texts:
            text.encode("utf-8")
    except UnicodeEncodeError:
        raise APIError(400, "the request holds an unpaired UTF-16 surrogate escape (\\ud800-\\udfff), which is not "
                            "valid Unicode; send well-formed text", code="invalid_unicode") from None


def check_api_key(request: Request, api_key: str | None) -> None:
    """Raise 401 unless the request carries `Authorization: Bearer <api_key>` (no-op when no key is set)."""
    if api_key is None:
        return
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if not header:
        raise APIError(401, "missing API key: send the header 'Authorization: Bearer <key>'", code="invalid_api_key")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
        raise APIError(401, "incorrect API key provided", code="invalid_api_key")


def key_dependency(api_key: str | None):
    """A FastAPI dependency (for `APIRouter(dependencies=[...])`) that applies check_api_key with this key."""
    from fastapi import Depends

    def auth(request: Request) -> None:
        check_api_key(request, api_key)

    return Depends(auth)
