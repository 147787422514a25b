"""YuNet (OpenCV Zoo, 2023mar, MIT): a 0.23 MB single-shot face detector with 5 landmarks.

Contract of the file (checked by hand, see ``../shared/ASSETS.md``): input ``input`` ``[1, 3, H, W]``
BGR 0..255 without normalisation (the file declares 640x640; its reshapes are shape-agnostic, so
the height and width axes are re-declared free here and any multiple of 32 runs). Per stride
``s`` in 8, 16, 32 it gives, for every cell (row-major over ``[H/s, W/s]``):

* ``cls_s``, ``obj_s`` ``[1, N, 1]``: class and objectness, already sigmoid; score ``sqrt(cls*obj)``;
* ``bbox_s`` ``[1, N, 4]``: centre ``((col + b0) * s, (row + b1) * s)``, size ``(exp(b2) * s, exp(b3) * s)``;
* ``kps_s`` ``[1, N, 10]``: landmark ``k`` at ``((col + k_x) * s, (row + k_y) * s)``, in the ArcFace
  template's order (image-left eye, image-right eye, nose, mouth left, mouth right).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fetoolkit.detect.single_shot import OnnxSingleShot, SingleShotCfg

STRIDES = (8, 16, 32)

#: YuNet's defaults here (OpenCV's sample uses 0.9 / 0.3 for display; 0.6 keeps hard frontal faces).
#: Photos are scaled to a longer side of 640 (MTCNN's ``detect_max_side`` in the service): faces of
#: about 60 px in a 2560x1440 photo are still found (at 320 they are lost); small images are scaled up
#: to 320 (ORL's 92x112). Raise ``max_side`` for smaller faces (the cost grows with the pixel count).
DEFAULTS = SingleShotCfg(name="yunet", score_threshold=0.6, nms_iou=0.3, min_face_size=10, max_side=640, min_side=320)


def free_spatial_axes(model_bytes: bytes) -> bytes:
    """The ONNX file with its input's height and width (and its outputs' cell axis) declared free."""
    import onnx

    m = onnx.load_from_string(model_bytes)
    dims = m.graph.input[0].type.tensor_type.shape.dim
    for k, name in ((2, "height"), (3, "width")):
        dims[k].ClearField("dim_value")
        dims[k].dim_param = name
    for out in m.graph.output:
        d = out.type.tensor_type.shape.dim
        d[1].ClearField("dim_value")
        d[1].dim_param = f"{out.name}_cells"
    del m.graph.value_info[:]
    return m.SerializeToString()


class YuNetDetector(OnnxSingleShot):
    """YuNet in onnxruntime; decoding and NMS in numpy (see :class:`OnnxSingleShot` for the arguments)."""

    defaults = DEFAULTS

    def model_bytes(self, path: Path) -> bytes:
        return free_spatial_axes(path.read_bytes())

    def decode(self, net_image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = np.ascontiguousarray(net_image[:, :, ::-1].transpose(2, 0, 1)[None], dtype=np.float32)  # BGR NCHW
        names = [o.name for o in self.session.get_outputs()]
        out = dict(zip(names, self.session.run(names, {"input": x})))
        ph, pw = net_image.shape[:2]
        boxes, scores, kps = [], [], []
        for s in STRIDES:
            rows, cols = ph // s, pw // s
            cls, obj = out[f"cls_{s}"][0, :, 0], out[f"obj_{s}"][0, :, 0]
            b, k = out[f"bbox_{s}"][0], out[f"kps_{s}"][0].reshape(-1, 5, 2)
            cell = np.arange(rows * cols)
            col, row = (cell % cols).astype(np.float32), (cell // cols).astype(np.float32)
            cx, cy = (col + b[:, 0]) * s, (row + b[:, 1]) * s
            w, h = np.exp(b[:, 2]) * s, np.exp(b[:, 3]) * s
            boxes.append(np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1))
            kps.append(np.stack([(col[:, None] + k[:, :, 0]) * s, (row[:, None] + k[:, :, 1]) * s], axis=2))
            scores.append(np.sqrt(np.clip(cls, 0, 1) * np.clip(obj, 0, 1)))
        return (
            np.concatenate(boxes).astype(np.float32),
            np.concatenate(scores).astype(np.float32),
            np.concatenate(kps).astype(np.float32),
        )
