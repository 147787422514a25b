"""The service's work, without HTTP: base64 -> image -> (detect, select, align) -> embed.

``EmbeddingService`` owns the embedder, the face detector and the micro-batcher. Its methods
block; the HTTP layer runs them in a thread pool, never on the event loop. Every stage is the
project's own function (``decode_image``, the detector's ``detect``, ``select_face``, ``align``,
``crop_face``, the embedder's ``embed_raw``, ``l2_normalize``, ``face_quality``); this module only
composes them and turns their failures into typed ``ServiceError`` s.
"""

from __future__ import annotations

import base64
import binascii
import logging
import queue
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from fetoolkit.backends.common import l2_normalize
from fetoolkit.detect.align import align
from fetoolkit.detect.base import FaceDetector
from fetoolkit.detect.registry import build_detector
from fetoolkit.detect.single_shot import SingleShotCfg
from fetoolkit.imageio import SERVICE_BUDGET, DecodeBudget, ImageDecodeError, decode_image
from fetoolkit.metrics.quality import face_quality
from fetoolkit.pipeline import AlignmentError, PipelineCfg, crop_face, detect_scaled
from fetoolkit.serve.batcher import MicroBatcher
from fetoolkit.serve.errors import (
    AlignmentFailed,
    ClientGone,
    ImageDecodeFailed,
    ModelInferenceFailed,
    ModelNotLoaded,
    RequestTimeout,
    ServiceError,
    public_reason,
)
from fetoolkit.serve.schemas import ImageInput
from fetoolkit.serve.settings import ServeSettings
from fetoolkit.serve.work import Work, check
from fetoolkit.types import Embedder

log = logging.getLogger(__name__)

QualityFn = Callable[[np.ndarray], np.ndarray]
#: PIL names the in-memory file in its messages ("<_io.BytesIO object at 0x...>"): not for users.
_PIL_OBJECT = re.compile(r"<_io\.BytesIO object at 0x[0-9a-fA-F]+>")


@dataclass(frozen=True)
class FaceResult:
    """One embedded face.

    Attributes:
        embedding: float32 ``[D]``, L2-normalised.
        quality: ``face_quality`` of the raw embedding, in [0, 1].
        confidence: detector score of the kept face; ``None`` when no detection ran.
        detection_ran: False for aligned input.
        box: float32 ``[4]`` x1, y1, x2, y2 (``None`` without detection).
        landmarks: float32 ``[5, 2]`` (``None`` without detection).
        faces_found: faces the detector found (``None`` without detection).
    """

    embedding: np.ndarray
    quality: float | None
    confidence: float | None
    detection_ran: bool
    box: np.ndarray | None = None
    landmarks: np.ndarray | None = None
    faces_found: int | None = None


@dataclass(frozen=True)
class _Crop:
    face: np.ndarray
    confidence: float | None
    box: np.ndarray | None
    landmarks: np.ndarray | None
    faces_found: int | None


