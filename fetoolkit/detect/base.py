"""What every face detector here shares, without torch: settings, face selection, input checks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from fetoolkit.types import Detection

SelectPolicy = Literal["most_confident", "largest", "center"]


@dataclass(frozen=True)
class DetectorCfg:
    """MTCNN settings (facenet-pytorch's defaults).

    Attributes:
        min_face_size: smallest face searched for, in pixels.
        thresholds: P-, R- and O-net score thresholds.
        factor: scale step of the image pyramid.
        max_faces: faces kept at most, best first; None: every face. In onnxruntime
            (``OnnxMTCNNDetector``) the candidates of each stage are capped too (RNet sees at most
            ``8 * max_faces``, ONet ``4 * max_faces``), so a photo of hundreds of faces costs little;
            facenet-pytorch's MTCNN is capped after it has run. The service sets ``server.max_faces``.

    Which face is kept is the pipeline's choice (``PipelineCfg.select``), not the detector's.
    """

    min_face_size: int = 20
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)
    factor: float = 0.709
    max_faces: int | None = None


class FaceDetector(Protocol):
    """What the pipeline and the service need of a detector (``MTCNNDetector``, ``OnnxMTCNNDetector``)."""

    cfg: DetectorCfg

    def detect(self, image: np.ndarray) -> list[Detection]:
        """uint8 ``[H, W, 3]`` RGB -> every face found, highest score first."""
        ...


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
        return min(
            dets, key=lambda d: float(((d.box[0] + d.box[2]) / 2 - cx) ** 2 + ((d.box[1] + d.box[3]) / 2 - cy) ** 2)
        )
    raise ValueError(f"unknown face-selection policy {policy!r}; use most_confident, largest or center")


def check_rgb(image: np.ndarray) -> None:
    """Raise ``ValueError`` unless ``image`` is uint8 ``[H, W, 3]`` with both sides >= 1 px."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", None)
        dtype = getattr(image, "dtype", type(image).__name__)
        raise ValueError(f"image must be uint8 [H, W, 3] RGB, got shape {shape} dtype {dtype}")
    if min(image.shape[:2]) < 1:
        raise ValueError(f"image is empty ({image.shape[1]}x{image.shape[0]})")


def check_image(image: np.ndarray) -> None:
    """Raise ``ValueError`` unless ``image`` is uint8 ``[H, W, 3]`` with both sides >= 12 px (PNet's input)."""
    check_rgb(image)
    if min(image.shape[:2]) < 12:
        raise ValueError(f"image is too small for MTCNN ({image.shape[1]}x{image.shape[0]}); need >= 12 px")
