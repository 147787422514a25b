"""Face detection with facenet-pytorch's MTCNN.

The P/R/O-net weights ship inside the facenet-pytorch wheel (``facenet_pytorch/data``); they
are loaded here with ``torch.load(..., weights_only=True)``, never downloaded.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from importlib import resources
from typing import Literal

import numpy as np
import torch

from fetoolkit.types import Detection

log = logging.getLogger(__name__)

SelectPolicy = Literal["most_confident", "largest", "center"]


@dataclass(frozen=True)
class DetectorCfg:
    """MTCNN settings (facenet-pytorch's defaults).

    Attributes:
        min_face_size: smallest face searched for, in pixels.
        thresholds: P-, R- and O-net score thresholds.
        factor: scale step of the image pyramid.
        select: which face ``select_face`` picks when there are several.
    """

    min_face_size: int = 20
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)
    factor: float = 0.709
    select: SelectPolicy = "most_confident"


class MTCNNDetector:
    """MTCNN returning every face with its box, score and 5 landmarks.

    Thread-safe: one lock guards the torch nets (the service shares one instance).
    """

    def __init__(self, cfg: DetectorCfg | None = None) -> None:
        from facenet_pytorch.models.mtcnn import ONet, PNet, RNet

        self.cfg = cfg or DetectorCfg()
        data = resources.files("facenet_pytorch") / "data"
        self.pnet, self.rnet, self.onet = PNet(pretrained=False), RNet(pretrained=False), ONet(pretrained=False)
        for net, fname in ((self.pnet, "pnet.pt"), (self.rnet, "rnet.pt"), (self.onet, "onet.pt")):
            with resources.as_file(data / fname) as path:
                state = torch.load(path, map_location="cpu", weights_only=True)
            net.load_state_dict(state)
            net.eval()
        self._lock = threading.Lock()

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Detect faces in one image.

        Args:
            image: uint8 ``[H, W, 3]`` RGB.

        Returns:
            Detections sorted by score, highest first (empty list when there is no face).
        """
        from facenet_pytorch.models.utils.detect_face import detect_face

        _check_image(image)
        c = self.cfg
        with self._lock, torch.no_grad():
            boxes, points = detect_face(
                image[None], c.min_face_size, self.pnet, self.rnet, self.onet,
                list(c.thresholds), c.factor, torch.device("cpu"),
            )
        # With numpy 2 facenet-pytorch hands back object arrays: make them plain floats.
        b = np.asarray(boxes[0], dtype=np.float32).reshape(-1, 5)
        p = np.asarray(points[0], dtype=np.float32).reshape(-1, 5, 2)
        order = np.argsort(-b[:, 4], kind="stable")
        return [Detection(box=b[i, :4].copy(), score=float(b[i, 4]), landmarks=p[i].copy()) for i in order]


def select_face(dets: list[Detection], image_shape: tuple[int, ...], policy: SelectPolicy) -> Detection:
    """Pick one face from several by ``policy``; raises ``ValueError`` on an empty list.

    Policies: ``most_confident`` (highest score), ``largest`` (box area), ``center`` (box
    centre nearest the image centre).
    """
    if not dets:
        raise ValueError("no face to select from")
    if policy == "most_confident":
        return max(dets, key=lambda d: d.score)
    if policy == "largest":
        return max(dets, key=lambda d: float((d.box[2] - d.box[0]) * (d.box[3] - d.box[1])))
    if policy == "center":
        cy, cx = image_shape[0] / 2.0, image_shape[1] / 2.0
        return min(dets, key=lambda d: float(((d.box[0] + d.box[2]) / 2 - cx) ** 2 + ((d.box[1] + d.box[3]) / 2 - cy) ** 2))
    raise ValueError(f"unknown face-selection policy {policy!r}; use most_confident, largest or center")


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", None)
        dtype = getattr(image, "dtype", type(image).__name__)
        raise ValueError(f"image must be uint8 [H, W, 3] RGB, got shape {shape} dtype {dtype}")
    if min(image.shape[:2]) < 12:
        raise ValueError(f"image is too small for MTCNN ({image.shape[1]}x{image.shape[0]}); need >= 12 px")


_default: MTCNNDetector | None = None
_default_lock = threading.Lock()


def default_detector() -> MTCNNDetector:
    """A process-wide detector with default settings, built on first use."""
    global _default
    with _default_lock:
        if _default is None:
            _default = MTCNNDetector()
    return _default


def detect(image: np.ndarray) -> list[Detection]:
    """Detect faces with the default MTCNN. ``image``: uint8 ``[H, W, 3]`` RGB."""
    return default_detector().detect(image)
