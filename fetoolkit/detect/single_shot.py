"""What the single-shot detectors (YuNet, RetinaFace) share: settings, the input size policy, NMS.

No torch: onnxruntime runs the net, numpy (and OpenCV's resize) does the rest.

Input size policy (never distorted): the image is scaled by one factor ``r`` (down so that its
longer side is at most ``max_side``; up so that it is at least ``min_side``, which lets the nets'
smallest anchors see the faces of small images such as ORL's 92x112), then padded at the right and
bottom to a multiple of 32. Boxes and landmarks are divided by the resized sides' own factors
(``r`` up to the rounding of each side): they are in original image coordinates whatever the size
and aspect ratio.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from fetoolkit.detect.base import check_rgb
from fetoolkit.types import Detection

#: Every net here has strides up to 32.
STRIDE = 32


@dataclass(frozen=True)
class SingleShotCfg:
    """Settings of a single-shot detector (``configs/detector/<name>.yaml``).

    Attributes:
        name: ``yunet`` or ``retinaface``.
        score_threshold: candidates scoring below it are dropped.
        nms_iou: non-maximum suppression drops a box overlapping a better one by more than this IoU.
        min_face_size: faces whose box's shorter side (original pixels) is smaller are dropped.
        max_side: the longer side is scaled down to this before detection.
        min_side: the longer side is scaled up to this when smaller.
        max_candidates: the best candidates kept before NMS (bounds the time on crowded images).
        max_faces: faces kept at most, best first (NMS stops there); None: every face (the
            service sets its ``server.max_faces``, so a photo of hundreds of faces costs little).
    """

    name: str = "yunet"
    score_threshold: float = 0.6
    nms_iou: float = 0.3
    min_face_size: int = 10
    max_side: int = 640
    min_side: int = 320
    max_candidates: int = 1000
    max_faces: int | None = None

    def __post_init__(self) -> None:
        checks = (
            (0.0 <= self.score_threshold <= 1.0, "score_threshold must be in [0, 1]"),
            (0.0 < self.nms_iou <= 1.0, "nms_iou must be in (0, 1]"),
            (self.min_face_size >= 0, "min_face_size must be >= 0"),
            (STRIDE <= self.min_side <= self.max_side, f"need {STRIDE} <= min_side <= max_side"),
            (self.max_candidates >= 1, "max_candidates must be >= 1"),
            (self.max_faces is None or self.max_faces >= 1, "max_faces must be >= 1 or null"),
        )
        for ok, what in checks:
            if not ok:
                raise ValueError(f"detector {self.name}: {what}; got {self}")

    def settings(self) -> dict[str, Any]:
        """Every setting that changes detections (for cache keys); ``max_faces`` only when set, so
        the keys of runs made before it existed stay valid."""
        out = asdict(self)
        if out["max_faces"] is None:
            del out["max_faces"]
        return out


@dataclass(frozen=True)
class Letterbox:
    """The network input made from an image.

    Attributes:
        image: uint8 ``[H', W', 3]`` the resized and padded image (same channel order as given).
        scale: ``(sx, sy)`` network pixels per original pixel along x and y (equal up to the
            rounding of the resized sides).
        size: ``(height, width)`` of the resized image before padding.
    """

    image: np.ndarray
    scale: tuple[float, float]
    size: tuple[int, int]


def letterbox(image: np.ndarray, min_side: int, max_side: int) -> Letterbox:
    """Scale ``image`` uint8 ``[H, W, 3]`` by one factor and pad it to a multiple of 32 (see module doc)."""
    h, w = image.shape[:2]
    longer = max(h, w)
    r = 1.0
    if longer > max_side:
        r = max_side / longer
    elif longer < min_side:
        r = min_side / longer
    nh, nw = max(1, round(h * r)), max(1, round(w * r))
    resized = image if (nh, nw) == (h, w) else cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    ph, pw = -(-nh // STRIDE) * STRIDE, -(-nw // STRIDE) * STRIDE
    out = np.zeros((ph, pw, 3), np.uint8)
    out[:nh, :nw] = resized
    return Letterbox(out, (nw / w, nh / h), (nh, nw))


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float, limit: int | None = None) -> np.ndarray:
    """Greedy non-maximum suppression: int64 indices kept, best score first.

    Args:
        boxes: float32 ``[N, 4]`` ``x1, y1, x2, y2``.
        scores: float32 ``[N]``.
        iou: a box is dropped when its IoU with a kept, better box exceeds this.
        limit: stop once this many are kept (None: no limit).
    """
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = (boxes[:, k].astype(np.float64) for k in range(4))
    area = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    keep: list[int] = []
    while order.size and (limit is None or len(keep) < limit):
        i = order[0]
        keep.append(i)
        rest = order[1:]
        iw = np.maximum(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0)
        ih = np.maximum(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0)
        inter = iw * ih
        union = area[i] + area[rest] - inter
        with np.errstate(invalid="ignore", divide="ignore"):
            overlap = np.where(union > 0, inter / union, 0.0)
        order = rest[overlap <= iou]
    return np.asarray(keep, np.int64)


def finish(
    boxes: np.ndarray,
    scores: np.ndarray,
    landmarks: np.ndarray,
    cfg: SingleShotCfg,
    scale: tuple[float, float],
    shape: tuple[int, int],
) -> list[Detection]:
    """Threshold, cap, NMS, map back to the original image and clip: the detections, best first.

    Args:
        boxes: float32 ``[N, 4]`` in network pixels.
        scores: float32 ``[N]``.
        landmarks: float32 ``[N, 5, 2]`` in network pixels.
        cfg: thresholds and caps.
        scale: the letterbox factors ``(sx, sy)``.
        shape: ``(H, W)`` of the original image.
    """
    keep = np.flatnonzero(scores >= cfg.score_threshold)
    if keep.size > cfg.max_candidates:
        keep = keep[np.argsort(-scores[keep], kind="stable")[: cfg.max_candidates]]
    sx, sy = scale
    boxes = boxes[keep] / np.array([sx, sy, sx, sy], np.float32)
    scores, landmarks = scores[keep], landmarks[keep] / np.array([sx, sy], np.float32)
    h, w = shape
    boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, w)
    boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, h)
    side = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    big = side >= cfg.min_face_size
    boxes, scores, landmarks = boxes[big], scores[big], landmarks[big]
    order = nms(boxes, scores, cfg.nms_iou, cfg.max_faces)
    return [
        Detection(box=boxes[i].astype(np.float32), score=float(scores[i]), landmarks=landmarks[i].astype(np.float32))
        for i in order
    ]


class OnnxSingleShot:
    """A single-shot detector in onnxruntime: scale and pad, run the net, decode (per subclass),
    threshold, NMS, map back (:func:`finish`).

    Args:
        model: the ``.onnx`` file (verified by the caller: see ``fetoolkit.detect.registry``).
        cfg: thresholds and the input size policy (default: the subclass's ``defaults``).
        num_threads: onnxruntime intra-op threads.
    """

    #: ``pipeline.detect_scaled`` leaves the scaling to ``cfg.max_side`` / ``cfg.min_side``.
    scales_itself = True
    defaults: SingleShotCfg

    def __init__(self, model: str | Path, cfg: SingleShotCfg | None = None, *, num_threads: int | None = 1) -> None:
        import onnxruntime as ort

        from fetoolkit.backends.onnx_backend import session_options

        self.cfg = cfg or self.defaults
        self.session = ort.InferenceSession(
            self.model_bytes(Path(model)), session_options(num_threads), providers=["CPUExecutionProvider"]
        )

    def model_bytes(self, path: Path) -> bytes:
        """The ONNX bytes to run (a subclass may rewrite the file's declared shapes)."""
        return path.read_bytes()

    def decode(self, net_image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """uint8 ``[H', W', 3]`` RGB network input -> float32 boxes ``[N, 4]``, scores ``[N]``,
        landmarks ``[N, 5, 2]``, all in network pixels, before any threshold."""
        raise NotImplementedError

    def detect(self, image: np.ndarray) -> list[Detection]:
        """uint8 ``[H, W, 3]`` RGB -> every face found, highest score first."""
        check_rgb(image)
        lb = letterbox(image, self.cfg.min_side, self.cfg.max_side)
        boxes, scores, landmarks = self.decode(lb.image)
        return finish(boxes, scores, landmarks, self.cfg, lb.scale, image.shape[:2])
