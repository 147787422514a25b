"""The FastAPI application: ``create_app(settings)``.

Routes (OpenAPI docs at ``/docs``, schema at ``/openapi.json``):

- ``POST /api/extract-embedding``        one image -> one embedding
- ``POST /api/extract-embedding/batch``  several images -> one embedding or typed error each
- ``POST /api/verify``                   two images -> cosine score and decision
- ``GET  /api/health``                   status, version, model status

Blocking work (decoding, detection, alignment, the model) runs in a thread pool (``pool_size``);
with cross-request batching on, the model itself runs on the micro-batcher's worker threads. An
ASGI middleware in front of the routes refuses, before reading any body, requests beyond
``max_concurrent_requests`` (503 + ``Retry-After``) and bodies over ``max_body_bytes`` (413),
so nothing queues without bound.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic_core import to_json
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fetoolkit import __version__
from fetoolkit.serve.errors import (
    HTTP_STATUS_TYPES,
    ErrorType,
    InvalidInput,
    MalformedJSON,
    PayloadTooLarge,
    ServerBusy,
    ServiceError,
    UnsupportedMediaType,
)
from fetoolkit.serve.schemas import (
    BatchRequest,
    BatchResponse,
    ErrorResponse,
    ExtractRequest,
    ExtractResponse,
    HealthResponse,
    VerifyRequest,
    VerifyResponse,
)
from fetoolkit.serve.service import EmbeddingService, FaceResult
from fetoolkit.serve.settings import ServeSettings

log = logging.getLogger(__name__)

SERVICE_NAME = "fetoolkit-embedding"
T = TypeVar("T")

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {
        "model": ErrorResponse,
        "description": "IMAGE_DECODE_ERROR (not base64, not an image, too many pixels) or "
        "INVALID_INPUT (body is not JSON)",
    },
    413: {"model": ErrorResponse, "description": "PAYLOAD_TOO_LARGE: body over server.max_body_bytes"},
    415: {"model": ErrorResponse, "description": "INVALID_INPUT: the body is not sent as application/json"},
    422: {
        "model": ErrorResponse,
        "description": "INVALID_INPUT (body does not fit the schema) or ALIGNMENT_ERROR "
        "(no face found / image too small to search)",
    },
    500: {"model": ErrorResponse, "description": "MODEL_INFERENCE_ERROR or INTERNAL_ERROR"},
    503: {
        "model": ErrorResponse,
        "description": "SERVER_BUSY (MAX_CONCURRENT_REQUESTS in flight; see Retry-After) "
        "or MODEL_LOAD_ERROR (the model did not load)",
    },
}


@dataclass
class Admission:
    """Limits and counters shared by ``AdmissionMiddleware`` and /api/health (event-loop thread only)."""

    limit: int
    max_body: int
    retry_after_s: int
    in_flight: int = 0
    rejected: int = 0
    too_large: int = 0


class AdmissionMiddleware:
    """Bounds concurrency and body size before any body is read.

    - ``POST`` requests beyond ``limit`` in flight: 503 ``SERVER_BUSY`` with ``Retry-After``.
    - A ``Content-Length`` over ``max_body``: 413 at once; a chunked body is counted as it
      arrives and refused with 413 when it passes ``max_body``.

    ``GET`` requests (health, docs) are never refused for load, so health checks keep working.
    """

    def __init__(self, app: ASGIApp, *, state: Admission) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        st = self.state
        length = _content_length(scope)
        if length is not None and length > st.max_body:
            st.too_large += 1
            await _send_error(
                PayloadTooLarge(f"request body is {length} bytes; the limit is {st.max_body}"), scope, receive, send
            )
            return
        limited = scope["method"] == "POST"
        if limited and st.in_flight >= st.limit:
            st.rejected += 1
            retry = str(int(st.retry_after_s))
            await _send_error(
                ServerBusy(
                    f"{st.in_flight} requests are in flight (MAX_CONCURRENT_REQUESTS="
                    f"{st.limit}); retry after {retry} s",
                    headers={"Retry-After": retry},
                ),
                scope,
                receive,
                send,
            )
            return
        received = 0
        max_body = st.max_body

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_body:
                    # An HTTPException passes through FastAPI's body parsing to the 413 handler.
                    raise StarletteHTTPException(413, f"request body is over the limit of {max_body} bytes")
            return message

        if limited:
            st.in_flight += 1
        try:
            await self.app(scope, counted_receive, send)
        finally:
            if limited:
                st.in_flight -= 1


def _content_length(scope: Scope) -> int | None:
    for key, value in scope["headers"]:
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _send_error(err: ServiceError, scope: Scope, receive: Receive, send: Send) -> None:
    response = JSONResponse(err.body(), status_code=err.status, headers=err.headers)
    await response(scope, receive, send)


def _json(content: dict[str, Any]) -> Response:
    """A JSON response serialised by pydantic-core in one pass. The routes declare their pydantic
    ``response_model`` for the OpenAPI docs; building the models and having FastAPI validate them
    again cost more per request than the rest of the HTTP layer."""
    return Response(to_json(content), media_type="application/json")


def _face(r: FaceResult) -> dict[str, Any]:
    """``FaceEmbedding`` as a dict."""
    return {
        "embedding": r.embedding.tolist(),
        "quality": r.quality,
        "confidence": r.confidence,
        "detection_ran": r.detection_ran,
        "box": None if r.box is None else [float(v) for v in r.box],
        "landmarks": None if r.landmarks is None else r.landmarks.astype(float).tolist(),
        "faces_found": r.faces_found,
        "embedding_dim": int(r.embedding.shape[0]),
    }


def _summary(r: FaceResult) -> dict[str, Any]:
    """``FaceSummary`` as a dict."""
    return {
        "quality": r.quality,
        "confidence": r.confidence,
        "detection_ran": r.detection_ran,
        "box": None if r.box is None else [float(v) for v in r.box],
        "faces_found": r.faces_found,
    }


def pool_size(settings: ServeSettings) -> int:
    """Threads of the request pool (decoding, detection, alignment and, without batching, the model).

    Without cross-request batching (``max_batch == 1``) a request's whole CPU work runs in its pool
    thread, so ``inference_workers`` threads keep that many cores busy; requests beyond them wait
    in the pool's queue (bounded by ``max_concurrent_requests``) instead of as parked threads that
    contend for the GIL and the semaphores: ``make bench-serve`` measured 10 % more aligned-crop
    requests/s that way. With batching, every admitted request needs a thread to wait on the
    batcher in, or the batcher could never merge more than ``inference_workers`` of them.
    """
    if settings.max_batch == 1:
        return settings.inference_workers
    return settings.max_concurrent_requests + 1


def create_app(settings: ServeSettings, service: EmbeddingService | None = None) -> FastAPI:
    """Build the application.

    Args:
        settings: the service settings (``ServeSettings.from_cfg``).
        service: a ready-made ``EmbeddingService`` (tests, embedding in another app); by default one
            is built from ``settings`` and loaded when the app starts (before it accepts requests).

    Returns:
        The FastAPI app; ``app.state.service`` and ``app.state.admission`` expose its parts.
    """
    svc = service or EmbeddingService(settings)
    pool = ThreadPoolExecutor(max_workers=pool_size(settings), thread_name_prefix="serve")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await asyncio.get_running_loop().run_in_executor(pool, svc.load)
        log.info(
            "serving %s on http://%s:%d (docs at /docs); max %d concurrent requests",
            SERVICE_NAME,
            settings.host,
            settings.port,
            settings.max_concurrent_requests,
        )
        try:
            yield
        finally:
            svc.close()
            pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(
        title="fetoolkit face-embedding service",
        version=__version__,
        description=(
            "Face embeddings over HTTP: face detection (YuNet by default),"
            " 5-point ArcFace alignment and the configured model "
            "(onnxruntime by default). Errors are JSON with `success: false`, an `error_type` and a "
            "`message`."
        ),
        lifespan=lifespan,
    )
    admission = Admission(
        limit=settings.max_concurrent_requests, max_body=settings.max_body_bytes, retry_after_s=settings.retry_after_s
    )
    app.state.service = svc
    app.state.settings = settings
    app.state.admission = admission

    async def run(fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(pool, partial(fn, *args))

    # ------------------------------------------------------------------ errors
    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
        if exc.status >= 500:
            log.warning(
                "%s %s -> %d %s: %s", request.method, request.url.path, exc.status, exc.error_type.value, exc.message
            )
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        ctype = request.headers.get("content-type", "")
        if any(e.get("type") == "json_invalid" for e in errors):
            err: ServiceError = MalformedJSON("request body is not valid JSON")
        elif any(e.get("type") == "missing" and tuple(e.get("loc", ())) == ("body",) for e in errors):
            err = MalformedJSON("request body is empty; send a JSON object")
        elif ctype and "json" not in ctype.lower():
            err = UnsupportedMediaType(
                f"send the body as JSON with Content-Type: application/json (got {ctype[:100]!r})"
            )
        else:
            # Never echo the input back: it may be megabytes of base64.
            details = [
                {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
                for e in errors[:20]
            ]
            what = "; ".join(f"{'.'.join(map(str, d['loc'][1:])) or 'body'}: {d['msg']}" for d in details[:3])
            err = InvalidInput(f"request does not fit the schema: {what}", details=details)
        return JSONResponse(err.body(), status_code=err.status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = HTTP_STATUS_TYPES.get(
            exc.status_code, ErrorType.INTERNAL_ERROR if exc.status_code >= 500 else ErrorType.INVALID_INPUT
        )
        body = {"success": False, "error_type": kind.value, "message": str(exc.detail), "details": None}
        return JSONResponse(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        body = {
            "success": False,
            "error_type": ErrorType.INTERNAL_ERROR.value,
            "message": f"internal error: {type(exc).__name__}",
            "details": None,
        }
        return JSONResponse(body, status_code=500)

    # ------------------------------------------------------------------ routes
    @app.get("/", include_in_schema=False)
    async def root() -> dict[str, str]:
        return {"service": SERVICE_NAME, "version": __version__, "docs": "/docs", "health": "/api/health"}

    @app.get("/api/health", response_model=HealthResponse, responses={503: {"model": HealthResponse}})
    async def health() -> JSONResponse:
        """Service status. 200 when the model and the detector are loaded, else 503 (body says why)."""
        body = HealthResponse(
            status="healthy" if svc.ready else "unhealthy",
            service=SERVICE_NAME,
            version=__version__,
            timestamp=datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            model_status=svc.model_status(),  # type: ignore[arg-type]
            in_flight=admission.in_flight,
            rejected_busy=admission.rejected,
            max_concurrent_requests=settings.max_concurrent_requests,
            verify_threshold=settings.verify_threshold,
            face_select=settings.face_select,
        )
        return JSONResponse(body.model_dump(), status_code=200 if svc.ready else 503)

    @app.post("/api/extract-embedding", response_model=ExtractResponse, responses=ERROR_RESPONSES)
    async def extract_embedding(req: ExtractRequest) -> Response:
        """One image -> its face embedding.

        `aligned: false` (default): the detector finds the faces, the configured policy (`face_select`) keeps one,
        it is aligned to the ArcFace template and embedded; the answer carries the box, the 5 landmarks,
        the number of faces found and the detection confidence. `aligned: true`: the image is embedded as
        an aligned crop; no detection runs, so `confidence` is null and `detection_ran` false.
        """
        if req.all_faces and not req.aligned:
            faces = await run(svc.extract_all, req.image)
            body = [_face(f) for f in faces]
            return _json({"success": True, "embedding": body[0], "faces": body, "message": None})
        face = await run(svc.extract, req.image, req.aligned)
        return _json({"success": True, "embedding": _face(face), "faces": None, "message": None})

    @app.post("/api/extract-embedding/batch", response_model=BatchResponse, responses=ERROR_RESPONSES)
    async def extract_batch(req: BatchRequest) -> Response:
        """Several images -> one result each, in order. A bad image gets a typed error in its own slot
        (`success: false`, `error_type`, `message`); the others are still embedded, together in one model call."""
        if len(req.images) > settings.max_batch_images:
            raise InvalidInput(f"{len(req.images)} images in one batch; the limit is {settings.max_batch_images}")
        results = await run(svc.extract_many, req.images, req.aligned, req.all_faces)
        items = [
            {
                "success": True,
                "embedding": _face(r[0]),
                "faces": [_face(f) for f in r] if req.all_faces and not req.aligned else None,
                "error_type": None,
                "message": None,
            }
            if isinstance(r, list)
            else {"success": False, "embedding": None, "error_type": r.error_type.value, "message": r.message}
            for r in results
        ]
        n_ok = sum(bool(i["success"]) for i in items)
        return _json({"success": True, "results": items, "n_ok": n_ok, "n_failed": len(items) - n_ok, "message": None})

    @app.post("/api/verify", response_model=VerifyResponse, responses=ERROR_RESPONSES)
    async def verify(req: VerifyRequest) -> Response:
        """Two images -> cosine similarity of their face embeddings and the decision at `verify.threshold`."""
        score, f1, f2 = await run(svc.verify, req.image1, req.image2, req.aligned)
        t = settings.verify_threshold
        verification = {
            "score": score,
            "threshold": t,
            "is_same_person": score >= t,
            "face1": _summary(f1),
            "face2": _summary(f2),
        }
        return _json({"success": True, "verification": verification, "message": None})

    app.add_middleware(AdmissionMiddleware, state=admission)
    return app
