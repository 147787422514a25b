"""The FastAPI application: ``create_app(settings)``.

Routes (schema at ``/openapi.json``; the ``/docs`` page with ``server.docs=true``):

- ``POST /api/extract-embedding``        one image -> one embedding (or every face's)
- ``POST /api/extract-embedding/batch``  several images -> one embedding or typed error each
- ``POST /api/verify``                   two images -> cosine score and decision (with a decision
  profile, ``PROFILE_PATH``: its ``llr``, ``p_same`` and threshold at an FMR target; :mod:`fetoolkit.serve.decide`)
- ``GET  /api/health``                   status, version, model status
- ``GET  /metrics``                      Prometheus metrics (:mod:`fetoolkit.serve.observe`)

Every POST route takes JSON (base64 images), multipart uploads, and ``/api/extract-embedding``
also the raw image (:mod:`fetoolkit.serve.bodies`). The front door (:mod:`fetoolkit.serve.front`)
checks host, API key, body size and deadline and admission before a route runs; a route then parses
its body and does its work in the thread pool (``pool_size``), never on the event loop, within the
request's deadline (504 ``TIMEOUT``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from pydantic_core import to_json
from starlette.exceptions import HTTPException as StarletteHTTPException

from fetoolkit import __version__
from fetoolkit.serve.bodies import Parsed, parse_body
from fetoolkit.serve.decide import ServiceProfile, load_service_profile
from fetoolkit.serve.errors import HTTP_STATUS_TYPES, ErrorType, InvalidInput, RequestTimeout, ServiceError
from fetoolkit.serve.front import Admission, FrontDoor
from fetoolkit.serve.observe import Metrics
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
from fetoolkit.serve.work import Work

log = logging.getLogger(__name__)

SERVICE_NAME = "fetoolkit-embedding"

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {
        "model": ErrorResponse,
        "description": "IMAGE_DECODE_ERROR (not base64, not an image, too many pixels or JPEG scans, a format not "
        "accepted) or INVALID_INPUT (body is not JSON / multipart; Host not served)",
    },
    401: {
        "model": ErrorResponse,
        "description": "UNAUTHORIZED: API keys are set and the request has none or a wrong one",
    },
    408: {"model": ErrorResponse, "description": "TIMEOUT: the body did not arrive within server.body_timeout_s"},
    413: {"model": ErrorResponse, "description": "PAYLOAD_TOO_LARGE: body over server.max_body_bytes"},
    415: {"model": ErrorResponse, "description": "INVALID_INPUT: a Content-Type this route does not take"},
    422: {
        "model": ErrorResponse,
        "description": "INVALID_INPUT (body does not fit the schema; verify: an `fmr` the decision profile has no "
        "threshold for, listed in `details.fmrs`) or ALIGNMENT_ERROR (no face found / image too small to search)",
    },
    500: {"model": ErrorResponse, "description": "MODEL_INFERENCE_ERROR or INTERNAL_ERROR"},
    503: {
        "model": ErrorResponse,
        "description": "SERVER_BUSY (MAX_CONCURRENT_REQUESTS in flight, or too many bodies held; see Retry-After) "
        "or MODEL_LOAD_ERROR (the model did not load)",
    },
    504: {"model": ErrorResponse, "description": "TIMEOUT: no answer within server.request_timeout_s"},
}

_BINARY = {"type": "string", "format": "binary"}
_FLAG = {"type": "string", "enum": ["true", "false"]}


def _request_body(model: type[BaseModel], parts: dict[str, Any], raw: bool = False) -> dict[str, Any]:
    """The OpenAPI ``requestBody`` of a POST route: JSON (``model``), multipart (``parts``) and,
    with ``raw``, the image file itself (flags then in the query)."""
    content: dict[str, Any] = {
        "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}},
        "multipart/form-data": {"schema": {"type": "object", **parts}},
    }
    extra: dict[str, Any] = {}
    if raw:
        content["image/*"] = content["application/octet-stream"] = {"schema": _BINARY}
        extra["parameters"] = [
            {"name": name, "in": "query", "required": False, "schema": {"type": "boolean"}}
            for name in ("aligned", "all_faces")
        ]
    return {"requestBody": {"required": True, "content": content}, **extra}


BODIES = {
    "extract": _request_body(
        ExtractRequest,
        {"properties": {"image": _BINARY, "aligned": _FLAG, "all_faces": _FLAG}, "required": ["image"]},
        raw=True,
    ),
    "verify": _request_body(
        VerifyRequest,
        {
            "properties": {
                "image1": _BINARY,
                "image2": _BINARY,
                "aligned": _FLAG,
                "threshold": {"type": "number", "minimum": -1, "maximum": 1},
                "fmr": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
                "prior": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
            },
            "required": ["image1", "image2"],
        },
    ),
    "batch": _request_body(
        BatchRequest,
        {
            "properties": {"images": {"type": "array", "items": _BINARY}, "aligned": _FLAG, "all_faces": _FLAG},
            "required": ["images"],
        },
    ),
}


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
        The FastAPI app (wrapped by the front door); ``app.state.service``, ``app.state.admission``,
        ``app.state.metrics`` and ``app.state.profile`` (the decision profile, or None) expose its parts.

    Raises:
        ValueError: the decision profile (``settings.profile_path``) is missing, damaged, or made for
            another model, weights, detector or pipeline setting (see :mod:`fetoolkit.serve.decide`):
            checked here, before the model loads and before anything is served.
    """
    decider: ServiceProfile | None = load_service_profile(settings)
    svc = service or EmbeddingService(settings)
    pool = ThreadPoolExecutor(max_workers=pool_size(settings), thread_name_prefix="serve")
    admission = Admission(
        limit=settings.max_concurrent_requests,
        max_body=settings.max_body_bytes,
        max_buffered=settings.max_buffered_bytes,
        retry_after_s=settings.retry_after_s,
    )
    metrics = Metrics(in_flight=lambda: admission.in_flight)
    svc.observe = metrics.stage
    if decider is not None:
        metrics.profile(
            decider.profile_id, str(decider.profile.model.get("name")), decider.fmr, decider.profile.data["scores"]
        )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await asyncio.get_running_loop().run_in_executor(pool, svc.load)
        log.info(
            "serving %s on http://%s:%d; max %d concurrent requests; API keys %s",
            SERVICE_NAME,
            settings.host,
            settings.port,
            settings.max_concurrent_requests,
            "required" if settings.auth_required else "off",
        )
        try:
            yield
        finally:
            pool.shutdown(wait=False, cancel_futures=True)  # queued work first, then the batcher
            svc.close()

    app = FastAPI(
        title="fetoolkit face-embedding service",
        version=__version__,
        description=(
            "Face embeddings over HTTP: face detection (YuNet by default), 5-point ArcFace alignment and the "
            "configured model (onnxruntime by default). Images come as base64 in JSON, as multipart uploads, or "
            "(extract) as the raw file. Errors are JSON with `success: false`, an `error_type` and a `message`."
        ),
        lifespan=lifespan,
        docs_url="/docs" if settings.docs else None,
        redoc_url=None,
        redirect_slashes=False,
    )
    app.state.service = svc
    app.state.settings = settings
    app.state.admission = admission
    app.state.metrics = metrics
    app.state.profile = decider

    async def serve(request: Request, route: str, handler: Callable[[Parsed, Work | None], dict[str, Any]]) -> Response:
        """Parse the (already received) body and do the work in the pool, within the deadline."""
        body = await request.body()
        work: Work | None = request.scope.get("fetoolkit.work")
        ctype = request.headers.get("content-type", "")
        query = dict(request.query_params)

        def job() -> bytes:
            # parsed, worked on and serialised (by pydantic-core, in one pass: the routes' response
            # models are for the docs) in the pool; a 32-image all_faces answer is MBs of JSON
            return to_json(handler(parse_body(route, ctype, body, query), work))

        left = work.remaining_s if work is not None else settings.request_timeout_s
        try:
            content = await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(pool, job), max(left, 0.001))
        except asyncio.TimeoutError:
            metrics.rejected.labels("timeout").inc()
            raise RequestTimeout(
                f"no answer within server.request_timeout_s={settings.request_timeout_s:g} s (queueing included)"
            ) from None
        return Response(content, media_type="application/json")

    # ------------------------------------------------------------------ errors
    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
        if exc.status >= 500:
            log.warning(
                "%s %s -> %d %s: %s (request_id=%s)",
                request.method,
                request.url.path,
                exc.status,
                exc.error_type.value,
                exc.message,
                request.scope.get("fetoolkit.request_id"),
            )
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = HTTP_STATUS_TYPES.get(
            exc.status_code, ErrorType.INTERNAL_ERROR if exc.status_code >= 500 else ErrorType.INVALID_INPUT
        )
        body = {"success": False, "error_type": kind.value, "message": str(exc.detail), "details": None}
        return JSONResponse(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception(
            "unhandled error on %s %s (request_id=%s)",
            request.method,
            request.url.path,
            request.scope.get("fetoolkit.request_id"),
        )
        body = {
            "success": False,
            "error_type": ErrorType.INTERNAL_ERROR.value,
            "message": f"internal error: {type(exc).__name__}",
            "details": None,
        }
        return JSONResponse(body, status_code=500)

    # ------------------------------------------------------------------ routes
    @app.get("/", include_in_schema=False)
    async def root() -> dict[str, Any]:
        return {
            "service": SERVICE_NAME,
            "version": __version__,
            "docs": "/docs" if settings.docs else None,
            "schema": "/openapi.json",
            "health": "/api/health",
        }

    @app.get("/api/health", response_model=HealthResponse, responses={503: {"model": HealthResponse}})
    async def health(request: Request) -> JSONResponse:
        """Service status. 200 when the model and the detector are loaded, else 503 (body says why, by kind
        and reason). `profile` names the decision profile (null: none). With API keys set, the weights' sha256,
        the counters and the profile's path are shown only to callers with a key."""
        shown = bool(request.scope.get("fetoolkit.authenticated", True))
        body = HealthResponse(
            status="healthy" if svc.ready else "unhealthy",
            service=SERVICE_NAME,
            version=__version__,
            timestamp=datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            model_status=svc.model_status(details=shown),  # type: ignore[arg-type]
            in_flight=admission.in_flight if shown else None,
            rejected_busy=admission.rejected if shown else None,
            auth_required=settings.auth_required,
            max_concurrent_requests=settings.max_concurrent_requests,
            verify_threshold=settings.verify_threshold,
            face_select=settings.face_select,
            profile=None if decider is None else decider.status(details=shown),  # type: ignore[arg-type]
        )
        return JSONResponse(body.model_dump(), status_code=200 if svc.ready else 503)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        """Prometheus text format (needs a key when keys are set)."""
        return Response(metrics.render(), media_type=metrics.content_type)

    def extract_job(p: Parsed, work: Work | None) -> dict[str, Any]:
        if p.all_faces and not p.aligned:
            body = [_face(f) for f in svc.extract_all(p.images[0], work)]
            return {"success": True, "embedding": body[0], "faces": body, "message": None}
        face = svc.extract(p.images[0], p.aligned, work)
        return {"success": True, "embedding": _face(face), "faces": None, "message": None}

    @app.post(
        "/api/extract-embedding",
        response_model=ExtractResponse,
        responses=ERROR_RESPONSES,
        openapi_extra=BODIES["extract"],
    )
    async def extract_embedding(request: Request) -> Response:
        """One image -> its face embedding.

        `aligned: false` (default): the detector finds the faces, the configured policy (`face_select`) keeps one,
        it is aligned to the ArcFace template and embedded; the answer carries the box, the 5 landmarks,
        the number of faces found and the detection confidence. `aligned: true`: the image is embedded as
        an aligned crop; no detection runs, so `confidence` is null and `detection_ran` false. The image comes
        as base64 in JSON, as a multipart file part `image`, or as the whole body (`Content-Type: image/...`).
        """
        return await serve(request, "extract", extract_job)

    def batch_job(p: Parsed, work: Work | None) -> dict[str, Any]:
        if len(p.images) > settings.max_batch_images:
            raise InvalidInput(f"{len(p.images)} images in one batch; the limit is {settings.max_batch_images}")
        results = svc.extract_many(p.images, p.aligned, p.all_faces, work)
        items = [
            {
                "success": True,
                "embedding": _face(r[0]),
                "faces": [_face(f) for f in r] if p.all_faces and not p.aligned else None,
                "error_type": None,
                "message": None,
            }
            if isinstance(r, list)
            else {"success": False, "embedding": None, "error_type": r.error_type.value, "message": r.message}
            for r in results
        ]
        n_ok = sum(bool(i["success"]) for i in items)
        return {"success": True, "results": items, "n_ok": n_ok, "n_failed": len(items) - n_ok, "message": None}

    @app.post(
        "/api/extract-embedding/batch",
        response_model=BatchResponse,
        responses=ERROR_RESPONSES,
        openapi_extra=BODIES["batch"],
    )
    async def extract_batch(request: Request) -> Response:
        """Several images -> one result each, in order. A bad image gets a typed error in its own slot
        (`success: false`, `error_type`, `message`); the others are still embedded, together in one model call.
        Multipart: one file part `images` per image."""
        return await serve(request, "batch", batch_job)

    def verify_job(p: Parsed, work: Work | None) -> dict[str, Any]:
        if p.threshold is not None and p.fmr is not None:
            raise InvalidInput("send threshold or fmr, not both: each one sets the decision threshold")
        if decider is None and (p.fmr is not None or p.prior is not None):
            raise InvalidInput(
                "fmr and prior need a decision profile, and this service has none (PROFILE_PATH); "
                "send threshold (a cosine) instead"
            )
        if decider is not None:
            decider.request_fmr(p.fmr)  # an FMR the profile lacks: answered before any work
        score, f1, f2 = svc.verify(p.images[0], p.images[1], p.aligned, work)
        if decider is not None:
            decision = decider.verification(score, fmr=p.fmr, prior=p.prior, threshold=p.threshold, aligned=p.aligned)
        else:
            t = settings.verify_threshold if p.threshold is None else p.threshold
            decision = {
                "threshold": t,
                "threshold_source": "server" if p.threshold is None else "request",
                "is_same_person": score >= t,
                "fmr": None,
                "llr": None,
                "p_same": None,
                "prior": None,
                "profile_id": None,
                "warnings": [],
            }
        verification = {"score": score, **decision, "face1": _summary(f1), "face2": _summary(f2)}
        metrics.verification(verification)
        return {"success": True, "verification": verification, "message": None}

    @app.post("/api/verify", response_model=VerifyResponse, responses=ERROR_RESPONSES, openapi_extra=BODIES["verify"])
    async def verify(request: Request) -> Response:
        """Two images -> cosine similarity of their face embeddings and the decision at the request's `threshold`
        (a cosine in [-1, 1]), else, with a decision profile loaded (PROFILE_PATH), at the profile's threshold for
        the request's `fmr` or the server's `verify.fmr`, else at the server's `verify.threshold`; the answer names
        which (`threshold_source`). With a profile the answer also carries the calibrated `llr`, `p_same` (at the
        request's `prior` or the profile's), the `profile_id` and the profile's `warnings`."""
        return await serve(request, "verify", verify_job)

    def openapi() -> dict[str, Any]:
        """FastAPI's schema plus the request models, which the routes parse themselves."""
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in (ExtractRequest, VerifyRequest, BatchRequest):
                js = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(js.pop("$defs", {}))
                components[model.__name__] = js
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_middleware(FrontDoor, settings=settings, admission=admission, metrics=metrics)
    return app
