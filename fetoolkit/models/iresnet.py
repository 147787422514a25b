"""IResNet-18/34/50/100/200 with insightface ``arcface_torch``'s exact parameter layout.

The module names and tensor shapes are those of ``recognition/arcface_torch/backbones/
iresnet.py`` in deepinsight/insightface, so an arcface_torch ``backbone.pth`` loads with
``load_state_dict(strict=True)`` and nothing renamed:

- stem: ``conv1`` (3x3, 3->64, stride 1, pad 1, no bias), ``bn1`` (BatchNorm2d 64),
  ``prelu`` (PReLU, 64 slopes);
- ``layer1``..``layer4``: 64/128/256/512 planes, every layer halves the resolution
  (112 -> 56 -> 28 -> 14 -> 7). Each block ``layerK.i`` is ``bn1 -> conv1 -> bn2 -> prelu ->
  conv2 -> bn3`` plus the shortcut; the stride sits on ``conv2``; the first block of every
  layer has ``downsample.0`` (1x1 conv, stride 2, no bias) and ``downsample.1``
  (BatchNorm2d). There is no activation after the residual sum;
- head: ``bn2`` (BatchNorm2d 512), ``dropout`` (no tensors), ``fc`` (Linear 25088 -> 512,
  with bias), ``features`` (BatchNorm1d 512 whose ``weight`` is fixed at 1 and not
  trained, but still in the state_dict).

Every BatchNorm uses ``eps=1e-5`` (arcface_torch; the older MXNet models used 2e-5, see
``onnx_import`` for how such files are mapped). Every PReLU has one slope per channel.

Input: float32 ``[N, 3, 112, 112]``, RGB, ``(pixel - 127.5) / 127.5``.
Output: float32 ``[N, 512]``, raw (not L2-normalised).

Importing this module registers the architectures ``iresnet18`` ... ``iresnet200`` and the
models ``arcface_r18`` ... ``arcface_r200``.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from fetoolkit.models.registry import ModelSpec, register_arch, register_model
from fetoolkit.models.weights import WeightsCfg
from fetoolkit.types import InputContract

__all__ = [
    "BN_EPS",
    "IRESNET_BLOCKS",
    "IBasicBlock",
    "IResNet",
    "iresnet",
    "ARCFACE_CONTRACT",
]

#: BatchNorm epsilon of every BatchNorm in arcface_torch's IResNet (2d and the 1d ``features``).
BN_EPS: float = 1e-5

#: Blocks per layer (layer1..layer4) for each depth, as in arcface_torch's ``get_model``.
IRESNET_BLOCKS: dict[int, tuple[int, int, int, int]] = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 14, 3),
    100: (3, 13, 30, 3),
    200: (6, 26, 60, 6),
}

_LAYER_PLANES: tuple[int, int, int, int] = (64, 128, 256, 512)
_INPUT_HW: tuple[int, int] = (112, 112)
_FINAL_HW: int = 7  # 112 / 2**4


class IBasicBlock(nn.Module):
    """Pre-activation-style IResNet block (``bn1 conv1 bn2 prelu conv2 bn3`` + shortcut).

    Args:
        in_planes: channels of the block input.
        planes: channels of the block output.
        stride: stride of ``conv2`` (and of ``downsample.0`` when there is one).

    Shapes: float32 ``[N, in_planes, H, W]`` -> ``[N, planes, H / stride, W / stride]``.
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        # Registration order = execution order = arcface_torch's state_dict order.
        self.bn1 = nn.BatchNorm2d(in_planes, eps=BN_EPS)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, eps=BN_EPS)
        self.prelu = nn.PReLU(num_parameters=planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes, eps=BN_EPS)
        self.downsample: nn.Sequential | None = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes, eps=BN_EPS),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual block; see the class docstring for shapes."""
        y = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return y + shortcut


class IResNet(nn.Module):
    """arcface_torch IResNet backbone.

    Args:
        blocks: number of ``IBasicBlock`` in layer1..layer4, e.g. ``(3, 13, 30, 3)`` for r100.
        num_features: embedding size (512 for every public arcface_torch model).
        dropout: dropout probability before ``fc`` (0 at inference, as arcface_torch exports).

    Shapes: float32 ``[N, 3, 112, 112]`` (RGB, ``(x - 127.5) / 127.5``) ->
    float32 ``[N, num_features]`` raw embeddings (apply L2 normalisation yourself).
    """

    def __init__(
        self,
        blocks: tuple[int, int, int, int],
        num_features: int = 512,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if len(blocks) != 4 or min(blocks) < 1:
            raise ValueError(f"blocks must be 4 positive counts, got {blocks}")
        self.blocks = tuple(int(b) for b in blocks)
        self.num_features = int(num_features)

        self.conv1 = nn.Conv2d(3, _LAYER_PLANES[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(_LAYER_PLANES[0], eps=BN_EPS)
        self.prelu = nn.PReLU(num_parameters=_LAYER_PLANES[0])

        in_planes = _LAYER_PLANES[0]
        for index, (planes, count) in enumerate(zip(_LAYER_PLANES, self.blocks), start=1):
            stage = [IBasicBlock(in_planes, planes, stride=2)]
            stage += [IBasicBlock(planes, planes, stride=1) for _ in range(count - 1)]
            self.add_module(f"layer{index}", nn.Sequential(*stage))
            in_planes = planes

        self.bn2 = nn.BatchNorm2d(in_planes, eps=BN_EPS)
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(in_planes * _FINAL_HW * _FINAL_HW, self.num_features)
        self.features = nn.BatchNorm1d(self.num_features, eps=BN_EPS)
        self._init_weights()

    def _init_weights(self) -> None:
        """arcface_torch's init: conv N(0, 0.1), BN2d (1, 0), ``features.weight`` = 1, frozen."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, mean=0.0, std=0.1)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.ones_(self.features.weight)
        self.features.weight.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embed a batch; float32 ``[N, 3, 112, 112]`` -> float32 ``[N, num_features]``."""
        if not torch.jit.is_tracing() and tuple(x.shape[-3:]) != (3, *_INPUT_HW):
            raise ValueError(
                f"IResNet expects input [N, 3, {_INPUT_HW[0]}, {_INPUT_HW[1]}], got {list(x.shape)}"
            )
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = self.layer4(x)
        x = self.bn2(x)
        x = torch.flatten(x, 1)
        x = self.dropout(x)
        x = self.fc(x)
        return self.features(x)


def iresnet(depth: int, *, num_features: int = 512, dropout: float = 0.0) -> IResNet:
    """Build an untrained IResNet of ``depth`` in {18, 34, 50, 100, 200}."""
    try:
        blocks = IRESNET_BLOCKS[depth]
    except KeyError:
        known = sorted(IRESNET_BLOCKS)
        raise ValueError(f"unknown IResNet depth {depth}; known: {known}") from None
    return IResNet(blocks, num_features=num_features, dropout=dropout)


@register_arch("iresnet18")
def iresnet18() -> nn.Module:
    """IResNet-18, layers (2, 2, 2, 2)."""
    return iresnet(18)


@register_arch("iresnet34")
def iresnet34() -> nn.Module:
    """IResNet-34, layers (3, 4, 6, 3)."""
    return iresnet(34)


@register_arch("iresnet50")
def iresnet50() -> nn.Module:
    """IResNet-50, layers (3, 4, 14, 3)."""
    return iresnet(50)


@register_arch("iresnet100")
def iresnet100() -> nn.Module:
    """IResNet-100, layers (3, 13, 30, 3)."""
    return iresnet(100)


@register_arch("iresnet200")
def iresnet200() -> nn.Module:
    """IResNet-200, layers (6, 26, 60, 6)."""
    return iresnet(200)


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
_ONNX_ZOO_ARCFACE = (
    "url:https://github.com/onnx/models/raw/main/validated/vision/body_analysis/arcface/model"
)

register_model(
    ModelSpec(
        name="arcface_r18",
        arch="iresnet18",
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
        weights=None,
        contract=ARCFACE_CONTRACT,
        description=(
            "IResNet-50 (arcface_torch layout). Releases: arcface_torch MS1MV3 ArcFace and "
            "Glint360K CosFace backbone.pth; insightface buffalo_l w600k_r50.onnx "
            "(WebFace600K). All RGB, (x-127.5)/127.5."
        ),
        releases={
            "ms1mv3": WeightsCfg(
                source=f"{_ARCFACE_TORCH_ZOO}:ms1mv3_arcface_r50_fp16/backbone.pth",
                sha256=None,
                format="pth",
            ),
            # Glint360K models of the arcface_torch zoo were trained with the CosFace loss.
            "glint360k": WeightsCfg(
                source=f"{_ARCFACE_TORCH_ZOO}:glint360k_cosface_r50_fp16_0.1/backbone.pth",
                sha256=None,
                format="pth",
            ),
            "buffalo_l": WeightsCfg(
                source=f"{_INSIGHTFACE_RELEASE}/buffalo_l.zip:w600k_r50.onnx",
                sha256=None,
                format="onnx",
            ),
        },
    )
)

register_model(
    ModelSpec(
        name="arcface_r100",
        arch="iresnet100",
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
            "ms1mv3": WeightsCfg(
                source=f"{_ARCFACE_TORCH_ZOO}:ms1mv3_arcface_r100_fp16/backbone.pth",
                sha256=None,
                format="pth",
            ),
            "glint360k": WeightsCfg(
                source=f"{_ARCFACE_TORCH_ZOO}:glint360k_cosface_r100_fp16_0.1/backbone.pth",
                sha256=None,
                format="pth",
            ),
            "antelopev2": WeightsCfg(
                source=f"{_INSIGHTFACE_RELEASE}/antelopev2.zip:glintr100.onnx",
                sha256=None,
                format="onnx",
            ),
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
        weights=None,
        contract=ARCFACE_CONTRACT,
        description=(
            "IResNet-200 (arcface_torch layout); no public weights known, supply a "
            "backbone.pth or ONNX export"
        ),
        releases={},
    )
)
