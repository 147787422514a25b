"""TFLite weight files -> our modules' ``state_dict``.

ONNX files (the faceplugin MobileFaceNet, IResNet exports, our own exports) are read by the one
ONNX importer, ``fetoolkit.models.onnx_import.state_dict_from_onnx``.

``state_dict_from_tflite`` reads a TFLite flatbuffer with the ``tflite`` parser package (the
TFLite interpreter is never run here), walks the graph in order and maps every weight tensor
onto the module's convolutions and PReLUs, in the module's registration order. Every shape,
stride and padding is checked; anything that does not fit raises ``ValueError`` naming the
file's tensor and our ``state_dict`` key.

The mapping is positional on purpose: the file's tensor names are TensorFlow variable names
numbered globally (``MobileFaceNet/Conv_3/weights`` belongs to ``Conv2d_2_InvResBlock_1``),
so the graph order is the reliable key, and the shape/kind/stride/padding checks catch an
off-by-one at once.

Layouts handled:

* ``CONV_2D`` filter ``[O, H, W, I]`` (OHWI) -> torch ``[O, I, H, W]``.
* ``DEPTHWISE_CONV_2D`` filter ``[1, H, W, C * mult]`` -> torch ``[C * mult, 1, H, W]``.
* PReLU, which TensorFlow graphs often spell ``relu(x) + c * (x - |x|)`` (ops RELU, ABS, SUB,
  MUL, ADD). Since ``x - |x| = 2 * min(x, 0)``, that is ``PReLU`` with ``alpha = 2 * c``
  (the 0.5 of ``alpha * (x - |x|) * 0.5`` is folded into ``c`` by the converter); if the SUB is
  ``|x| - x`` instead, ``alpha = -2 * c``. The algebra is read from the graph, not assumed.
* Padding: TFLite ``SAME`` is converted to explicit ``(left, right, top, bottom)`` from the
  op's real input size, so a stride-2 conv on an even input needs ``(0, 1, 0, 1)`` (the odd
  pixel bottom/right), which the module must reproduce (see ``mobilefacenet.ConvUnit``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn as nn

log = logging.getLogger(__name__)

Kind = Literal["conv", "depthwise", "prelu"]
Padding = tuple[int, int, int, int]  # (left, right, top, bottom)


@dataclass(frozen=True)
class SourceLayer:
    """One weighted layer of a vendor graph, arrays already in torch layout.

    Attributes:
        kind: ``conv``, ``depthwise`` or ``prelu``.
        where: the op(s) it came from, for messages (``"op 12 CONV_2D"``).
        tensors: role (``weight``/``bias``) -> (file tensor name, float32 array in torch layout).
        stride: ``(sh, sw)`` for convs.
        padding: ``(left, right, top, bottom)`` for convs.
    """

    kind: Kind
    where: str
    tensors: dict[str, tuple[str, np.ndarray]]
    stride: tuple[int, int] | None = None
    padding: Padding | None = None


@dataclass(frozen=True)
class TargetLayer:
    """One weighted layer of our module (an ``nn.Conv2d`` or ``nn.PReLU``).

    Attributes:
        kind: ``conv``, ``depthwise`` (``groups == in_channels > 1``) or ``prelu``.
        prefix: the module's path in the ``state_dict`` (``layers.3.dw.conv``).
        shapes: role (``weight``/``bias``) -> expected shape.
        stride: ``(sh, sw)`` for convs.
        padding: effective ``(left, right, top, bottom)`` for convs (a ``ZeroPad2d`` right
            before the conv plus the conv's own padding).
    """

    kind: Kind
    prefix: str
    shapes: dict[str, tuple[int, ...]]
    stride: tuple[int, int] | None = None
    padding: Padding | None = None
    keys: dict[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Our side
# --------------------------------------------------------------------------------------------


def target_layers(module: nn.Module) -> list[TargetLayer]:
    """The module's weighted layers in registration order.

    Only ``nn.Conv2d`` and ``nn.PReLU`` carry weights; a ``nn.ZeroPad2d`` is folded into the
    padding of the next conv. Any other parameter or buffer raises ``ValueError`` (the file
    could not fill it).
    """
    layers: list[TargetLayer] = []
    pending_pad: Padding = (0, 0, 0, 0)
    for prefix, m in module.named_modules():
        if isinstance(m, nn.ZeroPad2d):
            pending_pad = tuple(int(p) for p in m.padding)  # type: ignore[assignment]
        elif isinstance(m, nn.Conv2d):
            if isinstance(m.padding, str):
                raise ValueError(f"{prefix}: string padding {m.padding!r} is not supported")
            ph, pw = m.padding
            pad = (
                pending_pad[0] + pw,
                pending_pad[1] + pw,
                pending_pad[2] + ph,
                pending_pad[3] + ph,
            )
            depthwise = m.groups > 1 and m.groups == m.in_channels
            if m.groups > 1 and not depthwise:
                raise ValueError(f"{prefix}: grouped (non-depthwise) conv is not supported")
            shapes = {"weight": tuple(m.weight.shape)}
            if m.bias is not None:
                shapes["bias"] = tuple(m.bias.shape)
            layers.append(
                TargetLayer(
                    kind="depthwise" if depthwise else "conv",
                    prefix=prefix,
                    shapes=shapes,
                    stride=tuple(m.stride),  # type: ignore[arg-type]
                    padding=pad,
                    keys={r: f"{prefix}.{r}" for r in shapes},
                )
            )
            pending_pad = (0, 0, 0, 0)
        elif isinstance(m, nn.PReLU):
            layers.append(
                TargetLayer(
                    kind="prelu",
                    prefix=prefix,
                    shapes={"weight": tuple(m.weight.shape)},
                    keys={"weight": f"{prefix}.weight"},
                )
            )
    covered = {key for layer in layers for key in layer.keys.values()}
    for key in module.state_dict():
        if key not in covered:
            raise ValueError(f"our state_dict key {key!r} belongs to no Conv2d/PReLU")
    return layers


def match_layers(source: list[SourceLayer], target: list[TargetLayer], fmt: str) -> dict[str, torch.Tensor]:
    """Pair file layers with module layers in order, check them and build the state_dict.

    Args:
        source: the file's layers in graph order.
        target: the module's layers in registration order (``target_layers``).
        fmt: the file format (``"tflite"``), for messages.

    Returns:
        ``{key: float32 tensor}`` covering every key of ``target``.

    Raises:
        ValueError: a layer missing on either side, or a kind, shape, stride or padding that
            differs; the message names the file's tensor and our key.
    """
    out: dict[str, torch.Tensor] = {}
    for i, (src, tgt) in enumerate(zip(source, target)):
        first = next(iter(src.tensors.values()))[0] if src.tensors else "?"
        if src.kind != tgt.kind:
            raise ValueError(
                f"layer {i}: {fmt} tensor {first!r} ({src.where}) is a {src.kind} but our "
                f"{tgt.keys['weight']!r} is a {tgt.kind}"
            )
        for role, shape in tgt.shapes.items():
            key = tgt.keys[role]
            if role not in src.tensors:
                raise ValueError(
                    f"layer {i}: {src.where} (tensor {first!r}) has no {role} tensor in the "
                    f"{fmt} file for our key {key!r} {list(shape)}"
                )
            name, arr = src.tensors[role]
            if tuple(arr.shape) != shape:
                raise ValueError(
                    f"layer {i}: {fmt} tensor {name!r} ({src.where}) has shape "
                    f"{list(arr.shape)} (torch layout) but our key {key!r} expects {list(shape)}"
                )
            out[key] = torch.tensor(arr, dtype=torch.float32)  # a contiguous copy
        extra = set(src.tensors) - set(tgt.shapes)
        if extra:
            name = src.tensors[sorted(extra)[0]][0]
            raise ValueError(
                f"layer {i}: {fmt} tensor {name!r} ({src.where}) has no place in our "
                f"{tgt.prefix!r} (no {sorted(extra)[0]})"
            )
        if src.stride is not None and src.stride != tgt.stride:
            raise ValueError(
                f"layer {i}: {fmt} tensor {first!r} ({src.where}) has stride {src.stride} but "
                f"our {tgt.keys['weight']!r} has stride {tgt.stride}"
            )
        if src.padding is not None and src.padding != tgt.padding:
            raise ValueError(
                f"layer {i}: {fmt} tensor {first!r} ({src.where}) pads (l, r, t, b) "
                f"{src.padding} but our {tgt.keys['weight']!r} pads {tgt.padding}"
            )
    if len(source) > len(target):
        src = source[len(target)]
        name = next(iter(src.tensors.values()))[0]
        raise ValueError(
            f"{fmt} tensor {name!r} ({src.where}) and {len(source) - len(target) - 1} more "
            f"layer(s) have no place in the module (it has {len(target)} weighted layers)"
        )
    if len(target) > len(source):
        tgt = target[len(source)]
        raise ValueError(
            f"no {fmt} tensor for our key {tgt.keys['weight']!r} and "
            f"{len(target) - len(source) - 1} more layer(s): the file has {len(source)} "
            "weighted layers"
        )
    return out


# --------------------------------------------------------------------------------------------
# TFLite
# --------------------------------------------------------------------------------------------

_PRELU_OPS = ("RELU", "ABS", "SUB", "MUL")
_PASSIVE_OPS = ("ADD", "RESHAPE")  # residual adds / final squeeze: no weights to map


class _TFLiteGraph:
    """Read-only view of subgraph 0 of a TFLite flatbuffer."""

    def __init__(self, path: Path) -> None:
        import tflite  # parser only: flatbuffer accessors, no interpreter

        self.tflite = tflite
        self.raw = path.read_bytes()
        self.model = tflite.Model.GetRootAsModel(self.raw, 0)
        if self.model.SubgraphsLength() != 1:
            raise ValueError(f"{path}: expected 1 subgraph, got {self.model.SubgraphsLength()}")
        self.g = self.model.Subgraphs(0)
        self.ops = [self.g.Operators(i) for i in range(self.g.OperatorsLength())]
        self.op_names = [self._op_name(op) for op in self.ops]
        self.producer: dict[int, int] = {}
        for k, op in enumerate(self.ops):
            for t in op.OutputsAsNumpy():
                self.producer[int(t)] = k

    def _op_name(self, op: object) -> str:
        code = self.model.OperatorCodes(op.OpcodeIndex())  # type: ignore[attr-defined]
        # Files from new converters use BuiltinCode; old ones only DeprecatedBuiltinCode.
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        return self.tflite.opcode2name(builtin)

    def inputs(self, k: int) -> list[int]:
        return [int(t) for t in self.ops[k].InputsAsNumpy()]

    def outputs(self, k: int) -> list[int]:
        return [int(t) for t in self.ops[k].OutputsAsNumpy()]

    def name(self, t: int) -> str:
        return self.g.Tensors(t).Name().decode()

    def shape(self, t: int) -> tuple[int, ...]:
        return tuple(int(d) for d in self.g.Tensors(t).ShapeAsNumpy())

    def is_const(self, t: int) -> bool:
        if t < 0:
            return False
        buf = self.model.Buffers(self.g.Tensors(t).Buffer())
        return buf.DataLength() > 0 or buf.Offset() > 1

    def array(self, t: int) -> np.ndarray:
        """A constant tensor as float32 numpy, in the file's layout."""
        tensor = self.g.Tensors(t)
        if tensor.Type() != self.tflite.TensorType.FLOAT32:
            raise ValueError(
                f"tflite tensor {self.name(t)!r} has type {tensor.Type()}, only float32 weights are supported"
            )
        buf = self.model.Buffers(tensor.Buffer())
        if buf.DataLength() > 0:
            data = buf.DataAsNumpy().tobytes()
        else:  # large models keep buffers outside the flatbuffer, addressed by offset
            data = self.raw[buf.Offset() : buf.Offset() + buf.Size()]
        return np.frombuffer(data, dtype="<f4").reshape(self.shape(t)).copy()

    def conv_options(self, k: int) -> tuple[int, int, int, int, int, int]:
        """(padding enum, stride h, stride w, dilation h, dilation w, fused activation)."""
        tfl = self.tflite
        opts = tfl.Conv2DOptions() if self.op_names[k] == "CONV_2D" else tfl.DepthwiseConv2DOptions()
        table = self.ops[k].BuiltinOptions()
        opts.Init(table.Bytes, table.Pos)
        return (
            opts.Padding(),
            opts.StrideH(),
            opts.StrideW(),
            opts.DilationHFactor(),
            opts.DilationWFactor(),
            opts.FusedActivationFunction(),
        )


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow SAME padding ``(before, after)`` along one axis (odd pixel after)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _tflite_conv(graph: _TFLiteGraph, k: int) -> SourceLayer:
    """A CONV_2D / DEPTHWISE_CONV_2D op as a ``SourceLayer`` in torch layout."""
    op = graph.op_names[k]
    x, w, *rest = graph.inputs(k)
    b = rest[0] if rest else -1
    pad_enum, sh, sw, dh, dw, act = graph.conv_options(k)
    where = f"op {k} {op}"
    wname = graph.name(w)
    if (dh, dw) != (1, 1):
        raise ValueError(f"tflite tensor {wname!r} ({where}): dilation {(dh, dw)} unsupported")
    if act != graph.tflite.ActivationFunctionType.NONE:
        raise ValueError(f"tflite tensor {wname!r} ({where}): fused activation {act} unsupported")
    if not graph.is_const(w):
        raise ValueError(f"tflite tensor {wname!r} ({where}): the filter is not a constant")

    weight = graph.array(w)
    if op == "CONV_2D":  # OHWI -> OIHW
        weight = weight.transpose(0, 3, 1, 2)
        kind: Kind = "conv"
    else:  # [1, H, W, C * mult] -> [C * mult, 1, H, W]
        if weight.shape[0] != 1:
            raise ValueError(f"tflite tensor {wname!r} ({where}): filter shape {weight.shape}")
        weight = weight.transpose(3, 0, 1, 2)
        kind = "depthwise"
    kh, kw = weight.shape[2:]
    _, ih, iw, _ = graph.shape(x)
    if pad_enum == graph.tflite.Padding.SAME:
        top, bottom = _same_padding(ih, kh, sh)
        left, right = _same_padding(iw, kw, sw)
    else:
        left = right = top = bottom = 0

    tensors = {"weight": (wname, weight)}
    if b >= 0:
        if not graph.is_const(b):
            raise ValueError(f"tflite tensor {graph.name(b)!r} ({where}): bias is not constant")
        tensors["bias"] = (graph.name(b), graph.array(b))
    return SourceLayer(kind, where, tensors, (sh, sw), (left, right, top, bottom))


def _tflite_prelu(graph: _TFLiteGraph, mul: int) -> tuple[SourceLayer, set[int]]:
    """The PReLU pattern ``ADD(RELU(x), MUL(c, SUB(x, ABS(x))))`` ending in MUL op ``mul``.

    Returns:
        the layer (``weight`` = alpha, float32 ``[C]``) and the op indices of the pattern.

    Raises:
        ValueError: the MUL is not part of such a pattern.
    """
    a, b = graph.inputs(mul)
    const, var = (a, b) if graph.is_const(a) else (b, a)
    where = f"op {mul} MUL"
    cname = graph.name(const)
    if not graph.is_const(const) or graph.is_const(var):
        raise ValueError(f"tflite MUL op {mul} has no single constant operand")
    sub = graph.producer.get(var)
    if sub is None or graph.op_names[sub] != "SUB":
        raise ValueError(f"tflite tensor {cname!r} ({where}): MUL is not fed by a SUB")
    p, q = graph.inputs(sub)
    abs_p, abs_q = graph.producer.get(p), graph.producer.get(q)
    if abs_q is not None and graph.op_names[abs_q] == "ABS" and graph.inputs(abs_q) == [p]:
        x, abs_op, sign = p, abs_q, 1.0  # c * (x - |x|) = 2c * min(x, 0)
    elif abs_p is not None and graph.op_names[abs_p] == "ABS" and graph.inputs(abs_p) == [q]:
        x, abs_op, sign = q, abs_p, -1.0  # c * (|x| - x) = -2c * min(x, 0)
    else:
        raise ValueError(f"tflite tensor {cname!r} ({where}): SUB is not x - |x| or |x| - x")

    # The MUL's output must be added to RELU(x).
    mul_out = graph.outputs(mul)[0]
    relu = add = None
    for k, name in enumerate(graph.op_names):
        if name == "RELU" and graph.inputs(k) == [x]:
            relu = k
        elif name == "ADD" and mul_out in graph.inputs(k):
            add = k
    if relu is None or add is None:
        raise ValueError(f"tflite tensor {cname!r} ({where}): no RELU(x) + MUL(...) around it")
    if sorted(graph.inputs(add)) != sorted([graph.outputs(relu)[0], mul_out]):
        raise ValueError(f"tflite tensor {cname!r} ({where}): ADD op {add} is not RELU + MUL")

    alpha = (2.0 * sign * graph.array(const)).astype(np.float32).reshape(-1)
    layer = SourceLayer("prelu", f"ops {relu}..{add} PReLU", {"weight": (cname, alpha)})
    return layer, {relu, abs_op, sub, mul, add}


def tflite_layers(path: str | Path) -> list[SourceLayer]:
    """The weighted layers of a float32 TFLite CNN in graph order, in torch layout.

    Supported ops: CONV_2D, DEPTHWISE_CONV_2D, the RELU/ABS/SUB/MUL/ADD PReLU pattern, and
    weightless ADD (residual) and RESHAPE. Anything else, or a constant tensor no layer uses,
    raises ``ValueError``.
    """
    graph = _TFLiteGraph(Path(path))
    layers: list[SourceLayer] = []
    in_prelu: set[int] = set()
    used: set[int] = set()
    for k, op in enumerate(graph.op_names):
        if op in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            layers.append(_tflite_conv(graph, k))
            used.update(t for t in graph.inputs(k)[1:] if t >= 0)
        elif op == "MUL":
            layer, ops = _tflite_prelu(graph, k)
            layers.append(layer)
            in_prelu |= ops
            used.update(t for t in graph.inputs(k) if graph.is_const(t))
        elif op == "RESHAPE":
            used.update(graph.inputs(k)[1:])  # the target shape, not a weight
        elif op not in _PRELU_OPS + _PASSIVE_OPS:
            raise ValueError(f"tflite op {k} {op} is not supported")
    for k, op in enumerate(graph.op_names):
        if op in _PRELU_OPS and k not in in_prelu:
            raise ValueError(f"tflite op {k} {op} is outside any PReLU pattern")
        for t in graph.inputs(k):
            if graph.is_const(t) and t not in used:
                raise ValueError(f"tflite tensor {graph.name(t)!r} (op {k} {op}) is not mapped")
    log.debug("%s: %d ops -> %d weighted layers", path, len(graph.ops), len(layers))
    return layers


def state_dict_from_tflite(path: str | Path, module: nn.Module) -> dict[str, torch.Tensor]:
    """Map a TFLite file's weights onto ``module``'s ``state_dict``.

    Args:
        path: a float32 ``.tflite`` file (e.g. sirius-ai ``MobileFaceNet.tflite``).
        module: the PyTorch module whose ``state_dict`` to fill (e.g. ``mobilefacenet_sirius()``),
            whose Conv2d/PReLU layers are registered in the graph's order.

    Returns:
        ``{key: float32 tensor}`` with exactly the module's keys and shapes, ready for
        ``module.load_state_dict(sd, strict=True)``.

    Raises:
        ValueError: a tensor missing on either side or with another shape, kind, stride or
            padding; the message names the tflite tensor and our key.
    """
    try:
        layers = tflite_layers(path)
    except (ValueError, FileNotFoundError):
        raise
    except Exception as e:  # struct.error, IndexError, ...: the flatbuffer reader on a damaged file
        raise ValueError(
            f"{path}: not a readable TFLite file ({type(e).__name__}: {e}); it is truncated or not a .tflite: "
            "fetch it again (python -m fetoolkit.fetch ...) or point model.weights at a good copy"
        ) from None
    sd = match_layers(layers, target_layers(module), "tflite")
    log.info("mapped %d tensors from %s onto %s", len(sd), path, type(module).__name__)
    return sd
