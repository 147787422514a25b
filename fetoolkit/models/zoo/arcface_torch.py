"""Records of the IResNet models ``arcface_r18`` ... ``arcface_r200`` and their known releases.

Importing this module registers the records; it does not import torch (each record names its
builder in ``fetoolkit.models.iresnet``, imported only when ``registry.build_arch`` builds one).
A new release of one of these networks is one entry in its record's ``releases``
(``arcface_r50.<tag>`` then resolves to it).
"""

from __future__ import annotations

from fetoolkit.models.records import ModelSpec, register_model
from fetoolkit.models.weights import WeightsCfg
from fetoolkit.types import InputContract

# ---------------------------------------------------------------------------------------
# Model records.
#
# Contract of every arcface_torch model and of insightface's own ONNX exports: aligned
# 112x112 crop, RGB, (x - 127.5) / 127.5, NCHW. Sources:
# - arcface_torch trains on RGB with transforms.Normalize(mean=0.5, std=0.5) on [0, 1]
#   (= (x - 127.5) / 127.5), and torch2onnx.py exports the same normalisation.
# - insightface python-package, model_zoo/arcface_onnx.py (ArcFaceONNX): unless the first 8
#   graph nodes contain both a Sub/_minus and a Mul/_mul node (MXNet-converted models),
#   input_mean = input_std = 127.5, and get_feat() calls cv2.dnn.blobFromImages(...,
#   swapRB=True) on cv2's BGR crops, i.e. the network sees RGB. buffalo_l/w600k_r50.onnx and
#   antelopev2/glintr100.onnx are arcface_torch exports run through that path, so they take
#   RGB (not BGR) and the contract below. (Read from the insightface source; the two ONNX
#   files themselves could not be downloaded here to inspect their first nodes.)
# ---------------------------------------------------------------------------------------

ARCFACE_CONTRACT = InputContract(
    size=(112, 112),
    color="RGB",
    mean=(127.5, 127.5, 127.5),
    std=(127.5, 127.5, 127.5),
    layout="NCHW",
    embed_dim=512,
)

# arcface_torch's model zoo is one shared OneDrive folder (README "Model Zoo"); there are no
# per-file URLs. The sources below are "url:<shared folder>:<path inside the folder>", the
# same "<archive>:<member>" shape as the npm:/pypi: sources; the folder names
# (ms1mv3_arcface_r50_fp16/backbone.pth, ...) are the ones users of that folder cite. None of
# these files was reachable from here, so no sha256.
_ARCFACE_TORCH_ZOO = "url:https://1drv.ms/u/s!AswpsDO2toNKq0lWY69vN58GR6mw?e=p9Ov5d"
# insightface python-package model packs (GitHub release v0.7). buffalo_l.zip is still there;
# antelopev2.zip has been reported missing from that release since early 2024
# (deepinsight/insightface#2517) -- the URL is kept as the canonical name of the pack.
_INSIGHTFACE_RELEASE = "url:https://github.com/deepinsight/insightface/releases/download/v0.7"
# ONNX model zoo, after the repository moved its models under validated/.
_ONNX_ZOO_ARCFACE = "url:https://github.com/onnx/models/raw/main/validated/vision/body_analysis/arcface/model"


def _zoo_backbone(folder: str) -> WeightsCfg:
    """``<folder>/backbone.pth`` of arcface_torch's shared model-zoo folder."""
    return WeightsCfg(source=f"{_ARCFACE_TORCH_ZOO}:{folder}/backbone.pth", sha256=None, format="pth")


def _insightface_pack(pack: str, member: str) -> WeightsCfg:
    """ONNX file ``member`` of the insightface model pack ``<pack>.zip``."""
    return WeightsCfg(source=f"{_INSIGHTFACE_RELEASE}/{pack}.zip:{member}", sha256=None, format="onnx")


register_model(
    ModelSpec(
        name="arcface_r18",
        arch="iresnet18",
        builder="fetoolkit.models.iresnet:iresnet18",
        weights=None,
        contract=ARCFACE_CONTRACT,
        description="IResNet-18 (arcface_torch layout); supply a backbone.pth or ONNX export",
        releases={},
    )
)

