"""MTCNN without torch: facenet-pytorch's P/R/O nets in onnxruntime, its pipeline in numpy.

``OnnxMTCNNDetector`` gives the detections of ``MTCNNDetector`` (facenet-pytorch's
``detect_face``) without importing torch, which costs about 520 MB of RSS in the service.
Only the three small nets run in onnxruntime; everything around them is reproduced in numpy,
operation by operation in float32, so that the numbers fed to the nets are bit-identical to
facenet-pytorch's and the remaining differences come from the convolutions alone
(onnxruntime and torch sum in different orders: about 1e-6 relative):

* image pyramid: the same scales (``12 / min_face_size * factor**k`` while the shorter side
  stays >= 12 px), resized to ``int(side * scale + 1)``;
* resampling: torch's ``interpolate(mode="area")`` is adaptive average pooling, output pixel
  ``i`` averaging input ``[floor(i*In/Out), ceil((i+1)*In/Out))``. The window sums are exact
  integers here (taken from a summed-area table of the uint8 image), and are divided as
  torch does, ``sum / kh / kw`` in float32 (``sum / (kh*kw)`` differs in the last bit);
  ``cv2.INTER_AREA`` is a different filter for non-integer ratios;
* normalisation ``(x - 127.5) * 0.0078125`` in float32;
* PNet boxes ``floor((2*(x, y) + 1) / scale)``, ``floor((2*(x, y) + 12) / scale)`` in float32;
* non-maximum suppression: torchvision's ``nms`` (IoU without ``+1``, stable descending score
  order, suppression when IoU > threshold compared in float64) per scale (0.5), over all
  scales (0.7) and after RNet (0.7); after ONet facenet-pytorch's own numpy NMS ("Min": overlap
  over the smaller area, ``+1`` in widths, ``np.argsort`` order, kept when ``<=`` threshold);
* box regression (widths ``x2 - x1`` after PNet, ``x2 - x1 + 1`` after RNet and ONet),
  squaring (``rerec``), truncation and clipping to the image (``pad``), crops without padding,
  landmarks ``(x2 - x1 + 1) * l + x1 - 1`` computed from the boxes before ONet's regression.

The ONNX files (:mod:`fetoolkit.detect.mtcnn_files`) are exported from the weights that ship in
the facenet-pytorch wheel, once, in a child process, and verified before each use; the numpy
steps are :mod:`fetoolkit.detect.mtcnn_numpy`.

Measured (``tests/test_mtcnn_onnx.py``): the same faces on all 400 ORL images, the wild photos
and a 100-face mosaic; boxes within 2e-4 px, landmarks 1.3e-4 px, scores 5e-7. Known, rare
differences from facenet-pytorch (none seen there):

* a PNet/RNet/ONet probability within ~1e-6 of a threshold, or two candidates whose scores tie
  in one implementation and not in the other, may keep a different candidate;
* given more than 1,000 boxes, torchvision's ``batched_nms`` takes another path that re-sorts
  its result with torch's unstable sort; exactly tied scores may then come out in another
  order than the stable order used here (the 100-face mosaic takes that path and matches);
* facenet-pytorch fails on images whose shorter side is below ``min_face_size`` (no pyramid
  scale: ``torch.cat`` of an empty list, a ``ValueError`` in torch 2.14), and (a boolean mask
  of the wrong length) when a candidate box lies wholly outside the image, so that its crop is
  empty; here the first returns ``[]`` and the second drops that candidate.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fetoolkit.detect.base import DetectorCfg, check_image
from fetoolkit.detect.mtcnn_files import (
    EXPORT_VERSION,
    MANIFEST,
    NETS,
    OUTPUTS,
    ensure_mtcnn_onnx,
    export_mtcnn_onnx,
    facenet_weights,
)
from fetoolkit.detect.mtcnn_numpy import (
    crop_bounds,
    crop_resize_area,
    integral_image,
    landmarks_to_image,
    nms,
    nms_min,
    normalise,
    pnet_boxes,
    pyramid_scales,
    regress,
    resize_area,
    square,
)
from fetoolkit.types import Detection

if TYPE_CHECKING:
    import onnxruntime as ort

# The file and numpy names are re-exported: ``from fetoolkit.detect.mtcnn_onnx import ...`` keeps working.
__all__ = [
    "EXPORT_VERSION",
    "MANIFEST",
    "NETS",
    "OUTPUTS",
    "OnnxMTCNNDetector",
    "crop_bounds",
    "crop_resize_area",
    "ensure_mtcnn_onnx",
    "export_mtcnn_onnx",
    "facenet_weights",
    "integral_image",
    "nms",
    "nms_min",
    "pnet_boxes",
    "pyramid_scales",
    "regress",
    "resize_area",
    "square",
]

#: Widths of the R/ONet outputs, in ``OUTPUTS`` order.
OUTPUT_WIDTHS = {"rnet": (4, 2), "onet": (4, 10, 2)}
#: Candidates per RNet / ONet call (bounds the input tensor to about 7 MB).
CHUNK = {"rnet": 1024, "onet": 256}


class OnnxMTCNNDetector:
    """facenet-pytorch's MTCNN in onnxruntime + numpy: the same detections as ``MTCNNDetector``.

    Thread-safe without a lock: the onnxruntime sessions' ``run`` is, and ``detect`` keeps
    its state in local variables.

    Args:
        cfg: detector settings (default ``DetectorCfg()``).
        num_threads: onnxruntime intra-op threads per call.
        model_dir: folder of the ONNX files (default ``cache_home() / "mtcnn"``); exported into
            it, in a child process, when missing.
    """

    def __init__(self, cfg: DetectorCfg | None = None, *, num_threads: int = 1, model_dir: Path | None = None) -> None:
        import onnxruntime as ort

        from fetoolkit.backends.onnx_backend import session_options

        self.cfg = cfg or DetectorCfg()
        self.paths = ensure_mtcnn_onnx(model_dir)
        opts = session_options(num_threads)
        self._sessions: dict[str, ort.InferenceSession] = {
            net: ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
            for net, path in self.paths.items()
        }

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Detect faces in one image.

        Args:
            image: uint8 ``[H, W, 3]`` RGB, both sides >= 12 px (else ``ValueError``).

        Returns:
            Detections (float32 box ``[4]`` and landmarks ``[5, 2]``) sorted by score, highest
            first; empty when there is no face.
        """
        check_image(image)
        boxes, scores, points = self._detect_arrays(image)
        order = np.argsort(-scores, kind="stable")
        return [Detection(box=boxes[i].copy(), score=float(scores[i]), landmarks=points[i].copy()) for i in order]

    # -- stages ----------------------------------------------------------------------------

    def _detect_arrays(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """float32 ``boxes [N, 4]``, ``scores [N]``, ``landmarks [N, 5, 2]`` in facenet-pytorch's order."""
        h, w = image.shape[:2]
        t1, t2, t3 = self.cfg.thresholds
        table = integral_image(image)
        cap = self.cfg.max_faces
        boxes, scores = _best(*self._stage_pnet(table, t1), limit=None if cap is None else 8 * cap)
        no_face = (np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32))
        if len(boxes) == 0:
            return no_face
        boxes, scores = _best(*self._stage_rnet(table, boxes, w, h, t2), limit=None if cap is None else 4 * cap)
        if len(boxes) == 0:
            return no_face
        return _best(*self._stage_onet(table, boxes, w, h, t3), limit=cap)

    def _stage_pnet(self, table: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
        """Image pyramid through PNet, NMS 0.5 per scale then 0.7 overall, regression, squaring.

        Returns:
            float32 square candidate ``boxes [N, 4]`` and their PNet ``scores [N]``.
        """
        h, w = table.shape[0] - 1, table.shape[1] - 1
        pnet = self._sessions["pnet"]
        all_boxes, all_scores, all_reg = [], [], []
        for scale in pyramid_scales(h, w, self.cfg.min_face_size, self.cfg.factor):
            x = normalise(resize_area(table, int(h * scale + 1), int(w * scale + 1)))[None]
            reg, prob = pnet.run(None, {"input": x})
            boxes, scores, cell_reg = pnet_boxes(reg[0], prob[0, 1], scale, threshold)
            pick = nms(boxes, scores, 0.5)
            all_boxes.append(boxes[pick])
            all_scores.append(scores[pick])
            all_reg.append(cell_reg[pick])
        if not all_boxes:  # shorter side < 12 / (12 / min_face_size): no scale (facenet-pytorch crashes)
            return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
        boxes, scores, reg = np.concatenate(all_boxes), np.concatenate(all_scores), np.concatenate(all_reg)
        pick = nms(boxes, scores, 0.7)
        return square(regress(boxes[pick], reg[pick], plus_one=False)), scores[pick]

    def _run_crops(
        self, net: str, table: np.ndarray, boxes: np.ndarray, width: int, height: int, size: int
    ) -> tuple[list[np.ndarray], np.ndarray]:
        """Crop ``boxes`` from the image, resize to ``size``, run ``net`` in chunks.

        Returns:
            the net's outputs (float32 ``[N, ...]`` each; rows of invalid crops are zeros) and
            bool ``valid [N]`` (a non-empty crop window).
        """
        y0, y1, x0, x1, valid = crop_bounds(boxes, width, height)
        idx = np.flatnonzero(valid)
        session = self._sessions[net]
        outs: list[list[np.ndarray]] = [[] for _ in OUTPUTS[net]]
        for start in range(0, len(idx), CHUNK[net]):
            k = idx[start : start + CHUNK[net]]
            x = normalise(crop_resize_area(table, y0[k], y1[k], x0[k], x1[k], size))
            for acc, out in zip(outs, session.run(None, {"input": x})):
                acc.append(out)
        results = []
        for acc, width_ in zip(outs, OUTPUT_WIDTHS[net]):
            full = np.zeros((len(boxes), width_), np.float32)
            if acc:
                full[idx] = np.concatenate(acc)
            results.append(full)
        return results, valid

    def _stage_rnet(
        self, table: np.ndarray, boxes: np.ndarray, width: int, height: int, threshold: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """RNet on 24 px crops: keep ``prob > threshold``, NMS 0.7, regression (+1), squaring."""
        (reg, prob), valid = self._run_crops("rnet", table, boxes, width, height, 24)
        scores = prob[:, 1]
        keep = (scores > threshold) & valid
        boxes, scores, reg = boxes[keep], scores[keep], reg[keep]
        pick = nms(boxes, scores, 0.7)
        return square(regress(boxes[pick], reg[pick], plus_one=True)), scores[pick]

    def _stage_onet(
        self, table: np.ndarray, boxes: np.ndarray, width: int, height: int, threshold: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """ONet on 48 px crops: keep ``prob > threshold``, landmarks, regression (+1), "Min" NMS 0.7."""
        (reg, rel, prob), valid = self._run_crops("onet", table, boxes, width, height, 48)
        scores = prob[:, 1]
        keep = (scores > threshold) & valid
        boxes, scores, reg, rel = boxes[keep], scores[keep], reg[keep], rel[keep]
        points = landmarks_to_image(boxes, rel)
        boxes = regress(boxes, reg, plus_one=True)
        pick = nms_min(boxes, scores, 0.7)
        return boxes[pick], scores[pick], points[pick]


def _best(boxes: np.ndarray, scores: np.ndarray, *rest: np.ndarray, limit: int | None) -> tuple[np.ndarray, ...]:
    """The ``limit`` best-scored rows of ``boxes``, ``scores`` (and ``rest``), in their order; all when None."""
    if limit is None or len(scores) <= limit:
        return (boxes, scores, *rest)
    keep = np.sort(np.argsort(-scores, kind="stable")[:limit])
    return (boxes[keep], scores[keep], *(r[keep] for r in rest))
