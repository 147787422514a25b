"""Service settings: ``configs/serve.yaml`` (Hydra) with environment variables on top.

Precedence, lowest to highest: ``configs/serve.yaml`` < command-line overrides < environment
(``PORT``, ``HOST``, ``MODEL_PATH``, ``LOG_LEVEL``, ``MAX_CONCURRENT_REQUESTS``). An environment
variable that replaces a different configured value is logged.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, get_args

from omegaconf import DictConfig, OmegaConf

from fetoolkit.detect.base import SelectPolicy
from fetoolkit.detect.registry import AnyDetectorCfg, detector_cfg_for
from fetoolkit.pipeline import PipelineCfg

log = logging.getLogger(__name__)

SELECT_POLICIES: tuple[str, ...] = get_args(SelectPolicy)
DETECTOR_BACKENDS = ("onnx", "torch")
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


@dataclass(frozen=True)
class ServeSettings:
    """Everything ``create_app`` needs.

    Attributes:
        model: registry name or alias of the embedding model.
        weights: a local weights file (``MODEL_PATH``); ``None``: the model's fetched default.
        backend: ``onnx`` (default) or ``torch``.
        detector: the detector's settings (the ``detector`` config group): YuNet by default
            (onnxruntime, a few ms per photo), RetinaFace, or MTCNN (``DetectorCfg``).
        detector_backend: MTCNN only: ``onnx`` (default: facenet-pytorch's MTCNN nets in onnxruntime,
            ``OnnxMTCNNDetector``; the process then never imports torch) or ``torch``
            (facenet-pytorch itself, ``MTCNNDetector``).
        face_select: face kept when the detector finds several: most_confident | largest | center.
        detect_max_side: the detector runs on a copy of the image shrunk to this longer side (landmarks
            are mapped back and the crop is cut from the full-resolution image); ``None``: full size.
        max_faces: faces embedded at most per image when a request asks for all of them
            (``all_faces``), the best-scored first.
        verify_threshold: cosine threshold of ``/api/verify`` (same person when score >= it).
        host, port: where uvicorn listens.
        log_level: root log level (``LOG_LEVEL``).
        access_log: log one line per request (off by default: it costs throughput).
        max_concurrent_requests: requests in flight at most; beyond it 503 + Retry-After.
        retry_after_s: the ``Retry-After`` of those 503 answers, in seconds.
        max_body_bytes: request bodies larger than this get 413.
        max_pixels: decoded images larger than this are refused (decompression-bomb guard).
        max_batch_images: images per batch request at most.
        inference_workers: threads running the embedding model in parallel (config ``null``: one
            per available core).
        num_threads: onnxruntime intra-op threads per call (1: parallelism comes from the workers).
        max_batch: crops merged across concurrent requests into one model call (1: no merging).
        torch_threads: torch intra-op threads (``detector_backend=torch`` or ``backend=torch`` only);
            ``None``: torch's default.
        warmup: run the model and the detector once before serving.
        malloc_arena_max: glibc ``M_ARENA_MAX`` (see ``fetoolkit.serve.memory``); ``None``: glibc's default.
        malloc_mmap_threshold: glibc ``M_MMAP_THRESHOLD`` in bytes; ``None``: glibc's (adaptive) default.
    """

    model: str = "arcface"
    weights: str | None = None
    backend: str = "onnx"
    detector: AnyDetectorCfg = field(default_factory=lambda: detector_cfg_for("yunet"))
    detector_backend: str = "onnx"
    face_select: SelectPolicy = "most_confident"
    detect_max_side: int | None = 640
    max_faces: int = 32
    verify_threshold: float = 0.5
    host: str = "127.0.0.1"
    port: int = 8002
    log_level: str = "info"
    access_log: bool = False
    max_concurrent_requests: int = 16
    retry_after_s: int = 1
    max_body_bytes: int = 16 * 1024 * 1024
    max_pixels: int = 16_000_000
    max_batch_images: int = 32
    inference_workers: int = 2
    num_threads: int = 1
    max_batch: int = 1
    torch_threads: int | None = 1
    warmup: bool = True
    malloc_arena_max: int | None = 2
    malloc_mmap_threshold: int | None = 1 << 20

    def __post_init__(self) -> None:
        if self.face_select not in SELECT_POLICIES:
            raise ValueError(f"face_select must be one of {SELECT_POLICIES}, got {self.face_select!r}")
        if self.detector_backend not in DETECTOR_BACKENDS:
            raise ValueError(f"detector_backend must be one of {DETECTOR_BACKENDS}, got {self.detector_backend!r}")
        if self.log_level.lower() not in LOG_LEVELS:
            raise ValueError(f"log level must be one of {LOG_LEVELS}, got {self.log_level!r}")
        if not -1.0 <= self.verify_threshold <= 1.0:
            raise ValueError(f"verify threshold is a cosine, in [-1, 1]; got {self.verify_threshold}")
        for name in (
            "max_concurrent_requests",
            "max_body_bytes",
            "max_pixels",
            "max_batch_images",
            "inference_workers",
            "num_threads",
            "max_batch",
            "max_faces",
        ):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.detect_max_side is not None and self.detect_max_side < 48:
            raise ValueError(f"detect_max_side must be >= 48 (MTCNN's ONet input) or null, got {self.detect_max_side}")
        if not 0 < self.port < 65536:
            raise ValueError(f"port must be in 1..65535, got {self.port}")

    @property
    def pipeline(self) -> PipelineCfg:
        """The face pipeline of this service (``crop_face``'s settings): the same ``PipelineCfg`` an
        eval runs with ``pipeline.select=<face_select> pipeline.detect_max_side=<detect_max_side>``."""
        return PipelineCfg(select=self.face_select, detect_max_side=self.detect_max_side, progress=False)

    @classmethod
    def from_cfg(cls, cfg: DictConfig, environ: Mapping[str, str] | None = None) -> ServeSettings:
        """Settings from a composed ``serve`` config, then the environment (see module doc)."""
        c: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
        srv, inf, det = c["server"], c["inference"], c["detector"]
        s = cls(
            model=c["model"]["name"],
            weights=c["model"].get("weights"),
            backend=c["backend"]["name"],
            detector=detector_cfg_for(str(det.pop("name", "mtcnn")), **det),
            detector_backend=str(c.get("detector_backend", "onnx")),
            face_select=c["face_select"],
            detect_max_side=None if c.get("detect_max_side") is None else int(c["detect_max_side"]),
            verify_threshold=float(c["verify"]["threshold"]),
            host=str(srv["host"]),
            port=int(srv["port"]),
            log_level=str(srv["log_level"]).lower(),
            access_log=bool(srv["access_log"]),
            max_concurrent_requests=int(srv["max_concurrent_requests"]),
            retry_after_s=int(srv["retry_after_s"]),
            max_body_bytes=int(srv["max_body_bytes"]),
            max_pixels=int(srv["max_pixels"]),
            max_batch_images=int(srv["max_batch_images"]),
            max_faces=int(srv.get("max_faces", 32)),
            inference_workers=available_cores() if inf.get("workers") is None else int(inf["workers"]),
            num_threads=int(inf["num_threads"]),
            max_batch=int(inf["max_batch"]),
            torch_threads=None if inf.get("torch_threads") is None else int(inf["torch_threads"]),
            warmup=bool(inf.get("warmup", True)),
            malloc_arena_max=_opt_int(c.get("memory", {}).get("malloc_arena_max")),
            malloc_mmap_threshold=_opt_int(c.get("memory", {}).get("malloc_mmap_threshold")),
        )
        return s.with_env(os.environ if environ is None else environ)

    def with_env(self, environ: Mapping[str, str]) -> ServeSettings:
        """These settings with ``PORT``, ``HOST``, ``MODEL_PATH``, ``LOG_LEVEL`` and
        ``MAX_CONCURRENT_REQUESTS`` from ``environ`` applied (empty values are ignored)."""
        changes: dict[str, Any] = {}
        for var, attr, conv in (
            ("PORT", "port", _int_env),
            ("HOST", "host", str),
            ("MODEL_PATH", "weights", str),
            ("LOG_LEVEL", "log_level", _level_env),
            ("MAX_CONCURRENT_REQUESTS", "max_concurrent_requests", _int_env),
        ):
            raw = environ.get(var, "").strip()
            if not raw:
                continue
            try:
                value = conv(raw)
            except ValueError:
                need = "an integer" if conv is _int_env else "one of " + ", ".join(LOG_LEVELS)
                raise ValueError(f"environment variable {var}={raw!r} is not valid: {need} is needed") from None
            if value != getattr(self, attr):
                trial: dict[str, Any] = {attr: value}
                try:
                    replace(self, **trial)
                except ValueError as e:
                    raise ValueError(f"environment variable {var}={raw!r} is not valid: {e}") from None
                log.info("%s=%s overrides the configured %s=%r", var, raw, attr, getattr(self, attr))
                changes[attr] = value
        return replace(self, **changes) if changes else self


def available_cores() -> int:
    """CPUs this process may run on (its affinity mask, e.g. a container's cpuset)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _opt_int(v: Any) -> int | None:
    return None if v is None else int(v)


def _int_env(raw: str) -> int:
    return int(raw)


def _level_env(raw: str) -> str:
    level = raw.lower()
    if level not in LOG_LEVELS:
        raise ValueError(level)
    return level
