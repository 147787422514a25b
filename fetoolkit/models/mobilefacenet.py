"""MobileFaceNet (Chen et al., 2018) as a config-driven PyTorch module.

One module family covers the MobileFaceNet variants we port from vendor files. They share the
body (a 3x3 stem, a depthwise 3x3, five stages of inverted-residual bottlenecks, a 1x1
expansion to 512 channels and a 7x7 global depthwise conv, "GDC") and differ in small ways
that ``MobileFaceNetConfig`` spells out:

* ``stem_pointwise``: the sirius-ai TensorFlow model has an extra *linear* 1x1 conv after the
  stem's depthwise conv.
* ``head_channels``: the linear 1x1 convs after the GDC (the last one gives the embedding).
* ``tf_same_padding``: TensorFlow "SAME" padding puts the odd pixel of a stride-2 3x3 conv on the
  bottom/right (pad ``(0, 1)`` on a 112/56/28/14 input) where PyTorch pads ``(1, 1)``; a model
  trained in TensorFlow needs the former to reproduce its outputs.

BatchNorm is folded into the convolutions in every file we port, so every conv has a bias and
there are no BatchNorm layers. PReLU is per channel (``nn.PReLU(C)``).

The module takes float32 ``[N, 3, 112, 112]`` (NCHW) already normalised as the model's input
contract says and returns the raw (not L2-normalised) float32 ``[N, embedding_dim]``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

Padding = tuple[int, int, int, int]
"""Explicit padding ``(left, right, top, bottom)`` in pixels, the order ``F.pad`` takes."""


@dataclass(frozen=True)
class MobileFaceNetConfig:
    """Shape of a MobileFaceNet variant.

    Attributes:
        stages: ``(expansion, out_channels, num_blocks, stride)`` per bottleneck stage; the
            stride applies to the first block of the stage.
        stem_channels: channels of the 3x3 stem conv and the depthwise conv after it.
        stem_pointwise: add a linear 1x1 ``stem_channels -> stem_channels`` conv after the
            stem's depthwise conv (sirius-ai TensorFlow model).
        sep_channels: channels of the 1x1 conv before the GDC.
        head_channels: output channels of the linear 1x1 convs after the GDC, in order; the
            last is the embedding size.
        input_size: side of the square input; the GDC kernel is ``input_size / 16``.
        tf_same_padding: pad as TensorFlow's "SAME" (asymmetric for stride 2) instead of
            PyTorch's symmetric ``kernel // 2``.
    """

    stages: tuple[tuple[int, int, int, int], ...] = (
        (2, 64, 5, 2),
        (4, 128, 1, 2),
        (2, 128, 6, 1),
        (4, 128, 1, 2),
        (2, 128, 2, 1),
    )
    stem_channels: int = 64
    stem_pointwise: bool = False
    sep_channels: int = 512
    head_channels: tuple[int, ...] = (512,)
    input_size: int = 112
    tf_same_padding: bool = False

    @property
    def embedding_dim(self) -> int:
        return self.head_channels[-1]


SIRIUS_CONFIG = MobileFaceNetConfig(stem_pointwise=True, head_channels=(512, 192), tf_same_padding=True)
"""sirius-ai MobileFaceNet_TF (ArcFace loss), 192-d, from ``MobileFaceNet.tflite``."""

FACEPLUGIN_CONFIG = MobileFaceNetConfig()
"""The classic (PyTorch) MobileFaceNet, 512-d, as in faceplugin ``fr_feature.onnx``."""


def conv_padding(size: int, kernel: int, stride: int, tf_same: bool) -> Padding:
    """Padding that keeps a conv's output at ``ceil(size / stride)`` pixels.

    Args:
        size: input height (= width) in pixels.
        kernel: kernel size.
        stride: conv stride.
        tf_same: TensorFlow "SAME" rule (the odd pixel goes bottom/right) if True, else the
            PyTorch convention ``kernel // 2`` on every side.

    Returns:
        ``(left, right, top, bottom)``.
    """
    if not tf_same:
        p = kernel // 2
        return (p, p, p, p)
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    before = total // 2
    return (before, total - before, before, total - before)


class ConvUnit(nn.Module):
    """Conv2d (with bias: BatchNorm folded in) and an optional per-channel PReLU.

    Input float32 ``[N, in_ch, H, W]``; output float32 ``[N, out_ch, H', W']``.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int = 1,
        stride: int = 1,
        groups: int = 1,
        padding: Padding = (0, 0, 0, 0),
        prelu: bool = True,
    ) -> None:
        super().__init__()
        left, right, top, bottom = padding
        symmetric = left == right == top == bottom
        # Asymmetric (TF "SAME", stride 2) padding needs an explicit pad before the conv.
        self.pad = None if symmetric else nn.ZeroPad2d(padding)
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, stride, padding=left if symmetric else 0, groups=groups)
        self.prelu = nn.PReLU(out_ch) if prelu else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad is not None:
            x = self.pad(x)
        x = self.conv(x)
        if self.prelu is not None:
            x = self.prelu(x)
        return x


