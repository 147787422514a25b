"""Detection (MTCNN) and five-point alignment."""

from fetoolkit.detect.align import ARCFACE_TEMPLATE, align, estimate_similarity, resize_whole, warp
from fetoolkit.detect.mtcnn import DetectorCfg, MTCNNDetector, default_detector, detect, select_face

__all__ = [
    "ARCFACE_TEMPLATE", "DetectorCfg", "MTCNNDetector", "align", "default_detector", "detect",
    "estimate_similarity", "resize_whole", "select_face", "warp",
]
