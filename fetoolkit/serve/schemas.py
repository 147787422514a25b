"""Request and response bodies of the HTTP API (pydantic models; they also make the OpenAPI docs)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

IMAGE_DOC = (
    "the encoded image file (JPEG, PNG, PGM, BMP, WebP, TIFF...) in base64; a `data:image/...;base64,` "
    "prefix and line breaks are accepted"
)


class ExtractRequest(BaseModel):
    """``POST /api/extract-embedding``."""

    image: str = Field(description=IMAGE_DOC)
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

    image1: str = Field(description=IMAGE_DOC)
    image2: str = Field(description=IMAGE_DOC)
    aligned: bool = Field(False, description="both images are aligned crops (see /api/extract-embedding)")


class BatchRequest(BaseModel):
    """``POST /api/extract-embedding/batch``: several images, one embedding (or one error) each."""

    images: list[str] = Field(min_length=1, description=f"a list of images; each is {IMAGE_DOC}")
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
    threshold: float = Field(description="the configured decision threshold (verify.threshold)")
    is_same_person: bool = Field(description="score >= threshold")
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
    weights_sha256: str | None = None
    detector_loaded: bool = False
    detector_backend: str | None = Field(
        None, description="MTCNN runtime: onnx (onnxruntime) or torch (facenet-pytorch); unused by other detectors"
    )
    detector: str | None = Field(None, description="the face detector: yunet | retinaface | mtcnn")
    error: str | None = Field(None, description="why the model did not load (status is then unhealthy)")


class HealthResponse(BaseModel):
    """Answer of ``/api/health``."""

    status: str = Field(description="healthy | unhealthy (model or detector not loaded)")
    service: str
    version: str
    timestamp: str = Field(description="UTC, ISO 8601")
    model_status: ModelStatus
    in_flight: int = Field(description="requests being served now")
    rejected_busy: int = Field(description="requests refused with SERVER_BUSY since start-up")
    max_concurrent_requests: int
    verify_threshold: float
    face_select: str


class ErrorResponse(BaseModel):
    """Every error answer (4xx / 5xx)."""

    success: bool = False
    error_type: str = Field(
        description=(
            "IMAGE_DECODE_ERROR | INVALID_INPUT | ALIGNMENT_ERROR | MODEL_INFERENCE_ERROR | MODEL_LOAD_ERROR | "
            "PAYLOAD_TOO_LARGE | SERVER_BUSY | NOT_FOUND | METHOD_NOT_ALLOWED | INTERNAL_ERROR"
        )
    )
    message: str
    details: Any = None
