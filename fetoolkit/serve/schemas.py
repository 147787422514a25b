"""Request and response bodies of the HTTP API (pydantic models; they also make the OpenAPI docs)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

IMAGE_DOC = (
    "the encoded image file (JPEG, PNG, WebP, BMP, GIF, TIFF, PGM/PPM) in base64; a `data:image/...;base64,` "
    "prefix and line breaks are accepted"
)
#: An image as a request carries it: base64 text (JSON, a multipart text part) or the file's bytes.
ImageInput = str | bytes
#: No image file is shorter than this in base64 (a 1x1 GIF is 35 bytes, 48 characters).
MIN_IMAGE_CHARS = 16
#: The schema's limit of images per batch (``server.max_batch_images`` may lower it).
BATCH_MAX_ITEMS = 32


def _image(description: str = IMAGE_DOC) -> Any:
    return Field(min_length=MIN_IMAGE_CHARS, description=description)


class ExtractRequest(BaseModel):
    """``POST /api/extract-embedding``."""

    image: str = _image()
    aligned: bool = Field(
        False,
        description=(
            "true: the image is already a face crop aligned to the ArcFace template (resized to the model's "
            "input size if it differs; no detection runs). false: detect faces, keep one by the configured "
            "policy, align it, then embed"
        ),
    )
    all_faces: bool = Field(
        False,
        description=(
            "true: embed every face found (at most server.max_faces, best score first) and return them in "
            "`faces`; `embedding` is then the best-scored one. Ignored for aligned input"
        ),
    )


class VerifyRequest(BaseModel):
    """``POST /api/verify``: are two images the same person?"""

    image1: str = _image()
    image2: str = _image()
    aligned: bool = Field(False, description="both images are aligned crops (see /api/extract-embedding)")
    threshold: float | None = Field(
        None,
        ge=-1.0,
        le=1.0,
        description=(
            "this request's decision threshold (a cosine); null: the decision profile's threshold at `fmr` "
            "(with a profile loaded), else the server's verify.threshold"
        ),
    )
    fmr: float | None = Field(
        None,
        gt=0.0,
        lt=1.0,
        description=(
            "decide at the decision profile's threshold for this false match rate target (one the profile has: "
            "/api/health `profile.fmrs`; another is answered 422 listing them); null: the server's verify.fmr. "
            "Needs a profile (PROFILE_PATH); not together with `threshold`"
        ),
    )
    prior: float | None = Field(
        None,
        gt=0.0,
        lt=1.0,
        description="prior probability of 'same person' for `p_same`; null: the profile's. Needs a profile",
    )


class BatchRequest(BaseModel):
    """``POST /api/extract-embedding/batch``: several images, one embedding (or one error) each."""

    images: list[str] = Field(
        min_length=1,
        max_length=BATCH_MAX_ITEMS,
        description=f"1 to {BATCH_MAX_ITEMS} images (server.max_batch_images may allow fewer); each is {IMAGE_DOC}",
    )
    aligned: bool = Field(False, description="every image is an aligned crop (see /api/extract-embedding)")
    all_faces: bool = Field(
        False, description="every face of each image, in its item's `faces` (see /api/extract-embedding)"
    )


class FaceEmbedding(BaseModel):
    """One face's embedding and what is known about how it was found."""

    embedding: list[float] = Field(description="L2-normalised embedding (length embedding_dim)")
    quality: float | None = Field(
        description=(
            "face-quality score in [0, 1] from fetoolkit.metrics.quality.face_quality on the embedding before "
            "normalisation (higher: more usable for recognition)"
        )
    )
    confidence: float | None = Field(
        description=("detection confidence of the kept face; null when no detection ran (aligned input)")
    )
    detection_ran: bool = Field(
        description="false for aligned input: box, landmarks, faces_found and confidence are then null"
    )
    box: list[float] | None = Field(None, description="kept face as [x1, y1, x2, y2] in input-image pixels")
    landmarks: list[list[float]] | None = Field(
        None, description=("5 points [x, y] in input-image pixels: left eye, right eye, nose, mouth left, mouth right")
    )
    faces_found: int | None = Field(None, description="number of faces the detector found in the image")
    embedding_dim: int


class ExtractResponse(BaseModel):
    """Answer of ``/api/extract-embedding``."""

    success: bool = True
    embedding: FaceEmbedding
    faces: list[FaceEmbedding] | None = Field(
        None, description="with all_faces: every face embedded, best detection score first"
    )
    message: str | None = None


class FaceSummary(BaseModel):
    """What /api/verify says about each of its two faces (no embedding)."""

    quality: float | None
    confidence: float | None
    detection_ran: bool
    box: list[float] | None = None
    faces_found: int | None = None


