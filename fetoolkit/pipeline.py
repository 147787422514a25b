"""detect -> align -> embed over a list of images, with progress bars and an on-disk cache.

The eval job, the gate, the parity job, the service and the notebooks all go through these
functions; none re-implements a stage. :func:`embed_dataset` is the cached whole-data-set
version (see :mod:`fetoolkit.cache` for what the keys hold).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from fetoolkit.backends.common import batches
from fetoolkit.cache import EmbeddingCache, content_digest, decode_failures, digest, encode_failures
from fetoolkit.cpu import compute_signature, one_torch_thread
from fetoolkit.detect.align import ARCFACE_TEMPLATE, align, resize_whole
from fetoolkit.detect.base import DetectorCfg, FaceDetector, SelectPolicy, select_face
from fetoolkit.detect.single_shot import SingleShotCfg
from fetoolkit.imageio import ImageDecodeError, decode_image, read_image
from fetoolkit.sharing import fair_share
from fetoolkit.types import Detection, Embedder
from fetoolkit.versions import library_versions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PipelineCfg:
    """How images become aligned crops.

    Attributes:
        align: detect + 5-point alignment (True) or resize the whole image (False, a baseline).
        select: which face to keep when MTCNN finds several.
        detect_max_side: detect on a copy shrunk to this longer side, align on the full image
            (``detect_scaled``); None: detect at full size. The service's default is 640 (its
            ``detect_max_side``): ``pipeline.detect_max_side=640`` evaluates with it.
        swap_rb: swap red and blue before embedding (a perturbation: feeds BGR to an RGB model).
        batch_size: faces per embedding call.
        progress: show progress bars.
        degrade: fraction of the crops degraded before embedding (a perturbation for quality
            studies: Gaussian blur, noise, darkening and 16-pixel resolution in turn, on a
            seeded random choice of images; see :func:`degrade_crops`).
        flip_test: the flip test (insightface's "F"): an image's feature is the sum of the raw
            features of its crop and of the mirrored crop, before normalisation; None: on for
            template protocols (IJB), off elsewhere. The mirrored crops' features are cached like
            the others (the same entry as the flip-consistency quality score's).
    """

    align: bool = True
    select: SelectPolicy = "most_confident"
    detect_max_side: int | None = None
    swap_rb: bool = False
    batch_size: int = 32
    progress: bool = True
    degrade: float = 0.0
    flip_test: bool | None = None


@dataclass
class Crops:
    """Aligned crops of a list of images.

    Attributes:
        faces: uint8 ``[N, H, W, 3]`` RGB (zeros where ``ok`` is False).
        ok: bool ``[N]``, False for failures to enrol.
        det_scores: float32 ``[N]`` detector confidence of the kept face (NaN: none, or no detection run).
        n_faces: int32 ``[N]`` faces found (-1 when detection did not run).
        landmarks: float32 ``[N, 5, 2]`` landmarks of the kept face (NaN where none).
        failures: ``{index: reason}`` for every image that did not enrol.
    """

    faces: np.ndarray
    ok: np.ndarray
    det_scores: np.ndarray
    n_faces: np.ndarray
    landmarks: np.ndarray
    failures: dict[int, str] = field(default_factory=dict)


class AlignmentError(ValueError):
    """The landmarks of the selected face cannot be aligned onto the template."""


@dataclass(frozen=True)
class FaceCrop:
    """One image's aligned crop and what detection found.

    Attributes:
        face: uint8 ``[H, W, 3]`` RGB crop at the model's size.
        score: detector confidence of the kept face (NaN without detection).
        n_faces: faces found (-1 without detection).
        landmarks: float32 ``[5, 2]`` of the kept face, in the image's pixels (NaN without).
        box: float32 ``[4]`` ``x1, y1, x2, y2`` of the kept face, or None without detection.
    """

    face: np.ndarray
    score: float
    n_faces: int
    landmarks: np.ndarray
    box: np.ndarray | None = None


def detect_scaled(detector: FaceDetector, image: np.ndarray, max_side: int | None) -> list[Detection]:
    """``detector.detect`` on ``image`` shrunk (``resize_whole``, area interpolation) so that its longer
    side is at most ``max_side``; boxes and landmarks come back in ``image``'s own pixels.

    MTCNN's cost and memory grow with the pixel count (a 3-megapixel photo: about a second and
    several hundred MB); the landmarks of a face that stays larger than ONet's 48-pixel input are
    as good at the smaller size. The crop is then aligned on the full-resolution image. ``None``:
    detect at full resolution. Detectors that scale their input themselves (``scales_itself``: YuNet,
    RetinaFace, by their own ``max_side``) get the image as it is.
    """
    h, w = image.shape[:2]
    if max_side is None or max(h, w) <= max_side or getattr(detector, "scales_itself", False):
        return detector.detect(image)
    scale = max_side / max(h, w)
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    small = resize_whole(image, size)
    sx, sy = w / size[1], h / size[0]
    box_scale = np.array([sx, sy, sx, sy], np.float32)
    pt_scale = np.array([sx, sy], np.float32)
    return [
        Detection(box=d.box * box_scale, score=d.score, landmarks=d.landmarks * pt_scale)
        for d in detector.detect(small)
    ]


def crop_face(
    image: np.ndarray, detector: FaceDetector | None, cfg: PipelineCfg, size: tuple[int, int] = (112, 112)
) -> FaceCrop:
    """One RGB image -> its aligned crop: the one face pipeline of the eval, parity, the gate and the service.

    Detection (``detect_scaled`` at ``cfg.detect_max_side``), face selection (``cfg.select``) and
    alignment; without ``cfg.align`` the whole image is resized.

    Raises:
        LookupError: alignment was asked for and no face is found.
        ValueError: the detector cannot search the image (e.g. smaller than its smallest face).
        AlignmentError: the selected face's landmarks do not align.
    """
    nan_lm = np.full((5, 2), np.nan, np.float32)
    if not cfg.align:
        return FaceCrop(resize_whole(image, size), float("nan"), -1, nan_lm)
    if detector is None:
        raise ValueError("alignment needs a detector")
    dets = detect_scaled(detector, image, cfg.detect_max_side)
    if not dets:
        raise LookupError("no face found")
    det = select_face(dets, image.shape, cfg.select)
    try:
        face = align(image, det.landmarks, size)
    except ValueError as e:
        raise AlignmentError(str(e)) from None
    return FaceCrop(face, det.score, len(dets), det.landmarks, det.box)


def crop_image(
    image: np.ndarray, detector: FaceDetector | None, cfg: PipelineCfg, size: tuple[int, int] = (112, 112)
) -> tuple[np.ndarray, float, int, np.ndarray]:
    """``crop_face`` as a tuple: (crop uint8 ``[H, W, 3]``, detector score, faces found, landmarks ``[5, 2]``)."""
    c = crop_face(image, detector, cfg, size)
    return c.face, c.score, c.n_faces, c.landmarks


@contextmanager
def one_thread_pool(tasks: int) -> Iterator[ThreadPoolExecutor]:
    """A pool whose threads run torch at one intra-op thread each, as many as the job's threads
    (its share of the cores beside other jobs, ``sharing.fair_share``) and at most ``tasks``."""
    with one_torch_thread() as threads, ThreadPoolExecutor(max(1, min(fair_share(threads), tasks))) as pool:
        yield pool


def crop_images(
    paths: Sequence[Path],
    detector: FaceDetector | None,
    cfg: PipelineCfg,
    *,
    size: tuple[int, int] = (112, 112),
    aligned: bool = False,
    images: Sequence[bytes] | None = None,
    landmarks: np.ndarray | None = None,
) -> Crops:
    """Read, detect and align every image; failures are recorded, never dropped silently.

    Args:
        paths: image files (labels only when ``images`` is given).
        detector: MTCNN (unused when ``aligned`` or ``cfg.align`` is False).
        cfg: pipeline settings.
        size: crop size (the model contract's).
        aligned: the images are already aligned crops (resized to ``size`` if they differ).
        images: encoded images in memory, one per path, decoded instead of reading ``paths``.
        landmarks: float32 ``[N, 5, 2]`` given landmarks (IJB's meta file), in each image's pixels:
            aligned from them without detection (``n_faces`` 1, no detector score).
    """
    if images is not None and len(images) != len(paths):
        raise ValueError(f"{len(images)} images for {len(paths)} paths")
    if landmarks is not None and landmarks.shape != (len(paths), 5, 2):
        raise ValueError(f"landmarks must be [N, 5, 2] for {len(paths)} images, got {landmarks.shape}")
    n = len(paths)
    out = Crops(
        np.zeros((n, *size, 3), np.uint8),
        np.zeros(n, bool),
        np.full(n, np.nan, np.float32),
        np.full(n, -1, np.int32),
        np.full((n, 5, 2), np.nan, np.float32),
    )
    step_cfg = PipelineCfg(align=False) if aligned else cfg
    desc = "align" if step_cfg.align else "load"

    def one(i: int) -> tuple[np.ndarray, float, int, np.ndarray] | Exception:
        try:
            image = read_image(paths[i]) if images is None else decode_image(images[i])
            if landmarks is not None and step_cfg.align:
                try:
                    return align(image, landmarks[i], size), float("nan"), 1, landmarks[i]
                except ValueError as e:
                    raise AlignmentError(f"the given landmarks do not align: {e}") from None
            return crop_image(image, detector, step_cfg, size)
        except (LookupError, ImageDecodeError, FileNotFoundError, ValueError) as e:
            return e

    # Every image is detected at one intra-op thread, several images at once: a crop's grey levels
    # then do not depend on the job's thread count, and no OpenMP team spins between tiny layers.
    bar = tqdm(total=n, desc=desc, unit="img", disable=not cfg.progress, leave=False)
    with one_thread_pool(n) as pool, bar:
        for i, r in enumerate(r for s in range(0, n, 256) for r in pool.map(one, range(s, min(n, s + 256)))):
            bar.update()
            if isinstance(r, Exception):
                out.failures[i] = f"{paths[i]}: {r}"
                if isinstance(r, LookupError):
                    out.n_faces[i] = 0
                continue
            out.faces[i], out.det_scores[i], out.n_faces[i], out.landmarks[i] = r
            out.ok[i] = True
    if out.failures:
        log.warning(
            "%d of %d images did not enrol (first: %s)", len(out.failures), n, next(iter(out.failures.values()))
        )
    return out


DEGRADATIONS = ("blur", "noise", "dark", "lowres")


def degrade(faces: np.ndarray, kind: str, seed: int = 0) -> np.ndarray:
    """A degraded copy of uint8 ``[N, H, W, 3]`` crops.

    ``blur``: Gaussian, sigma 3 px; ``noise``: Gaussian, sigma 40 grey levels; ``dark``: x0.25;
    ``lowres``: down to 16x16 and back up.
    """
    import cv2

    if kind == "blur":
        return np.stack([cv2.GaussianBlur(f, (0, 0), 3) for f in faces])
    if kind == "noise":
        noise = np.random.default_rng(seed).normal(0, 40, faces.shape)
        return np.clip(faces + noise, 0, 255).astype(np.uint8)
    if kind == "dark":
        return (faces * 0.25).astype(np.uint8)
    if kind == "lowres":
        h, w = faces.shape[1:3]
        return np.stack([cv2.resize(cv2.resize(f, (16, 16), interpolation=cv2.INTER_AREA), (w, h)) for f in faces])
    raise ValueError(f"unknown degradation {kind!r}; known: {DEGRADATIONS}")


def degrade_crops(faces: np.ndarray, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Degrade ``floor(fraction * N)`` crops chosen at random (seeded), cycling through :data:`DEGRADATIONS`.

    Returns:
        (uint8 ``[N, H, W, 3]`` crops, int8 ``[N]`` degradation index per crop, -1 = untouched).
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"pipeline.degrade must be in [0, 1], got {fraction}")
    out = faces.copy()
    kind = np.full(len(faces), -1, np.int8)
    pick = np.random.default_rng(seed).permutation(len(faces))[: int(fraction * len(faces))]
    for k, name in enumerate(DEGRADATIONS):
        sel = pick[k :: len(DEGRADATIONS)]
        if sel.size:
            out[sel] = degrade(faces[sel], name, seed)
            kind[sel] = k
    return out, kind


def embed_crops(crops: np.ndarray, embedder: Embedder, cfg: PipelineCfg, *, raw: bool = False) -> np.ndarray:
    """Embed uint8 RGB crops ``[N, H, W, 3]`` in batches with a progress bar.

    Returns float32 ``[N, D]``: L2-normalised, or before normalisation when ``raw``.
    """
    if cfg.swap_rb:
        crops = np.ascontiguousarray(crops[..., ::-1])
    fn = embedder.embed_raw if raw else embedder.embed
    out = np.empty((len(crops), embedder.contract.embed_dim), np.float32)
    slices = list(batches(len(crops), cfg.batch_size))

    def one(s: slice) -> None:
        out[s] = fn(crops[s])

    bar = tqdm(
        total=len(slices), desc=f"embed ({embedder.backend})", unit="batch", disable=not cfg.progress, leave=False
    )
    if embedder.backend != "torch":  # onnxruntime: its own intra-op threads per call
        with bar:
            for s in slices:
                one(s)
                bar.update()
        return out
    # torch: each batch at one intra-op thread, several batches at once (as for detection), so an
    # embedding does not depend on the job's thread count and no OpenMP team spins beside other jobs
    with one_thread_pool(len(slices)) as pool, bar:
        for _ in pool.map(one, slices):
            bar.update()
    return out


@dataclass
class EmbeddedSet:
    """Raw embeddings of a data set and how each image fared.

    Attributes:
        raw: float32 ``[N, D]`` embeddings before L2 normalisation (NaN rows where ``ok`` is False).
        raw_flip: float32 ``[N, D]`` embeddings of the mirrored crops, or None when not asked for.
        ok: bool ``[N]``, False for failures to enrol.
        det_scores: float32 ``[N]`` detector confidence of the kept face (NaN: none, or no detection).
        n_faces: int32 ``[N]`` faces found (-1 when detection did not run).
        landmarks: float32 ``[N, 5, 2]`` (NaN where none).
        failures: ``{index: reason}`` for every image that did not enrol.
        cache: ``"hit"`` (embeddings read from the cache), ``"miss"`` (computed and stored) or
            ``"off"``.
        crops_cache: the same for the aligned crops (``"skipped"`` when embeddings hit).
        timing_s: seconds spent hashing, detecting + aligning and embedding.
        key: the embedding cache key (None when the cache is off).
        degraded: int8 ``[N]`` index into :data:`DEGRADATIONS` of each degraded crop, -1 = untouched
            (see ``PipelineCfg.degrade``); None = all untouched.
        unit: float32 ``[N, D]`` L2-normalised embeddings as an embedding store holds them
            (:mod:`fetoolkit.store_read`), returned by :meth:`normalized` as they are, so that the
            scores equal those of the run that made them; None: normalise ``raw``.
    """

    raw: np.ndarray
    raw_flip: np.ndarray | None
    ok: np.ndarray
    det_scores: np.ndarray
    n_faces: np.ndarray
    landmarks: np.ndarray
    failures: dict[int, str]
    cache: str = "off"
    crops_cache: str = "off"
    timing_s: dict[str, float] = field(default_factory=dict)
    key: str | None = None
    degraded: np.ndarray | None = None
    unit: np.ndarray | None = None

    def normalized(self) -> np.ndarray:
        """float32 ``[N, D]`` L2-normalised embeddings (NaN rows where ``ok`` is False)."""
        if self.unit is not None:
            return self.unit
        n = np.linalg.norm(self.raw, axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            return (self.raw / np.maximum(n, 1e-12)).astype(np.float32)


def detector_settings(cfg: DetectorCfg | SingleShotCfg) -> dict[str, Any]:
    """The detector settings that change crops, for cache keys (``select`` is the pipeline's).

    MTCNN's keys are those of fetoolkit 0.1 (its caches stay valid); a single-shot detector's name
    and every setting of it.
    """
    if isinstance(cfg, SingleShotCfg):
        import onnxruntime

        from fetoolkit.detect.registry import get_detector_spec

        weights = get_detector_spec(cfg.name).weights
        return {
            "detector": cfg.name,
            **cfg.settings(),
            "weights_sha256": None if weights is None else weights.sha256,
            "onnxruntime": onnxruntime.__version__,
        }
    out: dict[str, Any] = {
        "min_face_size": int(cfg.min_face_size),
        "thresholds": [float(t) for t in cfg.thresholds],
        "factor": float(cfg.factor),
    }
    if cfg.max_faces is not None:  # only when set: the keys of uncapped runs stay those of 0.1
        out["max_faces"] = int(cfg.max_faces)
    return out


def crops_key(
    content: str,
    cfg: PipelineCfg,
    detector_settings: dict[str, Any],
    size: tuple[int, int],
    aligned: bool,
    landmarks: np.ndarray | None = None,
) -> str:
    """Cache key of the aligned crops (see :mod:`fetoolkit.cache`); given ``landmarks`` replace the
    detector in the key by their digest."""
    v = library_versions()
    step_align = cfg.align and not aligned
    if step_align and landmarks is not None:
        return digest(
            {
                "what": "crops",
                "content": content,
                "landmarks_sha256": hashlib.sha256(np.ascontiguousarray(landmarks, np.float32).tobytes()).hexdigest(),
                "size": list(size),
                "template": ARCFACE_TEMPLATE.tolist(),
                "libs": {k: v.get(k) for k in ("pillow", "opencv-python-headless", "numpy")},
            }
        )
    return digest(
        {
            "what": "crops",
            "content": content,
            "aligned_input": aligned,
            "align": cfg.align,
            "select": cfg.select if step_align else None,
            # only when set, so that the keys of full-size detection stay those of earlier runs
            **({"detect_max_side": cfg.detect_max_side} if step_align and cfg.detect_max_side else {}),
            "detector": detector_settings if step_align else None,
            "size": list(size),
            "template": ARCFACE_TEMPLATE.tolist() if step_align else None,
            "libs": {k: v.get(k) for k in ("pillow", "opencv-python-headless", "numpy")}
            | ({k: v.get(k) for k in ("torch", "facenet-pytorch")} if step_align else {}),
            # MTCNN's float results (and so a crop's grey levels) move with the ISA; every image is
            # detected at one intra-op thread (crop_images), whatever the job's thread count
            "compute": compute_signature("one per image") if step_align else None,
        }
    )


def embeddings_key(crops: str, embedder: Embedder, cfg: PipelineCfg, flip: bool) -> str:
    """Cache key of the embeddings: the crops' key plus weights, backend, contract and swap_rb."""
    v = library_versions()
    return digest(
        {
            "what": "embeddings",
            "crops": crops,
            "model": embedder.name,
            "backend": embedder.backend,
            "weights_sha256": getattr(embedder, "weights_sha256", None),
            # the file that computes the embeddings (a conversion or an export of those weights)
            "runtime_sha256": getattr(embedder, "runtime_sha256", None),
            "contract": embedder.contract.to_dict(),
            "swap_rb": cfg.swap_rb,
            "flip": flip,
            "degrade": cfg.degrade,
            "lib": v.get("onnxruntime") if embedder.backend == "onnx" else v.get("torch"),
            # torch batches run at one intra-op thread each (embed_crops), whatever the job's threads
            "compute": compute_signature(
                getattr(embedder, "num_threads", None) if embedder.backend == "onnx" else "one per batch"
            ),
        }
    )


def embed_dataset(
    paths: Sequence[Path],
    embedder: Embedder,
    cfg: PipelineCfg,
    *,
    images: Sequence[bytes] | None = None,
    aligned: bool = False,
    detector: FaceDetector | Callable[[], FaceDetector] | None = None,
    detector_settings: dict[str, Any] | None = None,
    flip: bool = False,
    cache: EmbeddingCache | None = None,
    cache_crops: bool = True,
    landmarks: np.ndarray | None = None,
) -> EmbeddedSet:
    """Detect, align and embed every image of a data set, through the on-disk cache.

    Args:
        paths: image files ``N`` (labels when ``images`` holds the encoded images).
        embedder: the model.
        cfg: pipeline settings.
        images: encoded images in memory (``.bin``), or None.
        aligned: the images are aligned crops already (no detection).
        detector: a detector, or a zero-argument factory called only when detection must run.
        detector_settings: the detector's settings, for the cache key (required with a cache
            when detection runs).
        flip: also embed the mirrored crops (for the flip-consistency quality score).
        cache: where to look up and store results; None = compute everything.
        cache_crops: also cache the aligned crops (shared by every model of a sweep).
        landmarks: float32 ``[N, 5, 2]`` given landmarks: align from them, no detection (IJB).

    Returns:
        :class:`EmbeddedSet`; its ``cache`` field says whether the embeddings were recomputed.
    """
    size = embedder.contract.size
    timing: dict[str, float] = {}
    ekey = ckey = None
    if cache is not None:
        t = time.perf_counter()
        content = content_digest(paths, images)
        timing["hash"] = round(time.perf_counter() - t, 3)
        ckey = crops_key(content, cfg, detector_settings or {}, size, aligned, landmarks)
        ekey = embeddings_key(ckey, embedder, cfg, flip)
        hit = cache.load("emb", ekey)
        if hit is not None:
            log.info(
                "embedding cache hit: %s (%s/%s, %d images)",
                cache.path("emb", ekey),
                embedder.name,
                embedder.backend,
                len(paths),
            )
            return EmbeddedSet(
                hit["raw"],
                hit["raw_flip"] if flip else None,
                hit["ok"],
                hit["det_scores"],
                hit["n_faces"],
                hit["landmarks"],
                decode_failures(hit, paths),
                "hit",
                "skipped",
                timing,
                ekey,
                hit.get("degraded"),
            )
    t = time.perf_counter()
    crops, crops_state = cached_crops(
        paths,
        cfg,
        images=images,
        aligned=aligned,
        detector=detector,
        size=size,
        key=ckey,
        cache=cache if cache_crops else None,
        landmarks=landmarks,
    )
    timing["detect_align"] = round(time.perf_counter() - t, 3)
    t = time.perf_counter()
    d = embedder.contract.embed_dim
    faces = crops.faces
    degraded = np.full(len(paths), -1, np.int8)
    if cfg.degrade:
        faces, degraded = degrade_crops(faces, cfg.degrade)
        degraded[~crops.ok] = -1
        log.info("degraded %d of %d crops (pipeline.degrade=%g)", int((degraded >= 0).sum()), len(paths), cfg.degrade)
    raw = np.full((len(paths), d), np.nan, np.float32)
    raw[crops.ok] = embed_crops(faces[crops.ok], embedder, cfg, raw=True)
    raw_flip = None
    if flip:
        raw_flip = np.full((len(paths), d), np.nan, np.float32)
        mirrored = np.ascontiguousarray(faces[crops.ok][:, :, ::-1])
        raw_flip[crops.ok] = embed_crops(mirrored, embedder, cfg, raw=True)
    timing["embed"] = round(time.perf_counter() - t, 3)
    out = EmbeddedSet(
        raw,
        raw_flip,
        crops.ok,
        crops.det_scores,
        crops.n_faces,
        crops.landmarks,
        dict(crops.failures),
        "off" if cache is None else "miss",
        crops_state,
        timing,
        ekey,
        degraded,
    )
    if cache is not None and ekey is not None:
        arrays = {
            "raw": raw,
            "ok": crops.ok,
            "det_scores": crops.det_scores,
            "n_faces": crops.n_faces,
            "landmarks": crops.landmarks,
            "degraded": degraded,
            **encode_failures(crops.failures, paths),
        }
        if raw_flip is not None:
            arrays["raw_flip"] = raw_flip
        log.info("embedding cache miss: stored %s", cache.save("emb", ekey, arrays))
    return out


def cached_crops(
    paths: Sequence[Path],
    cfg: PipelineCfg,
    *,
    images: Sequence[bytes] | None = None,
    aligned: bool = False,
    detector: FaceDetector | Callable[[], FaceDetector] | None = None,
    size: tuple[int, int] = (112, 112),
    key: str | None = None,
    cache: EmbeddingCache | None = None,
    detector_settings: dict[str, Any] | None = None,
    landmarks: np.ndarray | None = None,
) -> tuple[Crops, str]:
    """Aligned crops of a data set through the crops cache: ``(crops, "hit" | "miss" | "off")``.

    Args:
        paths, images, aligned: the images (see :func:`embed_dataset`).
        cfg: pipeline settings.
        detector: a detector or a factory, called only when detection must run.
        size: crop size.
        key: the crops key (computed from the images and settings when None and a cache is given).
        cache: None = no cache.
        detector_settings: for the key, when ``key`` is None.
        landmarks: given landmarks (no detection), see :func:`crop_images`.
    """
    if cache is not None and key is None:
        key = crops_key(content_digest(paths, images), cfg, detector_settings or {}, size, aligned, landmarks)
    if cache is not None and key is not None:
        c = cache.load("crops", key)
        if c is not None:
            log.info("crops cache hit: %s", cache.path("crops", key))
            return Crops(
                c["faces"], c["ok"], c["det_scores"], c["n_faces"], c["landmarks"], decode_failures(c, paths)
            ), "hit"
    det = None
    if cfg.align and not aligned and landmarks is None:
        det = detector() if callable(detector) else detector
    crops = crop_images(paths, det, cfg, size=size, aligned=aligned, images=images, landmarks=landmarks)
    if cache is None or key is None:
        return crops, "off"
    cache.save(
        "crops",
        key,
        {
            "faces": crops.faces,
            "ok": crops.ok,
            "det_scores": crops.det_scores,
            "n_faces": crops.n_faces,
            "landmarks": crops.landmarks,
            **encode_failures(crops.failures, paths),
        },
    )
    return crops, "miss"
