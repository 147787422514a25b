"""Face detection with facenet-pytorch's MTCNN.

The P/R/O-net weights ship inside the facenet-pytorch wheel (``facenet_pytorch/data``); they
are loaded here with ``torch.load(..., weights_only=True)``, never downloaded.
"""

from __future__ import annotations

import logging
import threading
from contextlib import nullcontext
from importlib import resources

import numpy as np
import torch

from fetoolkit.detect.base import DetectorCfg, SelectPolicy, check_image, select_face
from fetoolkit.types import Detection

__all__ = ["DetectorCfg", "MTCNNDetector", "SelectPolicy", "default_detector", "detect", "select_face"]

log = logging.getLogger(__name__)


class MTCNNDetector:
    """MTCNN returning every face with its box, score and 5 landmarks.

    Thread-safe: calls at one torch intra-op thread run concurrently; calls with more threads take
    turns behind one lock (the service shares one instance).
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

        check_image(image)
        c = self.cfg
        # Calls at one intra-op thread run at once (crop_images detects several images so); a call
        # with more threads starts its own OpenMP team, so those take turns.
        with self._lock if torch.get_num_threads() > 1 else nullcontext(), torch.no_grad():
            boxes, points = detect_face(
                image[None],
                c.min_face_size,
                self.pnet,
                self.rnet,
                self.onet,
                list(c.thresholds),
                c.factor,
                torch.device("cpu"),
            )
        # With numpy 2 facenet-pytorch hands back object arrays: make them plain floats.
        b = np.asarray(boxes[0], dtype=np.float32).reshape(-1, 5)
        p = np.asarray(points[0], dtype=np.float32).reshape(-1, 5, 2)
        order = np.argsort(-b[:, 4], kind="stable")[: c.max_faces]  # facenet-pytorch cannot cap inside
        return [Detection(box=b[i, :4].copy(), score=float(b[i, 4]), landmarks=p[i].copy()) for i in order]


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