class Verification(BaseModel):
    """The decision of /api/verify."""

    score: float = Field(description="cosine similarity of the two embeddings, in [-1, 1]")
    threshold: float = Field(description="the decision threshold used")
    threshold_source: str = Field(
        description=(
            "request (the request's own threshold) | profile (the decision profile's threshold at `fmr`) | "
            "server (verify.threshold, no profile loaded)"
        )
    )
    is_same_person: bool = Field(description="score >= threshold")
    fmr: float | None = Field(None, description="the FMR target of a profile threshold; null otherwise")
    llr: float | None = Field(
        None,
        description="natural-log likelihood ratio of 'same person' by the decision profile's calibration; "
        "null without a profile",
    )
    p_same: float | None = Field(None, description="probability of 'same person' at `prior`; null without a profile")
    prior: float | None = Field(None, description="the prior of `p_same` (the request's or the profile's)")
    profile_id: str | None = Field(None, description="the decision profile's id; null without a profile")
    warnings: list[str] = Field(
        default_factory=list,
        description="what the profile does not vouch for here (a profile run despite differences, another "
        "backend, aligned input)",
    )
    face1: FaceSummary
    face2: FaceSummary


class VerifyResponse(BaseModel):
    """Answer of ``/api/verify``."""

    success: bool = True
    verification: Verification
    message: str | None = None


class BatchItem(BaseModel):
    """One image's result inside a batch answer: an embedding, or a typed error."""

    success: bool
    embedding: FaceEmbedding | None = None
    faces: list[FaceEmbedding] | None = Field(None, description="with all_faces: every face, best score first")
    error_type: str | None = None
    message: str | None = None


class BatchResponse(BaseModel):
    """Answer of ``/api/extract-embedding/batch``: one item per input image, in order."""

    success: bool = True
    results: list[BatchItem]
    n_ok: int
    n_failed: int
    message: str | None = None


class ModelStatus(BaseModel):
    """The model part of /api/health."""

    model_config = ConfigDict(protected_namespaces=())

    loaded: bool
    model_name: str
    backend: str
    input_shape: list[int | None] | None = Field(
        description="model input, batch dimension null, in the contract's layout"
    )
    embedding_dim: int | None
    contract: dict[str, Any] | None = Field(description="the model's input contract (size, colour, mean/std, layout)")
    weights_sha256: str | None = Field(None, description="null for callers without an API key when keys are set")
    detector_loaded: bool = False
    detector_backend: str | None = Field(
        None, description="MTCNN runtime: onnx (onnxruntime) or torch (facenet-pytorch); unused by other detectors"
    )
    detector: str | None = Field(None, description="the face detector: yunet | retinaface | mtcnn")
    error: str | None = Field(
        None, description="why the model did not load, by kind and reason (status is then unhealthy; trace: server log)"
    )


class ProfileStatus(BaseModel):
    """The decision profile part of /api/health."""

    profile_id: str
    path: str = Field(description="the profile file (its name only, for callers without a key when keys are set)")
    model: str | None = Field(description="the registry name of the model the profile was made for")
    fmr: float = Field(description="the FMR target /api/verify decides at unless a request names one")
    threshold: float = Field(description="the profile's threshold at `fmr` (a cosine)")
    fmrs: list[float] = Field(description="the FMR targets the profile has thresholds for (a request's `fmr`)")
    prior: float = Field(description="the prior of `p_same` unless a request names one")
    warnings: list[str] = Field(description="what the profile does not vouch for here (in every answer too)")


class HealthResponse(BaseModel):
    """Answer of ``/api/health``."""

    status: str = Field(description="healthy | unhealthy (model or detector not loaded)")
    service: str
    version: str
    timestamp: str = Field(description="UTC, ISO 8601")
    model_status: ModelStatus
    in_flight: int | None = Field(description="requests being served now (null without an API key when keys are set)")
    rejected_busy: int | None = Field(description="requests refused with SERVER_BUSY since start-up (same)")
    auth_required: bool = Field(False, description="POST routes need an API key (X-API-Key or Authorization: Bearer)")
    max_concurrent_requests: int
    verify_threshold: float = Field(description="verify.threshold: the decision threshold without a profile")
    face_select: str
    profile: ProfileStatus | None = Field(None, description="the decision profile (PROFILE_PATH); null: none")


class ErrorResponse(BaseModel):
    """Every error answer (4xx / 5xx)."""

    success: bool = False
    error_type: str = Field(
        description=(
            "IMAGE_DECODE_ERROR | INVALID_INPUT | ALIGNMENT_ERROR | MODEL_INFERENCE_ERROR | MODEL_LOAD_ERROR | "
            "PAYLOAD_TOO_LARGE | SERVER_BUSY | UNAUTHORIZED | TIMEOUT | HEADERS_TOO_LARGE | NOT_FOUND | "
            "METHOD_NOT_ALLOWED | INTERNAL_ERROR"
        )
    )
    message: str
    details: Any = None
