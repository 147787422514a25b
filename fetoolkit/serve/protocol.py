"""uvicorn's HTTP protocol with the limits it lacks: a header-read deadline and a header-size cap.

uvicorn (0.54, httptools parser) closes idle keep-alive connections, but a connection that never
finishes its request headers -- one that sends nothing, or one byte every few seconds -- stays open
forever, and httptools buffers a header of any size (a 64 MiB header was answered after 7 s, the
event loop stalled meanwhile). :func:`guarded_protocol` makes a subclass of uvicorn's
``HttpToolsProtocol`` that

* answers ``408`` and closes a connection whose request headers are not complete within
  ``header_timeout_s`` of the connection (or of the first byte of a later request's head), and
* answers ``431`` and closes a connection once more than ``max_header_bytes`` of request line and
  headers have arrived without their end (counted per read; the part of a pipelined head that shares
  a read with the previous request's end is not counted: at most one read, 256 KiB, more), and
* answers uvicorn's ``limit_concurrency`` refusals (``server.max_connections``) with the typed
  503 ``SERVER_BUSY`` instead of uvicorn's plain-text one.

Both answers are the service's typed JSON errors. Body deadlines, body size and admission are the
ASGI middleware's (:mod:`fetoolkit.serve.front`): they need the request's route.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from fetoolkit.serve.errors import ErrorType

log = logging.getLogger(__name__)

_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large", 503: b"Service Unavailable"}


def _raw_error(status: int, error_type: ErrorType, message: str) -> bytes:
    """A complete ``Connection: close`` HTTP/1.1 response with the service's error body."""
    body = json.dumps({"success": False, "error_type": error_type.value, "message": message, "details": None}).encode()
    head = b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % (
        status,
        _REASONS[status],
        len(body),
    )
    return head + body


def guarded_protocol(*, header_timeout_s: float, max_header_bytes: int) -> type[HttpToolsProtocol]:
    """A ``HttpToolsProtocol`` subclass with these limits, for ``uvicorn.run(http=...)``."""

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        """See the module docstring."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._head_bytes = 0  # bytes of the current request's head received so far
            self._in_head = True  # waiting for (the rest of) a request head
            self._head_timer: asyncio.TimerHandle | None = None
            self._deferred: tuple[int, ErrorType, str] | None = None  # a refusal waiting for an answer

        def _arm(self) -> None:
            """Start the head deadline (at connection time, or when a later request's head begins)."""
            self._disarm()
            self._head_timer = self.loop.call_later(header_timeout_s, self._head_timeout)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _refuse(self, status: int, error_type: ErrorType, message: str) -> None:
            """Answer ``status`` and close; while an earlier request on this connection is still being
            answered, stop reading and do it right after that answer (which must come first)."""
            self._disarm()
            if self.transport.is_closing():
                return
            if self.cycle is not None and not self.cycle.response_complete:
                self._deferred = (status, error_type, message)
                self.flow.pause_reading()
                return
            self.transport.write(_raw_error(status, error_type, message))
            self.transport.close()

        def _head_timeout(self) -> None:
            self._head_timer = None
            if self._in_head and not self.transport.is_closing():
                log.info("closing a connection whose request headers did not arrive within %.1f s", header_timeout_s)
                self._refuse(
                    408, ErrorType.TIMEOUT, f"the request headers did not arrive within {header_timeout_s:g} s"
                )

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self.transport.is_closing() or self._deferred is not None:
                return
            if self._in_head:
                if self._head_timer is None:  # the first bytes of a later request's head (idle keep-alive
                    self._arm()  # connections are uvicorn's to close)
                end = data.find(b"\r\n\r\n")
                self._head_bytes += len(data) if end < 0 else end + 4
                if self._head_bytes > max_header_bytes:  # refused before the parser buffers any more of it
                    self._refuse(
                        431,
                        ErrorType.HEADERS_TOO_LARGE,
                        f"the request line and headers are over {max_header_bytes} bytes",
                    )
                    return
            super().data_received(data)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if self._head_timer is None:  # a pipelined head that began inside a chunk gets its deadline too
                self._arm()

        def on_headers_complete(self) -> None:
            self._in_head = False
            self._disarm()
            limit = self.limit_concurrency
            idle = self.cycle is None or self.cycle.response_complete  # else uvicorn queues its own 503 in order
            if idle and limit is not None and (len(self.connections) >= limit or len(self.tasks) >= limit):
                self._refuse(
                    503, ErrorType.SERVER_BUSY, f"{len(self.connections)} connections are open (server.max_connections)"
                )
                return
            super().on_headers_complete()

        def on_body(self, body: bytes) -> None:
            if not self.transport.is_closing():  # refused above: the rest of the body is dropped
                super().on_body(body)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if self._deferred is not None:
                deferred, self._deferred = self._deferred, None
                self._refuse(*deferred)

        def on_message_complete(self) -> None:
            # whatever arrives next is the next request's head, counted from zero (its deadline
            # starts with its first byte)
            self._in_head, self._head_bytes = True, 0
            if not self.transport.is_closing():
                super().on_message_complete()

    return GuardedHttpToolsProtocol
