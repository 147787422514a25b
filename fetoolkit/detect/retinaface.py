"""RetinaFace with a small backbone (MIT, 1.7 MB): single-shot faces with 5 landmarks.

Contract of the file (``../shared/ASSETS.md``): input ``input`` ``[B, 3, H, W]`` (free axes), BGR
minus (104, 117, 127); outputs over the priors ``loc`` ``[B, N, 4]``, ``conf`` ``[B, N, 2]`` (softmax;
column 1 is "face"), ``landmarks`` ``[B, N, 10]``. Priors, in output order: for stride 8, 16, 32 with
sizes (16, 32), (64, 128), (256, 512), every cell of the ``ceil(H/s) x ceil(W/s)`` grid row-major,
each size in turn; a prior is ``(cx, cy, size, size)`` with ``cx = (col + 0.5) * s``. Decoding
(variances 0.1 and 0.2): centre ``prior_c + loc_c * 0.1 * prior_size``, size
``prior_size * exp(loc_s * 0.2)``, landmark ``prior_c + l * 0.1 * prior_size``.
"""

from __future__ import annotations

import numpy as np

from fetoolkit.detect.single_shot import OnnxSingleShot, SingleShotCfg

STEPS = (8, 16, 32)
SIZES = ((16, 32), (64, 128), (256, 512))
MEAN_BGR = np.array([104, 117, 127], np.float32)
VARIANCES = (0.1, 0.2)

DEFAULTS = SingleShotCfg(
    name="retinaface", score_threshold=0.8, nms_iou=0.4, min_face_size=10, max_side=640, min_side=320
)


def priors(height: int, width: int) -> np.ndarray:
    """float32 ``[N, 3]`` prior ``(cx, cy, size)`` in network pixels, in the outputs' order."""
    out = []
    for s, sizes in zip(STEPS, SIZES):
        rows, cols = -(-height // s), -(-width // s)
        yy, xx = np.mgrid[0:rows, 0:cols]
        cx = ((xx.ravel() + 0.5) * s).astype(np.float32)
        cy = ((yy.ravel() + 0.5) * s).astype(np.float32)
        for_cell = np.stack([np.repeat(cx, len(sizes)), np.repeat(cy, len(sizes)), np.tile(sizes, rows * cols)], axis=1)
        out.append(for_cell.astype(np.float32))
    return np.concatenate(out)


class RetinaFaceDetector(OnnxSingleShot):
    """RetinaFace in onnxruntime; priors, decoding and NMS in numpy (see :class:`OnnxSingleShot`)."""

    defaults = DEFAULTS

    def decode(self, net_image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = np.ascontiguousarray((net_image[:, :, ::-1].astype(np.float32) - MEAN_BGR).transpose(2, 0, 1)[None])
        loc, conf, lm = self.session.run(["loc", "conf", "landmarks"], {"input": x})
        ph, pw = net_image.shape[:2]
        p = priors(ph, pw)
        if len(p) != loc.shape[1]:
            raise RuntimeError(f"RetinaFace gave {loc.shape[1]} outputs for {len(p)} priors at {pw}x{ph}")
        c, size = p[:, :2], p[:, 2:3]
        v0, v1 = VARIANCES
        centre = c + loc[0, :, :2] * v0 * size
        wh = size * np.exp(loc[0, :, 2:] * v1)
        boxes = np.concatenate([centre - wh / 2, centre + wh / 2], axis=1)
        kps = c[:, None, :] + lm[0].reshape(-1, 5, 2) * v0 * size[:, None, :]
        return boxes.astype(np.float32), conf[0, :, 1].astype(np.float32), kps.astype(np.float32)
