"""Independent reference IResNet in arcface_torch's layout, for the loader tests.

Written separately from ``fetoolkit.models.iresnet`` (do not import from it): same class
names and attribute names as ``recognition/arcface_torch/backbones/iresnet.py`` in
deepinsight/insightface (``IBasicBlock``, ``IResNet``, ``conv1 bn1 prelu layer1..4 bn2 dropout
fc features``, block ``bn1 conv1 bn2 prelu conv2 bn3 downsample``), built the way that file
builds it (an ``inplanes`` counter and ``_make_layer``), so its ``state_dict()`` and its ONNX
export are what arcface_torch writes. ``export_like_arcface_torch`` mirrors
``torch2onnx.py``.

``bn_eps`` exists only so tests can imitate the MXNet-era models (eps 2e-5).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

LAYERS = {
    18: [2, 2, 2, 2],
    34: [3, 4, 6, 3],
    50: [3, 4, 14, 3],
    100: [3, 13, 30, 3],
    200: [6, 26, 60, 6],
}


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution, padding 1, no bias."""
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution, no bias."""
    return nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False)


class IBasicBlock(nn.Module):
    """bn1 -> conv1 -> bn2 -> prelu -> conv2(stride) -> bn3, plus identity or downsample."""

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        bn_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes, eps=bn_eps)
        self.conv1 = conv3x3(inplanes, planes)
        self.bn2 = nn.BatchNorm2d(planes, eps=bn_eps)
        self.prelu = nn.PReLU(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn3 = nn.BatchNorm2d(planes, eps=bn_eps)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.bn1(x)
        out = self.conv1(out)
        out = self.bn2(out)
        out = self.prelu(out)
        out = self.conv2(out)
        out = self.bn3(out)
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return out


class IResNet(nn.Module):
    """[N, 3, 112, 112] float32 -> [N, num_features] float32."""

    fc_scale = 7 * 7

    def __init__(
        self,
        block: type[IBasicBlock],
        layers: list[int],
        dropout: float = 0.0,
        num_features: int = 512,
        bn_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.bn_eps = bn_eps
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes, eps=bn_eps)
        self.prelu = nn.PReLU(self.inplanes)
        self.layer1 = self._make_layer(block, 64, layers[0], stride=2)
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        self.bn2 = nn.BatchNorm2d(512 * block.expansion, eps=bn_eps)
        self.dropout = nn.Dropout(p=dropout, inplace=True)
        self.fc = nn.Linear(512 * block.expansion * self.fc_scale, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=bn_eps)
        nn.init.constant_(self.features.weight, 1.0)
        self.features.weight.requires_grad = False

    def _make_layer(self, block: type[IBasicBlock], planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * block.expansion, stride),
                nn.BatchNorm2d(planes * block.expansion, eps=self.bn_eps),
            )
        layers = [block(self.inplanes, planes, stride, downsample, bn_eps=self.bn_eps)]
        self.inplanes = planes * block.expansion
        for _ in range(1, blocks):
            layers.append(block(self.inplanes, planes, bn_eps=self.bn_eps))
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = self.bn1(x)
        x = self.prelu(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = self.layer4(x)
        x = self.bn2(x)
        x = torch.flatten(x, 1)
        x = self.dropout(x)
        x = self.fc(x)
        x = self.features(x)
        return x


def reference_iresnet(depth: int, bn_eps: float = 1e-5) -> IResNet:
    """arcface_torch's ``get_model("r<depth>")`` equivalent (dropout 0, 512 features)."""
    return IResNet(IBasicBlock, LAYERS[depth], bn_eps=bn_eps)


@torch.no_grad()
def randomize_(model: nn.Module, seed: int) -> nn.Module:
    """Random weights AND random BatchNorm running statistics (else eval BN is ~identity).

    Scales are chosen so that activations stay O(1)..O(100) through 100+ residual blocks.
    """
    g = torch.Generator().manual_seed(seed)

    def uniform(t: torch.Tensor, lo: float, hi: float) -> None:
        t.copy_(torch.rand(t.shape, generator=g) * (hi - lo) + lo)

    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            fan_in = m.in_channels * m.kernel_size[0] * m.kernel_size[1]
            m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (1.0 / fan_in) ** 0.5)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            # A block's last BN (bn3) scales its residual branch: keep it small, as trained
            # IResNets do, so the sum over 100+ blocks does not explode.
            if name.endswith("bn3"):
                uniform(m.weight, 0.05, 0.25)
            else:
                uniform(m.weight, 0.5, 1.5)
            uniform(m.bias, -0.3, 0.3)
            uniform(m.running_mean, -0.3, 0.3)
            uniform(m.running_var, 0.5, 2.0)
            m.num_batches_tracked.fill_(1000)
        elif isinstance(m, nn.PReLU):
            uniform(m.weight, 0.05, 0.4)
        elif isinstance(m, nn.Linear):
            m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (1.0 / m.in_features) ** 0.5)
            uniform(m.bias, -0.1, 0.1)
    return model.eval()


def export_like_arcface_torch(model: nn.Module, path: Path, **overrides: object) -> Path:
    """Export as arcface_torch's ``torch2onnx.convert_onnx`` does.

    TorchScript-based exporter (``dynamo=False``; the torch.export-based default cannot emit
    opset 11), one 112x112 image in ``[-1, 1]``, ``input_names=["data"]``, opset 11,
    ``keep_initializers_as_inputs=False``, constant folding on (the default), then the batch
    dimension renamed to ``"None"`` as that script does. ``overrides`` replaces export kwargs.
    """
    import onnx

    model.eval()
    img = torch.randint(0, 255, (1, 3, 112, 112), generator=torch.Generator().manual_seed(0))
    img = (img.float() / 255.0 - 0.5) / 0.5
    kwargs: dict[str, object] = dict(
        input_names=["data"],
        keep_initializers_as_inputs=False,
        verbose=False,
        opset_version=11,
        do_constant_folding=True,
        dynamo=False,
    )
    kwargs.update(overrides)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (img,), str(path), **kwargs)
    proto = onnx.load(str(path))
    proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "None"
    onnx.save(proto, str(path))
    return path
