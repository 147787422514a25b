"""Service settings: ``configs/serve.yaml`` (Hydra) with environment variables on top.

Precedence, lowest to highest: ``configs/serve.yaml`` < command-line overrides < environment
(``PORT``, ``HOST``, ``MODEL_PATH``, ``LOG_LEVEL``, ``MAX_CONCURRENT_REQUESTS``, ``ALLOWED_HOSTS``,
``PROFILE_PATH``, ``PROFILE_ALLOW_MISMATCH``).
An environment variable that replaces a different configured value is logged. API keys come only
from the environment (``API_KEYS``, comma-separated, or ``API_KEYS_FILE``, one per line) and are
kept as sha256 digests, never as text.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, get_args

from omegaconf import DictConfig, OmegaConf

from fetoolkit.detect.base import SelectPolicy
from fetoolkit.detect.registry import AnyDetectorCfg, detector_cfg_for
from fetoolkit.pipeline import PipelineCfg
from fetoolkit.sharing import usable_cores

log = logging.getLogger(__name__)

SELECT_POLICIES: tuple[str, ...] = get_args(SelectPolicy)
DETECTOR_BACKENDS = ("onnx", "torch")
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
#: The names a loopback-bound service answers to (``allowed_hosts`` null).
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
#: Most images per batch request (the schema's ``maxItems``).
MAX_BATCH_IMAGES = 32


def key_digest(key: str) -> str:
    """The sha256 hex digest an API key is kept and compared as."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a listening address) is reachable only from this machine."""
    return host in LOOPBACK_HOSTS or host.startswith("127.")


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
        verify_threshold: cosine threshold of ``/api/verify`` (same person when score >= it) when no
            decision profile is loaded.
        profile_path: a decision profile (``profile.json`` of an eval run, or its folder;
            ``PROFILE_PATH``, config ``verify.profile``): checked against this service's model, weights,
            detector and pipeline at start-up (:mod:`fetoolkit.serve.decide`); ``/api/verify`` then
            answers with its ``llr``, ``p_same`` and the decision at its threshold.
        profile_allow_mismatch: serve with a profile made for another set-up anyway
            (``PROFILE_ALLOW_MISMATCH=1``); every ``/api/verify`` answer then carries the differences.
        verify_fmr: the FMR target whose profile threshold ``/api/verify`` decides at (``verify.fmr``);
            ``None``: 1e-3 when the profile has it, else its finest.
        host, port: where uvicorn listens.
        log_level: root log level (``LOG_LEVEL``).
        access_log: log one line per request (off by default: it costs throughput).
        max_concurrent_requests: requests in flight at most; beyond it 503 + Retry-After.
        retry_after_s: the ``Retry-After`` of those 503 answers, in seconds.
        max_body_bytes: request bodies larger than this get 413.
        max_buffered_bytes: bytes of request bodies held at once (being received or being served);
            a body that would pass it gets 503 + Retry-After. Bounds the memory bodies can take.
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
        malloc_trim_threshold: glibc ``M_TRIM_THRESHOLD`` in bytes; ``None``: glibc's default.
        body_timeout_s: a request body must arrive within this (else 408 ``TIMEOUT``); a request
            counts against ``max_concurrent_requests`` only once its body is in.
        request_timeout_s: an answer not ready this long after the body arrived is 504 ``TIMEOUT``
            (its work stops at the next stage).
        header_timeout_s: a connection whose request headers are not complete this long after it
            opened (or after its last answer) is answered 408 and closed.
        keepalive_timeout_s: idle keep-alive connections are closed after this.
        max_connections: open connections at most (uvicorn's ``limit_concurrency``; beyond: 503).
        max_header_bytes: request line and headers larger than this are answered 431.
        max_jpeg_scans: JPEGs with more scans are refused before decoding (scan bombs).
        docs: serve the interactive ``/docs`` page (its scripts come from a public CDN); the
            schema at ``/openapi.json`` is always served.
        allowed_hosts: ``Host`` names answered (others: 400); ``None``: the loopback names when
            listening on loopback, any host otherwise (a warning says so at start-up).
        api_key_digests: sha256 of the accepted API keys (``API_KEYS`` / ``API_KEYS_FILE``); empty:
            no key checking.
        onnx_arena: keep onnxruntime's memory arena (off: memory returns after each request).
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
    profile_path: str | None = None
    profile_allow_mismatch: bool = False
    verify_fmr: float | None = None
    host: str = "127.0.0.1"
    port: int = 8002
    log_level: str = "info"
    access_log: bool = False
    max_concurrent_requests: int = 16
    retry_after_s: int = 1
    max_body_bytes: int = 16 * 1024 * 1024
    max_buffered_bytes: int = 64 * 1024 * 1024
    max_pixels: int = 16_000_000
    max_batch_images: int = 32
    inference_workers: int = 2
    num_threads: int = 1
    max_batch: int = 1
    torch_threads: int | None = 1
    warmup: bool = True
    malloc_arena_max: int | None = 2
    malloc_mmap_threshold: int | None = 32 << 20
    malloc_trim_threshold: int | None = 64 << 20
    body_timeout_s: float = 5.0
    request_timeout_s: float = 30.0
    header_timeout_s: float = 5.0
    keepalive_timeout_s: float = 5.0
    max_connections: int = 128
    max_header_bytes: int = 32768
    max_jpeg_scans: int = 64
    docs: bool = False
    allowed_hosts: tuple[str, ...] | None = None
    api_key_digests: tuple[str, ...] = field(default=(), repr=False)
    onnx_arena: bool = False

    def __post_init__(self) -> None:
        if self.face_select not in SELECT_POLICIES:
            raise ValueError(f"face_select must be one of {SELECT_POLICIES}, got {self.face_select!r}")
        if self.detector_backend not in DETECTOR_BACKENDS:
            raise ValueError(f"detector_backend must be one of {DETECTOR_BACKENDS}, got {self.detector_backend!r}")
        if self.log_level.lower() not in LOG_LEVELS:
            raise ValueError(f"log level must be one of {LOG_LEVELS}, got {self.log_level!r}")
        if not -1.0 <= self.verify_threshold <= 1.0:
            raise ValueError(f"verify threshold is a cosine, in [-1, 1]; got {self.verify_threshold}")
        if self.verify_fmr is not None and not 0.0 < self.verify_fmr < 1.0:
            raise ValueError(f"verify.fmr is a false match rate, in (0, 1); got {self.verify_fmr}")
        for name in (
            "max_concurrent_requests",
            "max_body_bytes",
            "max_pixels",
            "max_batch_images",
            "inference_workers",
            "num_threads",
            "max_batch",
            "max_faces",
            "max_connections",
            "max_header_bytes",
            "max_jpeg_scans",
        ):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("body_timeout_s", "request_timeout_s", "header_timeout_s", "keepalive_timeout_s"):
            if not float(getattr(self, name)) > 0:
                raise ValueError(f"{name} must be > 0 seconds, got {getattr(self, name)}")
        if self.max_buffered_bytes < self.max_body_bytes:
            raise ValueError(
                f"max_buffered_bytes ({self.max_buffered_bytes}) must be >= max_body_bytes ({self.max_body_bytes})"
            )
        if self.max_batch_images > MAX_BATCH_IMAGES:
            raise ValueError(f"max_batch_images must be <= {MAX_BATCH_IMAGES} (the schema's maxItems)")
        if self.max_connections <= self.max_concurrent_requests:
            raise ValueError(
                f"max_connections ({self.max_connections}) must exceed max_concurrent_requests "
                f"({self.max_concurrent_requests}): requests still sending their bodies need connections too"
            )
        if self.detect_max_side is not None and self.detect_max_side < 48:
            raise ValueError(f"detect_max_side must be >= 48 (MTCNN's ONet input) or null, got {self.detect_max_side}")
        if not 0 < self.port < 65536:
            raise ValueError(f"port must be in 1..65535, got {self.port}")

    @property
    def pipeline(self) -> PipelineCfg:
        """The face pipeline of this service (``crop_face``'s settings): the same ``PipelineCfg`` an
        eval runs with ``pipeline.select=<face_select> pipeline.detect_max_side=<detect_max_side>``."""
        return PipelineCfg(select=self.face_select, detect_max_side=self.detect_max_side, progress=False)

    @property
    def hosts(self) -> tuple[str, ...] | None:
        """The ``Host`` names answered; None: any (see ``allowed_hosts``)."""
        if self.allowed_hosts is not None:
            return self.allowed_hosts
        return LOOPBACK_HOSTS if is_loopback(self.host) else None

    @property
    def auth_required(self) -> bool:
        """API keys are configured: every POST (and the details of /api/health, /metrics) needs one."""
        return bool(self.api_key_digests)

    @classmethod
    def from_cfg(cls, cfg: DictConfig, environ: Mapping[str, str] | None = None) -> ServeSettings:
        """Settings from a composed ``serve`` config, then the environment (see module doc)."""
        c: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
        srv, inf, det = c["server"], c["inference"], c["detector"]
        name = str(det.pop("name", "mtcnn"))
        detector = detector_cfg_for(name, **det)
        if detector.max_faces is None:
            # faces capped inside the detector (NMS, MTCNN's stages), not after it
            detector = replace(detector, max_faces=int(srv.get("max_faces", 32)))
        hosts = srv.get("allowed_hosts")
        ver = c["verify"]
        s = cls(
            model=c["model"]["name"],
            weights=c["model"].get("weights"),
            backend=c["backend"]["name"],
            detector=detector,
            detector_backend=str(c.get("detector_backend", "onnx")),
            face_select=c["face_select"],
            detect_max_side=None if c.get("detect_max_side") is None else int(c["detect_max_side"]),
            verify_threshold=float(ver["threshold"]),
            profile_path=None if ver.get("profile") is None else str(ver["profile"]),
            profile_allow_mismatch=bool(ver.get("profile_allow_mismatch", False)),
            verify_fmr=None if ver.get("fmr") is None else float(ver["fmr"]),
            host=str(srv["host"]),
            port=int(srv["port"]),
            log_level=str(srv["log_level"]).lower(),
            access_log=bool(srv["access_log"]),
            max_concurrent_requests=int(srv["max_concurrent_requests"]),
            retry_after_s=int(srv["retry_after_s"]),
            max_body_bytes=int(srv["max_body_bytes"]),
            max_buffered_bytes=int(srv.get("max_buffered_bytes", 64 * 1024 * 1024)),
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
            malloc_trim_threshold=_opt_int(c.get("memory", {}).get("malloc_trim_threshold")),
            body_timeout_s=float(srv.get("body_timeout_s", 5.0)),
            request_timeout_s=float(srv.get("request_timeout_s", 30.0)),
            header_timeout_s=float(srv.get("header_timeout_s", 5.0)),
            keepalive_timeout_s=float(srv.get("keepalive_timeout_s", 5.0)),
            max_connections=int(srv.get("max_connections", 128)),
            max_header_bytes=int(srv.get("max_header_bytes", 32768)),
            max_jpeg_scans=int(srv.get("max_jpeg_scans", 64)),
            docs=bool(srv.get("docs", False)),
            allowed_hosts=None if hosts is None else tuple(str(h) for h in hosts),
            onnx_arena=bool(inf.get("onnx_arena", False)),
        )
        return s.with_env(os.environ if environ is None else environ)

    def with_env(self, environ: Mapping[str, str]) -> ServeSettings:
        """These settings with ``PORT``, ``HOST``, ``MODEL_PATH``, ``LOG_LEVEL``,
        ``MAX_CONCURRENT_REQUESTS``, ``PROFILE_PATH`` and ``PROFILE_ALLOW_MISMATCH`` (``1`` / ``0``,
        ``true`` / ``false``) from ``environ`` applied (empty values are ignored)."""
        changes: dict[str, Any] = {}
        for var, attr, conv in (
            ("PORT", "port", _int_env),
            ("HOST", "host", str),
            ("MODEL_PATH", "weights", str),
            ("LOG_LEVEL", "log_level", _level_env),
            ("MAX_CONCURRENT_REQUESTS", "max_concurrent_requests", _int_env),
            ("PROFILE_PATH", "profile_path", str),
            ("PROFILE_ALLOW_MISMATCH", "profile_allow_mismatch", _bool_env),
        ):
            raw = environ.get(var, "").strip()
            if not raw:
                continue
            try:
                value = conv(raw)
            except ValueError:
                need = _ENV_NEEDS.get(conv, "one of " + ", ".join(LOG_LEVELS))
                raise ValueError(f"environment variable {var}={raw!r} is not valid: {need} is needed") from None
            if value != getattr(self, attr):
                trial: dict[str, Any] = {attr: value}
                if attr == "max_concurrent_requests" and value >= self.max_connections:
                    trial["max_connections"] = 8 * value  # room for the connections still sending bodies
                try:
                    replace(self, **trial)
                except ValueError as e:
                    raise ValueError(f"environment variable {var}={raw!r} is not valid: {e}") from None
                log.info("%s=%s overrides the configured %s=%r", var, raw, attr, getattr(self, attr))
                changes.update(trial)
        hosts = environ.get("ALLOWED_HOSTS", "").strip()
        if hosts:
            changes["allowed_hosts"] = tuple(h.strip() for h in hosts.split(",") if h.strip())
        keys = api_keys_from_env(environ)
        if keys:
            changes["api_key_digests"] = tuple(key_digest(k) for k in keys)
        return replace(self, **changes) if changes else self


def api_keys_from_env(environ: Mapping[str, str]) -> list[str]:
    """The API keys of ``API_KEYS`` (comma-separated) and ``API_KEYS_FILE`` (one per line, ``#``
    comments); empty when neither is set.

    Raises:
        ValueError: ``API_KEYS_FILE`` names a missing or unreadable file, or holds no key.
    """
    keys = [k.strip() for k in environ.get("API_KEYS", "").split(",") if k.strip()]
    path = environ.get("API_KEYS_FILE", "").strip()
    if path:
        try:
            lines = Path(path).read_text().splitlines()
        except OSError as e:
            raise ValueError(f"API_KEYS_FILE={path}: cannot be read ({e.strerror or e})") from None
        found = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
        if not found:
            raise ValueError(f"API_KEYS_FILE={path} holds no key (one per line; # starts a comment)")
        keys += found
    for k in keys:
        if not k.isascii() or not k.isprintable():
            raise ValueError("API keys must be printable ASCII (HTTP headers carry them as bytes)")
    return keys


def available_cores() -> int:
    """CPUs this process may run on (its affinity mask, e.g. a container's cpuset)."""
    return usable_cores()


def _opt_int(v: Any) -> int | None:
    return None if v is None else int(v)


def _int_env(raw: str) -> int:
    return int(raw)


def _bool_env(raw: str) -> bool:
    v = raw.lower()
    if v not in _TRUE + _FALSE:
        raise ValueError(v)
    return v in _TRUE


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")
_ENV_NEEDS: dict[Any, str] = {_int_env: "an integer", _bool_env: "1 or 0 (true or false)"}


def _level_env(raw: str) -> str:
    level = raw.lower()
    if level not in LOG_LEVELS:
        raise ValueError(level)
    return level
