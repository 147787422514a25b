"""The front door: every HTTP request passes here before any route sees it (an ASGI middleware).

In order, for each request:

1. an ``X-Request-ID`` (the client's or a new one) on the answer, and the request counted in the
   metrics and, with ``server.access_log``, one log line;
2. ``Host`` checked against ``ServeSettings.hosts`` and the loopback names (400);
3. with API keys configured, every ``POST`` and ``GET /metrics`` need one (401 ``UNAUTHORIZED``);
   ``/api/health`` learns whether the caller showed one;
4. a ``POST`` body is read whole before the request is admitted: a declared ``Content-Length``
   over ``max_body_bytes`` is 413 at once, a body that grows past it is 413, one that does not
   arrive within ``body_timeout_s`` is 408, and all bodies held at once are bounded by
   ``max_buffered_bytes`` (503). A stalled upload therefore holds a connection, never a model slot;
5. only then the request counts against ``max_concurrent_requests`` (503 + ``Retry-After``
   beyond it), gets its :class:`~fetoolkit.serve.work.Work` ticket (deadline, disconnect flag:
   ``scope["fetoolkit.work"]``) and reaches the routes, which read the buffered body.

Connection-level limits (header size and header deadline, idle keep-alive, open connections)
are uvicorn's and :mod:`fetoolkit.serve.protocol`'s.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fetoolkit.serve.auth import key_matches, presented_key
from fetoolkit.serve.errors import (
    BodyTimeout,
    ClientGone,
    HostNotAllowed,
    PayloadTooLarge,
    ServerBusy,
    ServiceError,
    Unauthorized,
)
from fetoolkit.serve.observe import Metrics, request_id
from fetoolkit.serve.settings import LOOPBACK_HOSTS, ServeSettings
from fetoolkit.serve.work import Work

log = logging.getLogger("fetoolkit.serve.access")


@dataclass
class Admission:
    """Limits and counters of the front door (event-loop thread only); /api/health shows them.

    Attributes:
        limit: requests admitted at most (``max_concurrent_requests``).
        max_body: bytes per body at most.
        max_buffered: bytes of all bodies held at once (being read or admitted) at most.
        retry_after_s: the ``Retry-After`` of 503 answers.
        in_flight: requests admitted and not answered.
        buffered: bytes of bodies held now.
        rejected: requests refused as busy since start-up.
        too_large: bodies refused as too large since start-up.
    """

    limit: int
    max_body: int
    max_buffered: int
    retry_after_s: int
    in_flight: int = 0
    buffered: int = 0
    rejected: int = 0
    too_large: int = 0


class FrontDoor:
    """See the module docstring.

    Args:
        app: the FastAPI application.
        settings: the service settings.
        admission: shared counters and limits.
        metrics: the app's metrics.
    """

    def __init__(self, app: ASGIApp, *, settings: ServeSettings, admission: Admission, metrics: Metrics) -> None:
        self.app = app
        self.settings = settings
        self.state = admission
        self.metrics = metrics
        hosts = settings.hosts
        # the loopback names always pass: only this machine reaches them (a container's health check)
        self.hosts = None if hosts is None or "*" in hosts else frozenset(h.lower() for h in (*hosts, *LOOPBACK_HOSTS))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        rid = request_id(scope)
        scope["fetoolkit.request_id"] = rid
        status = [500]

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
                message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", rid.encode())]}
            await send(message)

        try:
            await self._handle(scope, receive, send_with_id, status)
        finally:
            dt = time.perf_counter() - t0
            self.metrics.request(scope["path"], status[0], dt)
            if self.settings.access_log:
                log.info('"%s %s" %d %.1f ms request_id=%s', scope["method"], scope["path"], status[0], dt * 1e3, rid)

    async def _handle(self, scope: Scope, receive: Receive, send: Send, status: list[int]) -> None:
        post = scope["method"] == "POST"
        refusal = self._refusal(scope)
        if refusal is not None:
            await _send_error(refusal, scope, receive, send, close=post)  # the unread body must not follow
            return
        if not post:
            await self.app(scope, receive, send)
            return
        st = self.state
        length = _content_length(scope)
        if length is not None and length > st.max_body:
            st.too_large += 1
            self.metrics.rejected.labels("too_large").inc()
            err = PayloadTooLarge(f"request body is {length} bytes; the limit is {st.max_body}")
            await _send_error(err, scope, receive, send, close=True)
            return
        held = [0]
        admitted = False
        watcher: asyncio.Task[None] | None = None
        try:
            try:
                body = await self._read_body(receive, held)
            except ServiceError as e:
                reason = {408: "body_timeout", 413: "too_large", 499: "client_gone"}.get(e.status, "busy")
                self.metrics.rejected.labels(reason).inc()
                if e.status == 499:
                    status[0] = 499  # nobody to answer
                else:
                    await _send_error(e, scope, receive, send, close=True)
                return
            if st.in_flight >= st.limit:
                st.rejected += 1
                self.metrics.rejected.labels("busy").inc()
                why = f"{st.in_flight} requests are in flight (MAX_CONCURRENT_REQUESTS={st.limit})"
                await _send_error(self._busy(why), scope, receive, send)
                return
            st.in_flight += 1
            admitted = True
            work = Work(self.settings.request_timeout_s)
            scope["fetoolkit.work"] = work
            gone = asyncio.Event()

            async def watch() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                work.gone = True
                gone.set()

            watcher = asyncio.create_task(watch())
            delivered = False

            async def replay() -> Message:
                nonlocal delivered
                if not delivered:
                    delivered = True
                    return {"type": "http.request", "body": body, "more_body": False}
                await gone.wait()
                return {"type": "http.disconnect"}

            await self.app(scope, replay, send)
        finally:
            if admitted:
                st.in_flight -= 1
            self._release(held)
            if watcher is not None:
                watcher.cancel()

    def _refusal(self, scope: Scope) -> ServiceError | None:
        """The error a request gets for its host or its missing key, or None; sets
        ``scope["fetoolkit.authenticated"]``."""
        if self.hosts is not None:
            host = _host(scope)
            if host not in self.hosts:
                self.metrics.rejected.labels("host").inc()
                return HostNotAllowed(
                    f"Host {host or '(none)'!r} is not served here; server.allowed_hosts (ALLOWED_HOSTS) lists the "
                    "names this service answers to"
                )
        s = self.settings
        ok = not s.auth_required or key_matches(presented_key(scope), s.api_key_digests)
        scope["fetoolkit.authenticated"] = ok
        if not ok and (scope["method"] == "POST" or scope["path"] == "/metrics"):
            self.metrics.rejected.labels("unauthorized").inc()
            return Unauthorized(
                "this service needs an API key: send it as X-API-Key: <key> or Authorization: Bearer <key>",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return None

    async def _read_body(self, receive: Receive, held: list[int]) -> bytes:
        """The whole body, within ``body_timeout_s``, ``max_body_bytes`` and the buffer budget."""
        st = self.state
        timeout = self.settings.body_timeout_s
        deadline = time.monotonic() + timeout
        chunks: list[bytes] = []
        while True:
            left = deadline - time.monotonic()
            try:
                if left <= 0:
                    raise asyncio.TimeoutError
                message = await asyncio.wait_for(receive(), left)
            except asyncio.TimeoutError:
                raise BodyTimeout(
                    f"the request body did not arrive within server.body_timeout_s={timeout:g} s"
                ) from None
            if message["type"] == "http.disconnect":
                raise ClientGone("the client disconnected while sending its body")
            chunk = message.get("body", b"")
            if held[0] + len(chunk) > st.max_body:
                raise PayloadTooLarge(f"request body is over the limit of {st.max_body} bytes")
            if st.buffered + len(chunk) > st.max_buffered:
                raise self._busy(f"{st.buffered} bytes of request bodies are held (server.max_buffered_bytes)")
            held[0] += len(chunk)
            st.buffered += len(chunk)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _release(self, held: list[int]) -> None:
        self.state.buffered -= held[0]
        held[0] = 0

    def _busy(self, why: str) -> ServerBusy:
        retry = str(int(self.state.retry_after_s))
        return ServerBusy(f"{why}; retry after {retry} s", headers={"Retry-After": retry})


def _content_length(scope: Scope) -> int | None:
    for key, value in scope["headers"]:
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _host(scope: Scope) -> str:
    """The ``Host`` header's name, lower case, without the port (IPv6 brackets removed)."""
    for key, value in scope["headers"]:
        if key == b"host":
            h = value.decode("latin-1").strip().lower()
            if h.startswith("["):
                return h[1 : h.find("]")] if "]" in h else h
            return h.rsplit(":", 1)[0] if h.count(":") == 1 else h
    return ""


async def _send_error(err: ServiceError, scope: Scope, receive: Receive, send: Send, *, close: bool = False) -> None:
    """Answer with ``err``'s typed JSON body; ``close``: the connection closes after it (the rest of
    an unread body must not be parsed as the next request)."""
    headers = {**err.headers, **({"Connection": "close"} if close else {})}
    response = JSONResponse(err.body(), status_code=err.status, headers=headers)
    await response(scope, receive, send)
