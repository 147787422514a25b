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

The builders ``iresnet18`` ... ``iresnet200`` take ``iresnet``'s keyword arguments; the model
records ``arcface_r18`` ... ``arcface_r200`` (``fetoolkit.models.zoo.arcface_torch``, no torch)
name them as their ``builder``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

__all__ = [
    "BN_EPS",
    "IRESNET_BLOCKS",
    "IBasicBlock",
    "IResNet",
    "iresnet",
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
            raise ValueError(f"IResNet expects input [N, 3, {_INPUT_HW[0]}, {_INPUT_HW[1]}], got {list(x.shape)}")
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


def iresnet18(**kwargs: Any) -> IResNet:
    """IResNet-18, layers (2, 2, 2, 2); ``kwargs`` as for :func:`iresnet`."""
    return iresnet(18, **kwargs)


def iresnet34(**kwargs: Any) -> IResNet:
    """IResNet-34, layers (3, 4, 6, 3); ``kwargs`` as for :func:`iresnet`."""
    return iresnet(34, **kwargs)


def iresnet50(**kwargs: Any) -> IResNet:
    """IResNet-50, layers (3, 4, 14, 3); ``kwargs`` as for :func:`iresnet`."""
    return iresnet(50, **kwargs)


def iresnet100(**kwargs: Any) -> IResNet:
    """IResNet-100, layers (3, 13, 30, 3); ``kwargs`` as for :func:`iresnet`."""
    return iresnet(100, **kwargs)


def iresnet200(**kwargs: Any) -> IResNet:
    """IResNet-200, layers (6, 26, 60, 6); ``kwargs`` as for :func:`iresnet`."""
    return iresnet(200, **kwargs)
