"""How uvicorn runs the app: its HTTP/1.1 protocol with a deadline for request headers, and the options.

    uvicorn.run(create_app(settings), **uvicorn_options(settings))      # what `weaver serve` does

uvicorn has no read timeout of its own: a client that connects, or starts a request, and then sends its
headers a byte at a time (or never) holds the connection open indefinitely. `HeaderTimeoutProtocol` gives
a client `settings.read_timeout_s` from connecting (or from the first byte of its next request on a kept-alive
connection) to finish a request's headers; then it answers 408 and closes the connection. The body gets the
same time again, enforced inside the app (weaver.serve.errors.BodyLimitMiddleware answers 408 in OpenAI's
envelope). An idle kept-alive connection is closed by uvicorn itself after KEEP_ALIVE_S: longer than the
clients' own idle expiry (httpx and the openai package: 5 s, uvicorn's default too), so a client closes an idle
connection before the server does; with equal timers a request sent on a connection the server is closing
that instant fails with a dropped connection (ReadError) instead of a reply.
"""

from __future__ import annotations

import functools

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from weaver.serve.settings import ServeSettings

KEEP_ALIVE_S = 20.0
_TIMEOUT_BODY = b"request headers not received in time\n"
_TIMEOUT_RESPONSE = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\nconnection: close\r\n"
                     b"content-length: %d\r\n\r\n%s" % (len(_TIMEOUT_BODY), _TIMEOUT_BODY))


class HeaderTimeoutProtocol(H11Protocol):
    """uvicorn's h11 protocol; a request whose headers are not complete within read_timeout_s gets 408 and its
    connection is closed."""

    def __init__(self, *args, read_timeout_s: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.read_timeout_s = read_timeout_s
        self._header_timer = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # may start on a pipelined request already received
        self._watch()

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _watch(self) -> None:
        if self.conn.their_state is not h11.IDLE:  # the headers are complete (the body has its own deadline)
            self._disarm()
        elif self.conn.trailing_data[0]:  # part of the next request's headers is in; an idle kept-alive
            self._arm()  # connection without any is uvicorn's keep-alive timer's to close

    def _arm(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.read_timeout_s, self._timed_out)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _timed_out(self) -> None:
        self._header_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.write(_TIMEOUT_RESPONSE)
            self.transport.close()


def uvicorn_options(settings: ServeSettings) -> dict:
    """Keyword arguments for uvicorn.run / uvicorn.Config: address, log level and the protocol with its timeout."""
    return {"host": settings.host, "port": settings.port, "log_level": "warning", "timeout_keep_alive": KEEP_ALIVE_S,
            "http": functools.partial(HeaderTimeoutProtocol, read_timeout_s=settings.read_timeout_s)}