def decode_base64(data: str) -> bytes:
    """Base64 text (optionally a ``data:...;base64,`` URL, with line breaks, URL-safe alphabet or
    missing padding) -> bytes. Raises ``ImageDecodeFailed``."""
    if data.startswith("data:"):
        comma = data.find(",", 0, 256)
        if comma < 0 or ";base64" not in data[:comma].lower():
            raise ImageDecodeFailed("a data URL image must look like data:image/...;base64,<data>")
        data = data[comma + 1 :]
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        pass
    cleaned = "".join(data.split())
    if "-" in cleaned or "_" in cleaned:
        cleaned = cleaned.translate(str.maketrans("-_", "+/"))
    cleaned += "=" * (-len(cleaned) % 4)
    try:
        return base64.b64decode(cleaned, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ImageDecodeFailed(f"image is not valid base64: {e}") from None


class EmbeddingService:
    """Model, detector and batcher behind the HTTP API.

    Args:
        settings: the service settings.
        embedder: an embedder to use instead of ``create_embedder(settings.model, ...)``.
        detector: a detector to use instead of the configured one (``settings.detector``).
    """

    def __init__(
        self, settings: ServeSettings, *, embedder: Embedder | None = None, detector: FaceDetector | None = None
    ) -> None:
        self.settings = settings
        self.embedder: Embedder | None = embedder
        self.detector: FaceDetector | None = detector
        self.model_error: str | None = None
        self.detector_error: str | None = None
        #: called with (stage, seconds) for decode / detect / embed (the app's metrics)
        self.observe: Callable[[str, float], None] = lambda stage, seconds: None
        self.budget = DecodeBudget(formats=SERVICE_BUDGET.formats, max_jpeg_scans=settings.max_jpeg_scans)
        self.quality_fn: QualityFn = face_quality
        self.batcher: MicroBatcher | None = None
        self._load_lock = threading.Lock()
        self._image_slots = threading.BoundedSemaphore(settings.inference_workers)
        self._detectors: queue.SimpleQueue[FaceDetector] = queue.SimpleQueue()

    # ---------------------------------------------------------------- loading
    def load(self) -> None:
        """Create the embedder and the detector (once); failures are kept in ``model_error`` /
        ``detector_error`` and answered with ``MODEL_LOAD_ERROR``, the process keeps running."""
        with self._load_lock:
            s = self.settings
            from fetoolkit.backends.onnx_backend import use_memory_arena

            use_memory_arena(s.onnx_arena)
            mtcnn_torch = not isinstance(s.detector, SingleShotCfg) and s.detector_backend == "torch"
            if s.torch_threads and (s.backend == "torch" or mtcnn_torch):
                import torch

                torch.set_num_threads(int(s.torch_threads))
            if self.embedder is None and self.model_error is None:
                try:
                    from fetoolkit.models.factory import create_embedder
                    from fetoolkit.models.registry import get_model_spec

                    self.embedder = create_embedder(
                        s.model,
                        weights=s.weights,
                        backend=s.backend,
                        num_threads=s.num_threads,
                        batch_size=32,
                        export_in_subprocess=True,
                    )
                    rms_ref = get_model_spec(s.model).quality_rms_ref
                    if rms_ref is not None:
                        self.quality_fn = partial(face_quality, rms_ref=rms_ref)
                except Exception as e:  # any failure to load is reported (kind and reason), not fatal
                    self.model_error = public_reason(e)
                    log.exception("model %s (%s) did not load", s.model, s.backend)
            if self.detector is None and self.detector_error is None:
                try:
                    self.detector = self._new_detector()
                except Exception as e:
                    self.detector_error = public_reason(e)
                    log.exception("detector %s did not load", self.detector_name)
            if self.detector is not None and self._detectors.empty():
                # inference_workers detections at a time (see detector_shared)
                self._detectors.put(self.detector)
                for _ in range(s.inference_workers - 1):
                    self._detectors.put(self.detector if self.detector_shared else self._new_detector())
            if self.embedder is not None and self.batcher is None:
                self.batcher = MicroBatcher(
                    self._embed_batch, max_batch=s.max_batch, workers=s.inference_workers, name="embed"
                )
            if s.warmup:
                self._warmup()
            if self.ready:
                log.info(
                    "loaded %s (%s, %d-d, weights sha256 %s); %d inference workers, max_batch %d",
                    self.embedder.name,
                    self.embedder.backend,
                    self.embedder.contract.embed_dim,  # type: ignore[union-attr]
                    (getattr(self.embedder, "weights_sha256", None) or "-")[:12],
                    s.inference_workers,
                    s.max_batch,
                )

    def _new_detector(self) -> FaceDetector:
        """The configured detector (single-threaded: parallelism comes from the workers)."""
        s = self.settings
        return build_detector(s.detector, num_threads=1, backend=s.detector_backend)

    @property
    def detector_shared(self) -> bool:
        """One detector instance serves every worker: onnxruntime sessions are thread-safe; a torch
        MTCNN serialises its calls, so each worker gets its own (a few MB of weights each)."""
        return isinstance(self.settings.detector, SingleShotCfg) or self.settings.detector_backend == "onnx"

    @property
    def detector_name(self) -> str:
        d = self.settings.detector
        return d.name if isinstance(d, SingleShotCfg) else "mtcnn"

    def _warmup(self) -> None:
        """One model call and one detection so that the first request is not the slow one."""
        if self.embedder is not None and self.batcher is not None:
            h, w = self.embedder.contract.size
            try:
                for _ in range(2):
                    self.batcher(np.zeros((1, h, w, 3), np.uint8))
            except Exception as e:
                self.model_error = f"model loaded but failed its first run: {public_reason(e)}"
                log.exception("model loaded but failed its first run")
        for _ in range(self._detectors.qsize()):
            with self._detector() as det:
                det.detect(np.full((160, 160, 3), 128, np.uint8))

    @property
    def ready(self) -> bool:
        """Model and detector both loaded."""
        return self.embedder is not None and self.detector is not None and self.model_error is None

    def close(self) -> None:
        """Stop the batcher's threads."""
        if self.batcher is not None:
            self.batcher.close()

    def model_status(self, details: bool = True) -> dict[str, Any]:
        """The ``model_status`` part of /api/health; ``details=False`` leaves out the weights' sha256
        (callers without a key when keys are set)."""
        e = self.embedder
        s = self.settings
        if e is None:
            return {
                "loaded": False,
                "model_name": s.model,
                "backend": s.backend,
                "input_shape": None,
                "embedding_dim": None,
                "contract": None,
                "weights_sha256": None,
                "detector_loaded": self.detector is not None,
                "detector_backend": s.detector_backend,
                "detector": self.detector_name,
                "error": self.model_error or self.detector_error,
            }
        c = e.contract
        shape: list[int | None] = [None, 3, *c.size] if c.layout == "NCHW" else [None, *c.size, 3]
        return {
            "loaded": self.model_error is None,
            "model_name": e.name,
            "backend": e.backend,
            "input_shape": shape,
            "embedding_dim": c.embed_dim,
            "contract": c.to_dict(),
            "weights_sha256": getattr(e, "weights_sha256", None) if details else None,
            "detector_loaded": self.detector is not None,
            "detector_backend": s.detector_backend,
            "detector": self.detector_name,
            "error": self.model_error or self.detector_error,
        }

    # ---------------------------------------------------------------- stages
    def _embed_batch(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Batcher function: crops -> (L2-normalised embeddings [N, D], quality [N]).

        The model runs once (``embed_raw``); the normalised embedding and the quality score both
        come from that one raw output.
        """
        assert self.embedder is not None
        raw = self.embedder.embed_raw(crops)
        emb = l2_normalize(raw)
        quality = np.asarray(self.quality_fn(raw), dtype=np.float32).reshape(len(raw))
        return emb, quality

    def _require_model(self) -> Embedder:
        if self.embedder is None or self.batcher is None or self.model_error is not None:
            raise ModelNotLoaded(f"model {self.settings.model!r} is not loaded: {self.model_error or 'still loading'}")
        return self.embedder

    def decode(self, image: ImageInput) -> np.ndarray:
        """Base64 text or file bytes -> uint8 ``[H, W, 3]`` RGB (EXIF orientation applied; grey, RGBA
        and 16-bit converted by ``decode_image``), within the service's decode budget (formats,
        pixels, JPEG scans: checked before decoding). Raises ``ImageDecodeFailed``."""
        data = image if isinstance(image, bytes) else decode_base64(image)
        t0 = time.perf_counter()
        try:
            return decode_image(data, max_pixels=self.settings.max_pixels, budget=self.budget)
        except ImageDecodeError as e:
            raise ImageDecodeFailed(_PIL_OBJECT.sub("the data", str(e))) from None
        except MemoryError:
            raise ImageDecodeFailed("image is too large to decode") from None
        except Exception as e:  # a decoder tripping on hostile bytes is still a bad image, not a 500
            log.debug("decoder raised %s on %d bytes", type(e).__name__, len(data), exc_info=True)
            raise ImageDecodeFailed(f"corrupt image data ({public_reason(e)})") from None
        finally:
            self.observe("decode", time.perf_counter() - t0)

    def crop(self, image: np.ndarray, aligned: bool) -> _Crop:
        """An image -> the aligned crop to embed, with what detection found.

        ``aligned``: the image already is a template-aligned crop (resized to the model's size).
        Otherwise the project's one face pipeline, ``fetoolkit.pipeline.crop_face``, with this
        service's ``PipelineCfg`` (``settings.pipeline``: ``detect_max_side``, ``face_select``);
        this method only maps its exceptions to the API's typed errors.
        """
        embedder = self._require_model()
        size = embedder.contract.size
        if aligned:
            c = crop_face(image, None, PipelineCfg(align=False), size)
            return _Crop(c.face, None, None, None, None)
        if self.detector is None:
            raise ModelNotLoaded(
                f'the face detector is not loaded: {self.detector_error}; send aligned crops with "aligned": true'
            )
        t0 = time.perf_counter()
        try:
            with self._detector() as detector:
                c = crop_face(image, detector, self.settings.pipeline, size)
        except LookupError:
            raise AlignmentFailed(
                f"no face found in the {image.shape[1]}x{image.shape[0]} image; send a photo with "
                f'a visible face, or an aligned crop with "aligned": true'
            ) from None
        except AlignmentError as e:
            raise AlignmentFailed(f"alignment failed: {e}") from None
        except ValueError as e:  # too small for MTCNN
            raise AlignmentFailed(f"cannot search this image for faces: {e}") from None
        finally:
            self.observe("detect", time.perf_counter() - t0)
        return _Crop(c.face, c.score, c.box, c.landmarks, c.n_faces)

    def crop_all(self, image: np.ndarray) -> list[_Crop]:
        """Every face of ``image`` (at most ``settings.max_faces``, best score first), each aligned.

        A face whose landmarks do not align is left out; ``faces_found`` of each crop counts every
        face the detector returned. Raises ``AlignmentFailed`` when there is none.
        """
        embedder = self._require_model()
        if self.detector is None:
            raise ModelNotLoaded(f"the face detector is not loaded: {self.detector_error}")
        t0 = time.perf_counter()
        try:
            with self._detector() as detector:
                dets = detect_scaled(detector, image, self.settings.detect_max_side)
        except ValueError as e:
            raise AlignmentFailed(f"cannot search this image for faces: {e}") from None
        finally:
            self.observe("detect", time.perf_counter() - t0)
        dets = sorted(dets, key=lambda d: -d.score)
        out = []
        for d in dets:
            if len(out) == self.settings.max_faces:
                break
            try:
                face = align(image, d.landmarks, embedder.contract.size)
            except ValueError:
                continue
            out.append(_Crop(face, d.score, d.box, d.landmarks, len(dets)))
        if not out:
            raise AlignmentFailed(f"no face found in the {image.shape[1]}x{image.shape[0]} image")
        return out

    def prepare(self, image: ImageInput, aligned: bool, work: Work | None = None) -> _Crop:
        """``decode`` then ``crop``, at most ``inference_workers`` images at a time: a decoded photo
        can be tens of MB, so requests waiting for the cores hold only their encoded bytes. Each
        stage starts only while ``work`` is wanted (not past its deadline, client still there)."""
        with self._image_slots:
            check(work, "decoding")
            decoded = self.decode(image)
            check(work, "detection")
            return self.crop(decoded, aligned)

    def prepare_all(self, image: ImageInput, work: Work | None = None) -> list[_Crop]:
        """``decode`` then ``crop_all`` (see ``prepare``)."""
        with self._image_slots:
            check(work, "decoding")
            decoded = self.decode(image)
            check(work, "detection")
            return self.crop_all(decoded)

    @contextmanager
    def _detector(self) -> Iterator[FaceDetector]:
        """Borrow one of the detectors (waits while all are busy)."""
        det = self._detectors.get()
        try:
            yield det
        finally:
            self._detectors.put(det)

    def embed(self, faces: np.ndarray, work: Work | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Aligned crops ``[N, H, W, 3]`` -> (embeddings ``[N, D]``, quality ``[N]``) through the batcher."""
        self._require_model()
        assert self.batcher is not None
        check(work, "the model")
        t0 = time.perf_counter()
        try:
            emb, quality = self.batcher(faces)
        except ServiceError:
            raise
        except Exception as e:
            log.exception("model inference failed on %d faces", len(faces))
            raise ModelInferenceFailed(f"model inference failed: {public_reason(e)}") from None
        finally:
            self.observe("embed", time.perf_counter() - t0)
        return emb, quality

    # ---------------------------------------------------------------- requests
    def extract(self, image: ImageInput, aligned: bool, work: Work | None = None) -> FaceResult:
        """One image -> one ``FaceResult`` (raises a ``ServiceError``)."""
        self._require_model()
        c = self.prepare(image, aligned, work)
        emb, quality = self.embed(c.face[None], work)
        return _result(c, emb[0], quality[0])

    def extract_all(self, image: ImageInput, work: Work | None = None) -> list[FaceResult]:
        """One image -> every face's ``FaceResult``, best score first (one model call)."""
        self._require_model()
        crops = self.prepare_all(image, work)
        emb, quality = self.embed(np.stack([c.face for c in crops]), work)
        return [_result(c, emb[k], quality[k]) for k, c in enumerate(crops)]

    def extract_many(
        self, images: list[ImageInput], aligned: bool, all_faces: bool = False, work: Work | None = None
    ) -> list[list[FaceResult] | ServiceError]:
        """Several images -> per image its faces (one, or all of them with ``all_faces``) or one typed
        error; every good crop of the request is embedded in one model call."""
        self._require_model()
        crops: list[list[_Crop] | ServiceError] = []
        for image in images:
            try:
                if all_faces and not aligned:
                    crops.append(self.prepare_all(image, work))
                else:
                    crops.append([self.prepare(image, aligned, work)])
            except ServiceError as e:
                if isinstance(e, (ModelNotLoaded, *_FATAL)):
                    raise
                crops.append(e)
        flat = [c for cs in crops if not isinstance(cs, ServiceError) for c in cs]
        out: list[list[FaceResult] | ServiceError] = []
        if flat:
            emb, quality = self.embed(np.stack([c.face for c in flat]), work)
        row = 0
        for cs in crops:
            if isinstance(cs, ServiceError):
                out.append(cs)
                continue
            out.append([_result(c, emb[row + k], quality[row + k]) for k, c in enumerate(cs)])
            row += len(cs)
        return out

    def verify(
        self, image1: ImageInput, image2: ImageInput, aligned: bool, work: Work | None = None
    ) -> tuple[float, FaceResult, FaceResult]:
        """Two images -> (cosine score, face 1, face 2); both faces run in one model call."""
        self._require_model()
        c1 = self.prepare(image1, aligned, work)
        c2 = self.prepare(image2, aligned, work)
        emb, quality = self.embed(np.stack([c1.face, c2.face]), work)
        score = float(np.clip(emb[0] @ emb[1], -1.0, 1.0))
        return score, _result(c1, emb[0], quality[0]), _result(c2, emb[1], quality[1])


#: Errors that end the whole request, not one image of a batch.
_FATAL = (ClientGone, RequestTimeout)


def _result(c: _Crop, emb: np.ndarray, quality: float) -> FaceResult:
    q = float(quality)
    return FaceResult(
        embedding=emb,
        quality=None if np.isnan(q) else q,
        confidence=c.confidence,
        detection_ran=c.confidence is not None,
        box=c.box,
        landmarks=c.landmarks,
        faces_found=c.faces_found,
    )