class Bottleneck(nn.Module):
    """Inverted residual: 1x1 expand + PReLU, 3x3 depthwise + PReLU, linear 1x1 project.

    The input is added to the output when the stride is 1 and the channel count is kept.
    """

    def __init__(self, in_ch: int, out_ch: int, expansion: int, stride: int, padding: Padding) -> None:
        super().__init__()
        mid = in_ch * expansion
        self.residual = stride == 1 and in_ch == out_ch
        self.expand = ConvUnit(in_ch, mid)
        self.dw = ConvUnit(mid, mid, 3, stride, groups=mid, padding=padding)
        self.project = ConvUnit(mid, out_ch, prelu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.dw(self.expand(x)))
        return x + y if self.residual else y


class MobileFaceNet(nn.Module):
    """MobileFaceNet face-embedding network.

    Args:
        cfg: the variant (see ``MobileFaceNetConfig``).

    ``forward`` takes float32 ``[N, 3, S, S]`` (``S = cfg.input_size``, normalised per the
    model's contract) and returns float32 ``[N, cfg.embedding_dim]``, not L2-normalised.
    """

    def __init__(self, cfg: MobileFaceNetConfig = MobileFaceNetConfig()) -> None:
        super().__init__()
        if cfg.input_size % 16:
            raise ValueError(f"input_size must be a multiple of 16, got {cfg.input_size}")
        self.cfg = cfg
        size = cfg.input_size
        c = cfg.stem_channels

        def pad(kernel: int, stride: int) -> Padding:
            return conv_padding(size, kernel, stride, cfg.tf_same_padding)

        self.conv1 = ConvUnit(3, c, 3, 2, padding=pad(3, 2))
        size = -(-size // 2)
        self.dw_conv1 = ConvUnit(c, c, 3, 1, groups=c, padding=pad(3, 1))
        self.pw_conv1 = ConvUnit(c, c, prelu=False) if cfg.stem_pointwise else None

        blocks: list[nn.Module] = []
        for expansion, out_ch, num_blocks, stride in cfg.stages:
            for i in range(num_blocks):
                s = stride if i == 0 else 1
                blocks.append(Bottleneck(c, out_ch, expansion, s, padding=pad(3, s)))
                size = -(-size // s)
                c = out_ch
        self.layers = nn.Sequential(*blocks)

        self.conv_sep = ConvUnit(c, cfg.sep_channels)
        c = cfg.sep_channels
        # Global depthwise conv: one output pixel from the whole feature map.
        self.gdc = ConvUnit(c, c, size, groups=c, prelu=False)
        head: list[nn.Module] = []
        for out_ch in cfg.head_channels:
            head.append(nn.Conv2d(c, out_ch, 1))
            c = out_ch
        self.linear = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """float32 ``[N, 3, S, S]`` -> float32 ``[N, embedding_dim]``."""
        x = self.dw_conv1(self.conv1(x))
        if self.pw_conv1 is not None:
            x = self.pw_conv1(x)
        x = self.conv_sep(self.layers(x))
        x = self.linear(self.gdc(x))
        return torch.flatten(x, 1)


def mobilefacenet_sirius(**kwargs: Any) -> MobileFaceNet:
    """sirius-ai MobileFaceNet (ArcFace loss, 192-d), TF "SAME" padding; for weights from
    ``MobileFaceNet.tflite`` (see ``fetoolkit.models.convert.state_dict_from_tflite``).
    ``kwargs`` replace fields of ``SIRIUS_CONFIG`` (``MobileFaceNetConfig``)."""
    return MobileFaceNet(dataclasses.replace(SIRIUS_CONFIG, **kwargs))


def mobilefacenet_faceplugin(**kwargs: Any) -> MobileFaceNet:
    """Classic MobileFaceNet (PyTorch padding, GDC + one linear 1x1 conv), 512-d; for weights
    from faceplugin ``fr_feature.onnx`` (see ``fetoolkit.models.onnx_import.state_dict_from_onnx``).
    ``kwargs`` replace fields of ``FACEPLUGIN_CONFIG``."""
    return MobileFaceNet(dataclasses.replace(FACEPLUGIN_CONFIG, **kwargs))