register_model(
    ModelSpec(
        name="arcface_r34",
        arch="iresnet34",
        builder="fetoolkit.models.iresnet:iresnet34",
        weights=None,
        contract=ARCFACE_CONTRACT,
        description="IResNet-34 (arcface_torch layout); supply a backbone.pth or ONNX export",
        releases={},
    )
)

register_model(
    ModelSpec(
        name="arcface_r50",
        arch="iresnet50",
        builder="fetoolkit.models.iresnet:iresnet50",
        weights=None,
        contract=ARCFACE_CONTRACT,
        description=(
            "IResNet-50 (arcface_torch layout). Releases: arcface_torch MS1MV3 ArcFace and "
            "Glint360K CosFace backbone.pth; insightface buffalo_l w600k_r50.onnx "
            "(WebFace600K). All RGB, (x-127.5)/127.5."
        ),
        releases={
            "ms1mv3": _zoo_backbone("ms1mv3_arcface_r50_fp16"),
            # Glint360K models of the arcface_torch zoo were trained with the CosFace loss.
            "glint360k": _zoo_backbone("glint360k_cosface_r50_fp16_0.1"),
            "buffalo_l": _insightface_pack("buffalo_l", "w600k_r50.onnx"),
        },
    )
)

register_model(
    ModelSpec(
        name="arcface_r100",
        arch="iresnet100",
        builder="fetoolkit.models.iresnet:iresnet100",
        weights=None,
        contract=ARCFACE_CONTRACT,
        description=(
            "IResNet-100 (arcface_torch layout). Releases: arcface_torch MS1MV3 ArcFace and "
            "Glint360K CosFace backbone.pth, insightface antelopev2 glintr100.onnx (all RGB, "
            "(x-127.5)/127.5); ONNX-zoo arcfaceresnet100-8.onnx is the older MXNet "
            "LResNet100E-IR (MS1M-refined): same block layout, BN eps 2e-5, and it "
            "normalises inside the graph (feed it RGB 0..255; imported into this module it "
            "needs (x-127.5)/128)"
        ),
        releases={
            "ms1mv3": _zoo_backbone("ms1mv3_arcface_r100_fp16"),
            "glint360k": _zoo_backbone("glint360k_cosface_r100_fp16_0.1"),
            "antelopev2": _insightface_pack("antelopev2", "glintr100.onnx"),
            # ONNX model zoo LResNet100E-IR, opset 8, converted from MXNet. What is known from
            # the zoo's README / inference notebook and insightface's MXNet symbol
            # (fresnet.py): input "data" [1, 3, 112, 112], RGB, raw 0..255 floats -- the graph
            # starts with _minus (127.5) and _mul (0.0078125 = 1/128) nodes, which is why
            # insightface's ArcFaceONNX runs it with mean 0, std 1; every BatchNorm has
            # eps 2e-5; output "fc1" [1, 512]. NOT verified here (the file could not be
            # fetched): whether the MXNet->ONNX converter kept fc1's fix_gamma (gamma = 1),
            # and the exact PRelu slope shapes. This record's contract (the model's) does not
            # apply to it: run the ONNX file itself on RGB 0..255, or import it with
            # onnx_import.state_dict_from_onnx and feed (x - 127.5) / 128.
            "onnx_zoo_arcfaceresnet100_8": WeightsCfg(
                source=f"{_ONNX_ZOO_ARCFACE}/arcfaceresnet100-8.onnx",
                sha256=None,
                format="onnx",
            ),
        },
    )
)

register_model(
    ModelSpec(
        name="arcface_r200",
        arch="iresnet200",
        builder="fetoolkit.models.iresnet:iresnet200",
        weights=None,
        contract=ARCFACE_CONTRACT,
        description=(
            "IResNet-200 (arcface_torch layout); no public weights known, supply a backbone.pth or ONNX export"
        ),
        releases={},
    )
)
