"""Typed service errors: one exception class per error kind, each with its HTTP status.

Every error the service answers with is JSON of the same shape (``ErrorResponse``)::

    {"success": false, "error_type": "IMAGE_DECODE_ERROR", "message": "...", "details": null}

The kinds of the original design (image decode, invalid input, model inference, model load,
alignment / no face) are joined by the transport-level ones (payload too large, server busy,
not found, method not allowed) and a last-resort ``INTERNAL_ERROR``.
"""

from __future__ import annotations

from enum import Enum
from typing import Any


class ErrorType(str, Enum):
    """The ``error_type`` of an error response."""

    IMAGE_DECODE_ERROR = "IMAGE_DECODE_ERROR"
    INVALID_INPUT = "INVALID_INPUT"
    ALIGNMENT_ERROR = "ALIGNMENT_ERROR"
    MODEL_INFERENCE_ERROR = "MODEL_INFERENCE_ERROR"
    MODEL_LOAD_ERROR = "MODEL_LOAD_ERROR"
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    SERVER_BUSY = "SERVER_BUSY"
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


#: The ``error_type`` used for plain HTTP errors raised by the router.
HTTP_STATUS_TYPES: dict[int, ErrorType] = {
    404: ErrorType.NOT_FOUND,
    405: ErrorType.METHOD_NOT_ALLOWED,
    413: ErrorType.PAYLOAD_TOO_LARGE,
    415: ErrorType.INVALID_INPUT,
    400: ErrorType.INVALID_INPUT,
    422: ErrorType.INVALID_INPUT,
}
