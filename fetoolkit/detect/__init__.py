"""Detection (MTCNN, in torch or onnxruntime) and five-point alignment.

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


def detect(image: np.ndarray) -> list[Detection]:
    """Detect faces with the default (facenet-pytorch) MTCNN. ``image``: uint8 ``[H, W, 3]`` RGB."""
    from fetoolkit.detect import mtcnn

    return mtcnn.detect(image)


def __getattr__(name: str) -> Any:
    if name in ("MTCNNDetector", "default_detector"):
        return getattr(importlib.import_module("fetoolkit.detect.mtcnn"), name)
    raise AttributeError(f"module 'fetoolkit.detect' has no attribute {name!r}")
