"""Detection (MTCNN in torch or onnxruntime; YuNet and RetinaFace in onnxruntime) and five-point alignment.

Importing this package does not import torch: ``MTCNNDetector`` and ``default_detector``
(facenet-pytorch) are imported on first use, and ``detect`` imports them when called.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

import numpy as np

from fetoolkit.detect.align import ARCFACE_TEMPLATE, align, estimate_similarity, resize_whole, warp
from fetoolkit.detect.base import DetectorCfg, FaceDetector, select_face
from fetoolkit.types import Detection

if TYPE_CHECKING:
    from fetoolkit.detect.mtcnn import MTCNNDetector, default_detector

__all__ = [
    "ARCFACE_TEMPLATE",
    "DetectorCfg",
    "FaceDetector",
    "MTCNNDetector",
    "align",
    "default_detector",
    "detect",
    "estimate_similarity",
    "resize_whole",
    "select_face",
    "warp",
]


def detect(image: np.ndarray, detector: str = "mtcnn") -> list[Detection]:
    """Every face of ``image`` (uint8 ``[H, W, 3]`` RGB), highest score first.

    ``detector``: a registered name (``fetoolkit.detect.registry.list_detectors()``): ``mtcnn``
    (facenet-pytorch's, in torch), ``yunet`` or ``retinaface`` (onnxruntime, no torch). One detector
    of each name is built per process, on first use, with its record's defaults.
    """
    if detector == "mtcnn":
        from fetoolkit.detect import mtcnn

        return mtcnn.detect(image)
    from fetoolkit.detect.registry import shared_detector

    return sorted(shared_detector(detector).detect(image), key=lambda d: -d.score)


def __getattr__(name: str) -> Any:
    if name in ("MTCNNDetector", "default_detector"):
        return getattr(importlib.import_module("fetoolkit.detect.mtcnn"), name)
    raise AttributeError(f"module 'fetoolkit.detect' has no attribute {name!r}")
