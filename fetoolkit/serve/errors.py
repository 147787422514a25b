"""Typed service errors: one exception class per error kind, each with its HTTP status.

Every error the service answers with is JSON of the same shape (``ErrorResponse``)::

    {"success": false, "error_type": "IMAGE_DECODE_ERROR", "message": "...", "details": null}

The kinds of the original design (image decode, invalid input, model inference, model load,
alignment / no face) are joined by the transport-level ones (payload too large, server busy,
not found, method not allowed) and a last-resort ``INTERNAL_ERROR``.
"""

from __future__ import annotations

import re
from enum import Enum
from typing import Any

#: An absolute path (POSIX), shown to clients by its last part only.
_ABS_PATH = re.compile(r"(?<![\w.])/(?:[^\s/:'\"]+/)+([^\s/:'\"]*)")


class ErrorType(str, Enum):
    """The ``error_type`` of an error response."""

    IMAGE_DECODE_ERROR = "IMAGE_DECODE_ERROR"
    INVALID_INPUT = "INVALID_INPUT"
    ALIGNMENT_ERROR = "ALIGNMENT_ERROR"
    MODEL_INFERENCE_ERROR = "MODEL_INFERENCE_ERROR"
    MODEL_LOAD_ERROR = "MODEL_LOAD_ERROR"
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    SERVER_BUSY = "SERVER_BUSY"
    UNAUTHORIZED = "UNAUTHORIZED"
    TIMEOUT = "TIMEOUT"
    HEADERS_TOO_LARGE = "HEADERS_TOO_LARGE"
    CLIENT_GONE = "CLIENT_GONE"
    NOT_FOUND = "NOT_FOUND"
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
    INTERNAL_ERROR = "INTERNAL_ERROR"


class ServiceError(Exception):
    """Base of the typed errors; ``status`` is the HTTP status the service answers with."""

    error_type: ErrorType = ErrorType.INTERNAL_ERROR
    status: int = 500

    def __init__(self, message: str, *, details: Any = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """The JSON body of the error response."""
        return {"success": False, "error_type": self.error_type.value, "message": self.message, "details": self.details}


class ImageDecodeFailed(ServiceError):
    """The image is not valid base64, not a decodable image, or too large once decoded."""

    error_type = ErrorType.IMAGE_DECODE_ERROR
    status = 400


class InvalidInput(ServiceError):
    """The request body is not JSON or does not fit the schema (422), or is malformed JSON (400)."""

    error_type = ErrorType.INVALID_INPUT
    status = 422


class MalformedJSON(InvalidInput):
    """The body is not JSON at all."""

    status = 400


class UnsupportedMediaType(InvalidInput):
    """The body is not sent as ``application/json``."""

    status = 415


class AlignmentFailed(ServiceError):
    """No face was found, the image is too small to search, or the landmarks are degenerate."""

    error_type = ErrorType.ALIGNMENT_ERROR
    status = 422


class ModelInferenceFailed(ServiceError):
    """The embedding model raised while running."""

    error_type = ErrorType.MODEL_INFERENCE_ERROR
    status = 500


class ModelNotLoaded(ServiceError):
    """The model (or the detector) failed to load at start-up; the message says why."""

    error_type = ErrorType.MODEL_LOAD_ERROR
    status = 503


class PayloadTooLarge(ServiceError):
    """The request body is over the configured limit."""

    error_type = ErrorType.PAYLOAD_TOO_LARGE
    status = 413


class ServerBusy(ServiceError):
    """``MAX_CONCURRENT_REQUESTS`` requests are already in flight; retry after ``Retry-After``."""

    error_type = ErrorType.SERVER_BUSY
    status = 503


class Unauthorized(ServiceError):
    """API keys are configured and the request carries none, or a wrong one."""

    error_type = ErrorType.UNAUTHORIZED
    status = 401


class BodyTimeout(ServiceError):
    """The request body did not arrive within ``server.body_timeout_s``."""

    error_type = ErrorType.TIMEOUT
    status = 408


class RequestTimeout(ServiceError):
    """The answer was not ready within ``server.request_timeout_s`` (queueing included)."""

    error_type = ErrorType.TIMEOUT
    status = 504


class ClientGone(ServiceError):
    """The client disconnected; the work for it was stopped (nobody receives this answer)."""

    error_type = ErrorType.CLIENT_GONE
    status = 499


class HostNotAllowed(ServiceError):
    """The ``Host`` header names a host that ``server.allowed_hosts`` does not list."""

    error_type = ErrorType.INVALID_INPUT
    status = 400


def public_reason(e: BaseException, limit: int = 300) -> str:
    """What a client may read about a server-side failure: its kind and the first line of its
    message, absolute paths cut to their last part (the trace and the paths go to the log only)."""
    first = (str(e).strip().splitlines() or [""])[0]
    text = f"{type(e).__name__}: {_ABS_PATH.sub(lambda m: m.group(1) or '/', first)}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


#: The ``error_type`` used for plain HTTP errors raised by the router.
HTTP_STATUS_TYPES: dict[int, ErrorType] = {
    404: ErrorType.NOT_FOUND,
    405: ErrorType.METHOD_NOT_ALLOWED,
    413: ErrorType.PAYLOAD_TOO_LARGE,
    415: ErrorType.INVALID_INPUT,
    400: ErrorType.INVALID_INPUT,
    422: ErrorType.INVALID_INPUT,
    401: ErrorType.UNAUTHORIZED,
    408: ErrorType.TIMEOUT,
    431: ErrorType.HEADERS_TOO_LARGE,
    504: ErrorType.TIMEOUT,
}
