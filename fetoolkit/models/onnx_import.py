"""Load third-party weights files into our PyTorch modules.

Three entry points:

- ``load_pth_state_dict(path)``: a PyTorch checkpoint (``backbone.pth`` from arcface_torch, or
  a training checkpoint nesting it under ``"state_dict"``/``"model"``, DataParallel
  ``"module."`` prefixes stripped), loaded with ``weights_only=True``.
- ``state_dict_from_onnx(path, module)``: rebuild ``module``'s state_dict from an ONNX file of
  the same network. It is the one ONNX importer of the project, for every architecture:
  IResNet exports (arcface_torch ``torch2onnx.py``, insightface's ``w600k_r50.onnx``/
  ``glintr100.onnx``, the torch.export-based exporter), the faceplugin MobileFaceNet
  ``fr_feature.onnx`` (BatchNorm folded into biased convs, depthwise convs, PReLU), and our
  own exports (``fetoolkit.backends.export``: zero ``Pad`` before a Conv, PReLU written as
  ``a * y + (1 - a) * relu(y)``).
- ``check_state_dict`` / ``load_weights_file``: strict loading with errors that name keys,
  and dispatch by file suffix.

How ONNX tensors are matched
----------------------------
Never by name: exporters rename (``onnx::Conv_1234``), fold BatchNorm into the previous
Conv/Gemm while keeping the *unfolded* name (the torch.export-based exporter writes the folded
kernel as ``0.weight``), and de-duplicate equal tensors behind ``Identity`` nodes. Instead:

1. The graph is ordered canonically: a post-order depth-first walk from the graph outputs,
   visiting each node's inputs left to right. For IResNet this is the forward order, with a
   block's residual branch (``Add`` input 0) before its shortcut (``Add`` input 1), which is
   also the module's registration (= ``state_dict``) order.
2. The weight-bearing nodes are collected in that order: ``Conv``, ``BatchNormalization``,
   ``PRelu``, ``Gemm`` and ``MatMul`` (+ the ``Add`` of its bias). Their constant inputs are
   resolved through initializers, ``Constant`` nodes and constant-only
   ``Identity``/``Unsqueeze``/``Squeeze``/``Reshape``/``Flatten``/``Cast`` nodes.
3. Our module's leaf layers with tensors (``Conv2d``, ``BatchNorm1d/2d``, ``PReLU``,
   ``Linear``) are walked in registration order and paired one by one with those nodes;
   every tensor's shape and every Conv's stride/padding/dilation/groups is checked. Any
   missing, extra or misshapen tensor raises ``ValueError`` naming the ONNX tensor (with its
   node) and our state_dict key.

Constant subgraphs (the ``ConstantOfShape``/``Concat``/``Slice`` chain torch writes for the
pads of ``nn.ZeroPad2d``) are evaluated with ``onnx.reference``. A zero ``Pad`` node feeding a
Conv counts as that Conv's padding, and our side adds an ``nn.ZeroPad2d`` registered right
before a ``Conv2d`` to the conv's own padding, so TensorFlow-style asymmetric "SAME" padding
(the sirius MobileFaceNet) is checked like any other. ``Add(Mul(y, a), Mul(Relu(y), b))`` with
``a + b = 1`` per channel is read as a PReLU with slope ``a``.

Folded BatchNorm
----------------
When our module has ``Conv2d``/``Linear`` followed by a BatchNorm but the graph's Conv/Gemm
output does not feed a ``BatchNormalization`` node, the exporter folded the BN into it
(``W' = W * g / sqrt(v + e)``, ``b' = beta + (b - m) * g / sqrt(v + e)``). The folded pair is
mapped back exactly as::

    layer.weight = W'
    layer.bias   = b'          (Linear/Conv with a bias; the BN then gets bias 0)
    bn.weight = 1, bn.bias = b' (Conv without a bias, e.g. every IResNet conv), or 0
    bn.running_mean = 0
    bn.running_var  = 1 - bn.eps, rounded so that float32((1 - eps) + eps) == 1.0

so that in eval mode ``bn(x) = (x - 0) / sqrt(1) * 1 + bias = x + bias`` with no rounding.
The original per-layer split of scale between conv and BN cannot be recovered (and need not
be: eval-mode outputs are identical). Training from such weights starts from a BN whose
running statistics are the identity; fine-tune with care.

BatchNorm epsilon
-----------------
An unfolded ``BatchNormalization`` whose ``epsilon`` differs from our BN's ``eps`` (MXNet
models use 2e-5, ours 1e-5) is mapped exactly by ``running_var += onnx_eps - our_eps``.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from fetoolkit.backends.onnx_graph import NEVER_FOLD, input_channel_slices

logger = logging.getLogger(__name__)

__all__ = [
    "state_dict_from_onnx",
    "load_pth_state_dict",
    "check_state_dict",
    "load_weights_file",
]

_WEIGHT_OPS = ("Conv", "BatchNormalization", "PRelu", "Gemm", "MatMul")
# Ops that may turn constants into constants (folded on the fly by ``_Graph.const``).
_CONST_OPS = ("Identity", "Unsqueeze", "Squeeze", "Reshape", "Flatten", "Cast", "Constant")
# Constant subgraphs larger than this are not folded (shape arithmetic is tiny).
_FOLD_MAX_ELEMENTS = 1 << 16
# Input preprocessing that MXNet-converted graphs carry before the first Conv.
_PREPROC_OPS = ("Sub", "Mul", "Div", "Add", "Transpose")


# ----------------------------------------------------------------------------------------
# .pth checkpoints
# ----------------------------------------------------------------------------------------


def load_pth_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a PyTorch checkpoint into a flat ``{key: tensor}`` state_dict on the CPU.

    Accepts a plain state_dict (arcface_torch's ``backbone.pth``) or a dict nesting it under
    ``"state_dict"`` or ``"model"``; strips a DataParallel/DDP ``"module."`` prefix. Loads
    with ``torch.load(..., map_location="cpu", weights_only=True)``: no pickled code runs.

    Args:
        path: the checkpoint file.

    Returns:
        ``{key: tensor}`` with the tensors' own dtypes (arcface_torch "fp16" checkpoints hold
        float32 master weights; ``load_state_dict`` casts to the module's dtype anyway).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not a PyTorch checkpoint, holds a pickled module/object that
            ``weights_only`` refuses, or holds no ``{str: tensor}`` mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        why = next((ln.strip() for ln in str(e).splitlines() if "Unsupported global" in ln), "")
        raise ValueError(
            f"{str(path)!r} is not a plain PyTorch state_dict checkpoint: it pickles more than tensors, which "
            f"fetoolkit never unpickles (weights_only=True){': ' + why if why else ''}. Re-save it where it was "
            "made with torch.save(model.state_dict(), path)"
        ) from None
    except Exception as e:  # torch.load raises RuntimeError/EOFError/IndexError/... on junk
        raise ValueError(f"{str(path)!r} is not a PyTorch checkpoint: {e}") from e

    state = _unnest_state_dict(obj, path)
    return _strip_prefix(state, "module.")


def _unnest_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """Find the ``{str: tensor}`` mapping in a loaded checkpoint object."""
    if not isinstance(obj, Mapping):
        raise ValueError(f"{str(path)!r} holds a {type(obj).__name__}, not a state_dict (a dict of tensors)")
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return {str(k): v for k, v in obj.items()}
    for key in ("state_dict", "model"):
        inner = obj.get(key)
        if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
            logger.info("%s: using the state_dict nested under %r", path, key)
            return {str(k): v for k, v in inner.items()}
    bad = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor)][:5]
    raise ValueError(
        f"{str(path)!r} is not a state_dict: it has non-tensor entries {bad} and no "
        f"'state_dict'/'model' entry holding tensors"
    )


def _strip_prefix(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Remove ``prefix`` from every key that has it; refuse if that makes two keys equal."""
    if not any(k.startswith(prefix) for k in state):
        return state
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        new = key[len(prefix) :] if key.startswith(prefix) else key
        if new in out:
            raise ValueError(f"stripping {prefix!r} makes key {new!r} appear twice")
        out[new] = value
    logger.info("stripped the %r prefix from the checkpoint keys", prefix)
    return out


def check_state_dict(module: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Raise ``ValueError`` unless ``state`` has exactly ``module``'s keys and shapes.

    The message lists (up to 10 of each) missing keys, unexpected keys and
    ``key: checkpoint shape vs module shape`` mismatches.
    """
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    misshapen = [
        f"{k}: checkpoint {list(state[k].shape)} vs module {list(expected[k].shape)}"
        for k in expected
        if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or misshapen:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:10]}" + (" ..." if len(missing) > 10 else ""))
        if unexpected:
            parts.append(f"unexpected keys {unexpected[:10]}" + (" ..." if len(unexpected) > 10 else ""))
        if misshapen:
            parts.append(f"shape mismatches {misshapen[:10]}" + (" ..." if len(misshapen) > 10 else ""))
        raise ValueError(f"state_dict does not fit {type(module).__name__}: " + "; ".join(parts))


def load_weights_file(module: nn.Module, path: str | Path) -> nn.Module:
    """Load a weights file into ``module`` strictly, choosing the reader by suffix.

    ``.onnx`` -> ``state_dict_from_onnx``; ``.pth``/``.pt``/``.bin``/``.ckpt`` ->
    ``load_pth_state_dict``; ``.safetensors`` -> ``safetensors.torch.load_file``.

    Returns:
        ``module`` itself, weights loaded, put in eval mode.

    Raises:
        ValueError: unknown suffix, unreadable file, or keys/shapes that do not fit.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        state = state_dict_from_onnx(path, module)
    elif suffix in (".pth", ".pt", ".bin", ".ckpt"):
        state = load_pth_state_dict(path)
    elif suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = _strip_prefix(dict(load_file(str(path), device="cpu")), "module.")
        except Exception as e:  # SafetensorError, OSError: truncated or not a safetensors file
            raise ValueError(f"{str(path)!r} is not a readable safetensors file ({type(e).__name__}: {e})") from None
    else:
        raise ValueError(
            f"don't know how to read weights from {str(path)!r}: expected .tflite, .onnx, .pth/.pt/.bin/.ckpt "
            "or .safetensors"
        )
    check_state_dict(module, state)
    module.load_state_dict(state, strict=True)
    return module.eval()


# ----------------------------------------------------------------------------------------
# ONNX graph reading
# ----------------------------------------------------------------------------------------


@dataclass
class _Tensor:
    """A constant ONNX node input: what it is called, where it came from, its value."""

    name: str  # the node input's name
    origin: str  # the initializer / Constant it resolves to (differs behind Identity etc.)
    value: np.ndarray

    def describe(self) -> str:
        return repr(self.name) if self.origin == self.name else f"{self.name!r} (= {self.origin!r})"


@dataclass
class _Op:
    """One weight-bearing ONNX node with its constant inputs by role."""

    kind: str  # "conv" | "bn" | "prelu" | "linear"
    node: Any  # onnx.NodeProto
    tensors: dict[str, _Tensor]
    output: str
    attrs: dict[str, Any] = field(default_factory=dict)

    def first(self) -> _Tensor:
        return next(iter(self.tensors.values()))

    def where(self, role: str | None = None) -> str:
        t = self.tensors[role] if role else self.first()
        return f"ONNX tensor {t.describe()} of {self.node.op_type} node {self.node.name!r}"


class _Graph:
    """Constant resolution and canonical node order for one ONNX graph."""

    def __init__(self, graph: Any, opset: int = 13) -> None:
        from onnx import numpy_helper

        from fetoolkit.backends.onnx_graph import graph_maps

        self._numpy_helper = numpy_helper
        self.graph = graph
        self.opset = int(opset)
        self.initializers = {init.name: init for init in graph.initializer}
        self.producer, self.consumers = graph_maps(graph.node)
        # Tensors that depend on a graph input (ONNX lists nodes in topological order), so
        # constant resolution never walks the whole network.
        self.dynamic: set[str] = {i.name for i in graph.input if i.name not in self.initializers}
        for node in graph.node:
            if node.op_type in NEVER_FOLD or any(i in self.dynamic for i in node.input if i):
                self.dynamic.update(node.output)
        self._cache: dict[str, tuple[str, np.ndarray] | None] = {}

    def const(self, name: str) -> _Tensor | None:
        """The constant value of tensor ``name``, or ``None`` if it depends on the input."""
        hit = self._resolve(name)
        return None if hit is None else _Tensor(name=name, origin=hit[0], value=hit[1])

    def _resolve(self, name: str) -> tuple[str, np.ndarray] | None:
        if name in self._cache:
            return self._cache[name]
        if name in self.dynamic:
            return None
        self._cache[name] = None  # guards cycles (there are none in valid graphs)
        result: tuple[str, np.ndarray] | None = None
        if name in self.initializers:
            result = (name, self._numpy_helper.to_array(self.initializers[name]))
        elif name in self.producer:
            result = self._fold(self.producer[name])
        self._cache[name] = result
        return result

    def _fold(self, node: Any) -> tuple[str, np.ndarray] | None:
        """Evaluate a constant-only node.

        The ``_CONST_OPS`` kinds keep the origin (the initializer behind them) so that messages
        name the file's tensor; any other deterministic node whose inputs are all constant (the
        ``ConstantOfShape``/``Concat``/``Slice``/``Transpose`` chain torch writes for the pads
        of ``F.pad``, say) is evaluated with ``onnx.reference`` and is its own origin.
        """
        from onnx import helper

        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Constant":
            if "value" not in attrs:
                return None
            return (node.output[0], self._numpy_helper.to_array(attrs["value"]))
        if node.op_type not in _CONST_OPS:
            return self._fold_generic(node)
        if not node.input:
            return None
        src = self._resolve(node.input[0])
        if src is None:
            return None
        origin, x = src
        extra = [self._resolve(i) if i else None for i in node.input[1:]]
        if node.op_type == "Identity":
            return origin, x
        if node.op_type == "Cast":
            return origin, x  # dtype is fixed later, to the module's
        if node.op_type == "Unsqueeze":
            axes = attrs.get("axes")
            if axes is None and extra and extra[0] is not None:
                axes = extra[0][1].tolist()
            if axes is None:
                return None
            out_rank = x.ndim + len(axes)
            for ax in sorted(a % out_rank for a in axes):
                x = np.expand_dims(x, ax)
            return origin, x
        if node.op_type == "Squeeze":
            axes = attrs.get("axes")
            if axes is None and extra and extra[0] is not None:
                axes = extra[0][1].tolist()
            return origin, (np.squeeze(x) if axes is None else np.squeeze(x, tuple(axes)))
        if node.op_type == "Reshape":
            if not extra or extra[0] is None:
                return None
            shape = [int(s) for s in extra[0][1].tolist()]
            shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
            return origin, x.reshape(shape)
        if node.op_type == "Flatten":
            axis = int(attrs.get("axis", 1)) % max(x.ndim, 1)
            return origin, x.reshape(int(np.prod(x.shape[:axis])), -1)
        return None

    def _fold_generic(self, node: Any) -> tuple[str, np.ndarray] | None:
        """``onnx.reference`` evaluation of a node whose inputs are all (small) constants."""
        if node.op_type in NEVER_FOLD or node.domain not in ("", "ai.onnx") or len(node.output) != 1:
            return None
        if not node.input and node.op_type != "ConstantOfShape":
            return None
        values: dict[str, np.ndarray] = {}
        for name in node.input:
            if not name:
                continue
            hit = self._resolve(name)
            if hit is None or hit[1].size > _FOLD_MAX_ELEMENTS:
                return None
            values[name] = hit[1]
        from onnx import helper
        from onnx.reference import ReferenceEvaluator

        inputs = [
            helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), None) for n, v in values.items()
        ]
        outputs = [helper.make_tensor_value_info(node.output[0], 0, None)]
        graph = helper.make_graph([node], "fold", inputs, outputs)
        try:
            (out,) = ReferenceEvaluator(graph, opsets={"": self.opset}).run(None, values)
        except Exception as e:  # an op the reference runtime lacks: leave it to the caller
            logger.debug("cannot fold %s node %r: %s", node.op_type, node.name, e)
            return None
        # Name the largest constant behind it (``1 - slope`` is "the slope's" tensor).
        sources = [self._resolve(n) for n in node.input if n]
        big = max((h for h in sources if h is not None), key=lambda h: h[1].size, default=None)
        origin = big[0] if big is not None and big[0] in self.initializers else node.output[0]
        return origin, np.asarray(out)

    def ordered_nodes(self) -> list[Any]:
        """Nodes reachable from the graph outputs, post-order DFS, inputs left to right."""
        order: list[Any] = []
        seen: set[int] = set()
        for out in self.graph.output:
            root = self.producer.get(out.name)
            if root is None or id(root) in seen:
                continue
            stack: list[tuple[Any, int]] = [(root, 0)]
            seen.add(id(root))
            while stack:
                node, i = stack.pop()
                if i < len(node.input):
                    stack.append((node, i + 1))
                    parent = self.producer.get(node.input[i]) if node.input[i] else None
                    if parent is not None and id(parent) not in seen:
                        seen.add(id(parent))
                        stack.append((parent, 0))
                else:
                    order.append(node)
        return order


def _attrs(node: Any) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _collect_ops(g: _Graph, path: Path) -> tuple[list[_Op], set[str]]:
    """Weight-bearing ops in canonical order, and the names of the constants they used."""
    ops: list[_Op] = []
    used: set[str] = set()
    consumed_adds: set[int] = set()
    order = g.ordered_nodes()
    first_conv = next((i for i, n in enumerate(order) if n.op_type == "Conv"), None)
    if first_conv:
        pre = [
            n.op_type
            for n in order[:first_conv]
            if n.op_type in _PREPROC_OPS
            and n.output[0] in g.dynamic
            and any(g.const(i) is not None for i in n.input if i)
        ]
        if pre:
            logger.warning(
                "%s normalises its input inside the graph (%s before the first Conv); the "
                "imported module leaves those ops out: feed it the tensor they would produce",
                path,
                ", ".join(pre),
            )

    def need(node: Any, index: int, role: str) -> _Tensor:
        if index >= len(node.input) or not node.input[index]:
            raise ValueError(f"{node.op_type} node {node.name!r} in {path} has no {role} input")
        t = g.const(node.input[index])
        if t is None:
            raise ValueError(
                f"{role} input {node.input[index]!r} of {node.op_type} node {node.name!r} in "
                f"{path} is computed at run time, not a constant: cannot import it"
            )
        used.add(t.origin)
        return t

    prelus, prelu_parts = _decomposed_prelus(g)
    split, split_parts, signs = _split_prelus(g)
    prelus.update(split)
    prelu_parts |= split_parts
    for index, node in enumerate(order):
        if id(node) in prelu_parts:
            continue
        if id(node) in prelus:
            slope, other = prelus[id(node)]
            used.update((slope.origin, other.origin))
            ops.append(_Op("prelu", node, {"weight": slope}, node.output[0]))
            continue
        if node.output and g.const(node.output[0]) is not None:
            continue
        if node.op_type == "Transpose" and first_conv is not None and index > first_conv:
            # A layout change inside the network (e.g. NHWC flatten before the fc) would
            # silently permute the fc weight's columns.
            raise ValueError(
                f"Transpose node {node.name!r} in {path} changes the layout inside the "
                f"network; only NCHW graphs (as torch exports them) can be imported"
            )
        if node.op_type == "Conv":
            tensors = {"weight": need(node, 1, "weight")}
            if node.input[0] in signs:  # a split PReLU's sign folded into this Conv's input channels
                tensors["weight"] = _unfold_sign(tensors["weight"], signs[node.input[0]], node, path)
            if len(node.input) > 2 and node.input[2]:
                tensors["bias"] = need(node, 2, "bias")
            attrs = _attrs(node)
            pad_node = g.producer.get(node.input[0])
            if pad_node is not None and pad_node.op_type == "Pad":
                attrs["pre_pads"] = _zero_pad_hw(g, pad_node, path, used)
            ops.append(_Op("conv", node, tensors, node.output[0], attrs))
        elif node.op_type == "BatchNormalization":
            tensors = {
                role: need(node, i, role) for i, role in enumerate(("weight", "bias", "running_mean", "running_var"), 1)
            }
            attrs = _attrs(node)
            if int(attrs.get("training_mode", 0)) != 0 or any(node.output[1:]):
                raise ValueError(f"BatchNormalization node {node.name!r} in {path} is in training mode")
            if int(attrs.get("spatial", 1)) != 1:
                raise ValueError(
                    f"BatchNormalization node {node.name!r} in {path} has spatial=0 "
                    f"(per-pixel statistics): not a BatchNorm2d/1d"
                )
            ops.append(_Op("bn", node, tensors, node.output[0], attrs))
        elif node.op_type == "PRelu":
            ops.append(_Op("prelu", node, {"weight": need(node, 1, "slope")}, node.output[0]))
        elif node.op_type == "Gemm":
            attrs = _attrs(node)
            if int(attrs.get("transA", 0)) != 0:
                raise ValueError(f"Gemm node {node.name!r} in {path} has transA=1: not a Linear")
            b = need(node, 1, "B")
            alpha = float(attrs.get("alpha", 1.0))
            w = b.value if int(attrs.get("transB", 0)) else b.value.T
            tensors = {"weight": _Tensor(b.name, b.origin, np.ascontiguousarray(w) * alpha)}
            if len(node.input) > 2 and node.input[2]:
                c = need(node, 2, "C")
                beta = float(attrs.get("beta", 1.0))
                tensors["bias"] = _Tensor(c.name, c.origin, c.value.reshape(-1) * beta)
            ops.append(_Op("linear", node, tensors, node.output[0], attrs))
        elif node.op_type == "MatMul":
            w = need(node, 1, "weight")
            tensors = {"weight": _Tensor(w.name, w.origin, np.ascontiguousarray(w.value.T))}
            output = node.output[0]
            adds = [n for n in g.consumers.get(output, []) if n.op_type == "Add"]
            if len(g.consumers.get(output, [])) == 1 and len(adds) == 1:
                add = adds[0]
                other = [i for i in add.input if i != output]
                c = g.const(other[0]) if len(other) == 1 else None
                if c is not None:
                    used.add(c.origin)
                    tensors["bias"] = _Tensor(c.name, c.origin, c.value.reshape(-1))
                    output = add.output[0]
                    consumed_adds.add(id(add))
            ops.append(_Op("linear", node, tensors, output))
        elif node.op_type in ("Sub", "Mul", "Div", "Add") and id(node) not in consumed_adds:
            for inp in node.input:
                c = g.const(inp) if inp else None
                if c is not None and c.value.size > 3:
                    raise ValueError(
                        f"{node.op_type} node {node.name!r} in {path} applies constant "
                        f"{c.describe()} of shape {list(c.value.shape)}: an op with weights "
                        f"that IResNet does not have (a decomposed BatchNorm?)"
                    )
                if c is not None:
                    used.add(c.origin)
    return ops, used


def _zero_pad_hw(g: _Graph, node: Any, path: Path, used: set[str]) -> list[int]:
    """The spatial pads ``[top, left, bottom, right]`` of a zero ``Pad`` node before a Conv.

    ``nn.ZeroPad2d`` exports as ``Pad`` (constant mode, value 0, pads on H and W only); any
    other padding cannot be a conv's zero padding and raises ``ValueError``.
    """
    from fetoolkit.backends.onnx_graph import pad_attributes, zero_pads_hw

    mode, pads, value = pad_attributes(node)
    if pads is None:  # opset >= 11: pads, value and axes are inputs
        pads_t = g.const(node.input[1]) if len(node.input) > 1 and node.input[1] else None
        if pads_t is None:
            raise ValueError(f"Pad node {node.name!r} in {path} has pads computed at run time")
        pads = [int(p) for p in pads_t.value.reshape(-1)]
        value_t = g.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        value = 0.0 if value_t is None else float(value_t.value.reshape(-1)[0])
        used.update(t.origin for t in (pads_t, value_t) if t is not None)
        if len(node.input) > 3 and node.input[3]:
            axes_t = g.const(node.input[3])
            if axes_t is None:
                raise ValueError(f"Pad node {node.name!r} in {path} has axes computed at run time")
            full = [0] * 8
            for k, ax in enumerate(int(a) % 4 for a in axes_t.value.reshape(-1)):
                full[ax], full[4 + ax] = pads[k], pads[len(pads) // 2 + k]
            pads = full
    hw = zero_pads_hw(mode, pads, value)
    if hw is None:
        raise ValueError(
            f"Pad node {node.name!r} in {path} (mode {mode}, value {value}, pads {pads}) is not a "
            f"zero padding of H and W before a Conv"
        )
    return hw


def _decomposed_prelus(g: _Graph) -> tuple[dict[int, tuple[_Tensor, _Tensor]], set[int]]:
    """PReLUs written as ``Add(Mul(y, a), Mul(Relu(y), b))`` with ``a + b == 1`` per channel.

    ``prelu(y) = a * y + (1 - a) * relu(y)``; ``fetoolkit.backends.export`` writes PReLU this
    way because onnxruntime runs it about twice as fast as a ``PRelu`` node. Returns
    ``{id(Add node): (slope tensor a, tensor b)}`` and the ids of the Mul/Relu nodes the
    pattern absorbs.
    """
    found: dict[int, tuple[_Tensor, _Tensor]] = {}
    parts: set[int] = set()

    def mul_split(name: str) -> tuple[Any, str, _Tensor] | None:
        node = g.producer.get(name)
        if node is None or node.op_type != "Mul" or len(node.input) != 2:
            return None
        for k in (0, 1):
            c = g.const(node.input[k])
            if c is not None and g.const(node.input[1 - k]) is None:
                return node, node.input[1 - k], c
        return None

    for add in g.graph.node:
        if add.op_type != "Add" or len(add.input) != 2:
            continue
        sides = [mul_split(i) for i in add.input]
        if any(s is None for s in sides):
            continue
        for lin, rel in (sides, sides[::-1]):
            assert lin is not None and rel is not None
            relu = g.producer.get(rel[1])
            if relu is None or relu.op_type != "Relu" or relu.input[0] != lin[1]:
                continue
            a, b = lin[2].value.astype(np.float64), rel[2].value.astype(np.float64)
            if (
                a.shape != b.shape
                or a.size < 1
                or not np.allclose(a + b, 1.0, rtol=0, atol=1e-5 * (1 + np.abs(a).max()))
            ):
                continue
            if any(len(g.consumers.get(n.output[0], [])) != 1 for n in (lin[0], rel[0], relu)):
                continue
            found[id(add)] = (lin[2], rel[2])
            parts.update((id(lin[0]), id(rel[0]), id(relu)))
            break
    return found, parts


def _split_prelus(g: _Graph) -> tuple[dict[int, tuple[_Tensor, _Tensor]], set[int], dict[str, np.ndarray]]:
    """PReLUs in the export's split form: ``Add(Conv1x1dw(y, s*a), Relu(Conv1x1dw(y, s*(1-a))))``.

    ``fetoolkit.backends.quantize.split_prelus`` writes them; ``s = -1`` on the channels with
    ``a > 1`` (where ``1 - a < 0``), and the Convs reading the result have those input channels
    negated. Per channel the two weights tell ``s`` apart: ``s = 1`` gives ``|1 - l| = r`` and
    ``s = -1`` gives ``|1 + l| = r`` for lin weight ``l`` and relu weight ``r``; both hold only at
    ``l = 0``, where ``s = 1``. Returns ``{id(Add): (slope a, 1 - a)}``, the ids of the absorbed
    nodes, and ``{tensor: s}`` for the results whose readers carry a folded sign.
    """
    found: dict[int, tuple[_Tensor, _Tensor]] = {}
    parts: set[int] = set()
    signs: dict[str, np.ndarray] = {}

    def dw_weight(node: Any) -> np.ndarray | None:
        if node is None or node.op_type != "Conv" or len(node.input) != 2:
            return None
        w = g.const(node.input[1])
        attrs = _attrs(node)
        if w is None or w.value.ndim != 4 or w.value.shape[1:] != (1, 1, 1):
            return None
        if int(attrs.get("group", 1)) != w.value.shape[0] or any(int(p) for p in attrs.get("pads", [])):
            return None
        if any(int(s) != 1 for s in attrs.get("strides", [])) or any(int(d) != 1 for d in attrs.get("dilations", [])):
            return None
        return w.value.reshape(-1).astype(np.float64)

    for add in g.graph.node:
        if add.op_type != "Add" or len(add.input) != 2:
            continue
        for lin_name, relu_name in (add.input, add.input[::-1]):
            lin, relu = g.producer.get(lin_name), g.producer.get(relu_name)
            if relu is None or relu.op_type != "Relu":
                continue
            pre = g.producer.get(relu.input[0])
            l_w, r_w = dw_weight(lin), dw_weight(pre)
            if l_w is None or r_w is None or l_w.shape != r_w.shape or lin.input[0] != pre.input[0]:
                continue
            if (r_w < 0).any() or any(len(g.consumers.get(n.output[0], [])) != 1 for n in (lin, pre, relu)):
                continue
            tol = 1e-5 * (1 + np.abs(l_w).max())
            plus, minus = np.abs(np.abs(1 - l_w) - r_w) <= tol, np.abs(np.abs(1 + l_w) - r_w) <= tol
            if not (plus | minus).all():
                continue
            s = np.where(plus, 1.0, -1.0)
            a = (s * l_w).astype(np.float32)
            shape = (1, len(a), 1, 1)
            l_t, r_t = g.const(lin.input[1]), g.const(pre.input[1])
            assert l_t is not None and r_t is not None
            found[id(add)] = (
                _Tensor(l_t.name, l_t.origin, a.reshape(shape)),
                _Tensor(r_t.name, r_t.origin, (1 - a.astype(np.float64)).astype(np.float32)),
            )
            parts.update((id(lin), id(pre), id(relu)))
            if (s < 0).any():
                signs[add.output[0]] = s
            break
    return found, parts, signs


def _unfold_sign(weight: _Tensor, sign: np.ndarray, node: Any, path: Any) -> _Tensor:
    """``weight`` ``[M, C/G, kh, kw]`` with input channel ``c`` multiplied by ``sign[c]``."""
    where = input_channel_slices(node, weight.value, len(sign))
    if where is None:
        raise ValueError(
            f"Conv node {node.name!r} in {path} reads a split PReLU of {len(sign)} channels, "
            f"which its weight {list(weight.value.shape)} cannot take"
        )
    out = weight.value.astype(np.float64)
    for c in np.flatnonzero(sign < 0):
        rows, col = where[c]
        out[rows, col] *= -1.0
    return _Tensor(weight.name, weight.origin, out.astype(weight.value.dtype))


# ----------------------------------------------------------------------------------------
# Module side
# ----------------------------------------------------------------------------------------


@dataclass
class _Slot:
    """One leaf layer of our module with tensors."""

    prefix: str  # "layer1.0.conv1." ("" for a root-level layer)
    module: nn.Module
    kind: str  # "conv" | "bn" | "prelu" | "linear"
    pre_pad: tuple[int, int, int, int] = (0, 0, 0, 0)  # a ZeroPad2d right before a conv (l, r, t, b)

    def key(self, name: str = "weight") -> str:
        return f"{self.prefix}{name}"


def _module_slots(module: nn.Module) -> list[_Slot]:
    slots: list[_Slot] = []
    pending_pad = (0, 0, 0, 0)
    for name, sub in module.named_modules():
        if isinstance(sub, nn.ZeroPad2d):
            pending_pad = tuple(int(p) for p in sub.padding)  # (left, right, top, bottom)
            continue
        own = list(sub.named_parameters(recurse=False)) + list(sub.named_buffers(recurse=False))
        if not own:
            continue
        prefix = f"{name}." if name else ""
        if isinstance(sub, nn.Conv2d):
            kind = "conv"
        elif isinstance(sub, nn.modules.batchnorm._BatchNorm):
            kind = "bn"
        elif isinstance(sub, nn.PReLU):
            kind = "prelu"
        elif isinstance(sub, nn.Linear):
            kind = "linear"
        else:
            raise ValueError(
                f"state_dict_from_onnx cannot map {type(sub).__name__} at {prefix!r}: only "
                f"Conv2d, BatchNorm1d/2d, PReLU and Linear layers are supported"
            )
        if kind == "conv":
            slots.append(_Slot(prefix, sub, kind, pending_pad))  # type: ignore[arg-type]
            pending_pad = (0, 0, 0, 0)
        else:
            slots.append(_Slot(prefix, sub, kind))
    return slots


_KIND_NAMES = {
    "conv": "Conv",
    "bn": "BatchNormalization",
    "prelu": "PRelu",
    "linear": "Gemm/MatMul",
}


def _identity_var(eps: float, dtype: torch.dtype) -> torch.Tensor:
    """A scalar ``v`` with ``v + eps == 1`` exactly in ``dtype`` (so ``rsqrt(v + eps) == 1``)."""
    e = torch.tensor(eps, dtype=dtype)
    v = torch.tensor(1.0, dtype=dtype) - e
    one = torch.tensor(1.0, dtype=dtype)
    for _ in range(4):
        if v + e == one:
            break
        v = torch.nextafter(v, one if v + e < one else -one)
    return v


class _Mapper:
    """Pairs ``_Op``s with ``_Slot``s and writes the state_dict."""

    def __init__(self, module: nn.Module, path: Path) -> None:
        self.module = module
        self.path = path
        self.reference = module.state_dict()
        self.out: dict[str, torch.Tensor] = {}
        self.eps_shifted = 0  # BatchNorms whose ONNX epsilon differs from ours
        self.folded = 0  # BatchNorms found folded into the previous Conv/Gemm

    def put(self, key: str, value: np.ndarray | torch.Tensor, source: str) -> None:
        ref = self.reference[key]
        if isinstance(value, np.ndarray):
            t = torch.from_numpy(np.array(value, copy=True))
        else:
            t = value
        if tuple(t.shape) != tuple(ref.shape):
            raise ValueError(
                f"{source} has shape {list(t.shape)}, but our {key!r} has shape {list(ref.shape)} (in {self.path})"
            )
        self.out[key] = t.to(dtype=ref.dtype).clone()

    def put_tracked(self, slot: _Slot) -> None:
        key = slot.key("num_batches_tracked")
        if key in self.reference:
            self.out[key] = torch.zeros_like(self.reference[key])

    # -- one handler per kind ---------------------------------------------------------

    def conv(self, slot: _Slot, op: _Op) -> None:
        conv: nn.Conv2d = slot.module  # type: ignore[assignment]
        attrs = op.attrs
        if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            raise ValueError(f"{op.where()} uses auto_pad; only explicit pads are supported")
        w = op.tensors["weight"].value
        self.put(slot.key("weight"), w, op.where("weight"))
        k = tuple(conv.kernel_size)
        if isinstance(conv.padding, str):
            raise ValueError(f"our {slot.key()!r} uses padding={conv.padding!r}; only explicit padding is supported")
        ph, pw = conv.padding  # type: ignore[misc]
        left, right, top, bottom = slot.pre_pad
        # ONNX order: [H begin, W begin, H end, W end]; a Pad node before the Conv adds up.
        pre = list(attrs.get("pre_pads", [0, 0, 0, 0]))
        want = {
            "strides": list(conv.stride),
            "pads": [top + ph, left + pw, bottom + ph, right + pw],
            "dilations": list(conv.dilation),
            "group": conv.groups,
        }
        got = {
            "strides": list(attrs.get("strides", [1] * len(k))),
            "pads": [int(a) + int(b) for a, b in zip(attrs.get("pads", [0] * 2 * len(k)), pre)],
            "dilations": list(attrs.get("dilations", [1] * len(k))),
            "group": int(attrs.get("group", 1)),
        }
        for name in want:
            if want[name] != got[name]:
                raise ValueError(
                    f"{op.where()} has {name}={got[name]}, but our {slot.key()!r} has "
                    f"{name}={want[name]} (in {self.path})"
                )

    def bn(self, slot: _Slot, op: _Op) -> None:
        bn: nn.modules.batchnorm._BatchNorm = slot.module  # type: ignore[assignment]
        onnx_eps = float(op.attrs.get("epsilon", 1e-5))
        for role in ("weight", "bias", "running_mean"):
            self.put(slot.key(role), op.tensors[role].value, op.where(role))
        var = op.tensors["running_var"].value.astype(np.float64)
        if abs(onnx_eps - bn.eps) > 1e-12:
            # Same denominator: sqrt(var' + eps_ours) == sqrt(var + eps_onnx).
            var = var + onnx_eps - bn.eps
            self.eps_shifted += 1
            logger.debug(
                "%s: epsilon %.3g -> our %s eps %.3g, running_var shifted by %.3g",
                op.where(),
                onnx_eps,
                slot.prefix.rstrip("."),
                bn.eps,
                onnx_eps - bn.eps,
            )
            if (var < 0).any():
                raise ValueError(
                    f"{op.where('running_var')} with epsilon {onnx_eps} cannot be expressed "
                    f"with our {slot.key('running_var')!r} (eps {bn.eps}): negative variance"
                )
        self.put(slot.key("running_var"), var, op.where("running_var"))
        self.put_tracked(slot)

    def bn_identity(self, slot: _Slot, bias: np.ndarray | None, source: str) -> None:
        """Set a BN to ``x + bias`` (folded into the previous layer by the exporter)."""
        bn: nn.modules.batchnorm._BatchNorm = slot.module  # type: ignore[assignment]
        ref = self.reference
        dtype = ref[slot.key("weight")].dtype if bn.affine else ref[slot.key("running_var")].dtype
        n = bn.num_features
        if bias is not None and not bn.affine:
            raise ValueError(
                f"{source} carries a folded bias, but our {slot.prefix.rstrip('.')!r} has no affine bias to hold it"
            )
        if bn.affine:
            self.out[slot.key("weight")] = torch.ones(n, dtype=dtype)
            if bias is None:
                self.out[slot.key("bias")] = torch.zeros(n, dtype=dtype)
            else:
                self.put(slot.key("bias"), bias, source)
        if bn.track_running_stats:
            self.out[slot.key("running_mean")] = torch.zeros(n, dtype=dtype)
            self.out[slot.key("running_var")] = _identity_var(bn.eps, dtype).expand(n).clone()
            self.put_tracked(slot)

    def prelu(self, slot: _Slot, op: _Op) -> None:
        t = op.tensors["weight"]
        ref = self.reference[slot.key("weight")]
        # ONNX slopes broadcast against NCHW: [C, 1, 1] (torch legacy), [1, C, 1, 1]
        # (torch.export), [C] from older converters; torch keeps [C].
        if t.value.size != ref.numel():
            raise ValueError(
                f"{op.where()} has {t.value.size} slopes (shape {list(t.value.shape)}), but our "
                f"{slot.key()!r} has shape {list(ref.shape)} (in {self.path})"
            )
        self.put(slot.key("weight"), t.value.reshape(ref.shape), op.where())

    def linear(self, slot: _Slot, op: _Op) -> None:
        self.put(slot.key("weight"), op.tensors["weight"].value, op.where("weight"))


def state_dict_from_onnx(path: str | Path, module: nn.Module) -> dict[str, torch.Tensor]:
    """Rebuild ``module``'s state_dict from an ONNX export of the same network.

    Made for IResNet ONNX files (arcface_torch ``torch2onnx.py``: ``torch.onnx.export`` in
    eval mode, opset 11, input ``data``; insightface's ``w600k_r50.onnx``/``glintr100.onnx``;
    the torch.export-based exporter), with BatchNorm kept as ``BatchNormalization`` or folded
    into the previous Conv/Gemm. Works for any module made of ``Conv2d``, ``BatchNorm1d/2d``,
    ``PReLU`` and ``Linear`` whose registration order is its forward order. See the module
    docstring for the matching and folding rules.

    Args:
        path: the ``.onnx`` file (external data next to it is read too).
        module: the target module; only its structure is read, its weights are untouched.

    Returns:
        ``{key: tensor}`` with exactly ``module.state_dict()``'s keys, shapes and dtypes, in
        its order; load it with ``module.load_state_dict(sd, strict=True)``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not ONNX, or a tensor is missing, extra or misshapen (the
            message names the ONNX tensor, its node and our state_dict key).
    """
    import onnx

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX file {str(path)!r} does not exist")
    try:
        model = onnx.load(str(path))
    except Exception as e:  # onnx raises DecodeError / RuntimeError variants
        raise ValueError(f"{str(path)!r} is not a readable ONNX model: {e}") from e
    if not model.graph.node:  # onnx.load reads an empty or foreign file as an empty model
        raise ValueError(
            f"{str(path)!r} holds no ONNX graph ({path.stat().st_size} bytes): the file is empty, truncated "
            "or not an .onnx file; export it again or point model.weights at a good copy"
        )

    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=13)
    g = _Graph(model.graph, opset)
    ops, used = _collect_ops(g, path)
    slots = _module_slots(module)
    m = _Mapper(module, path)

    i = j = 0
    while j < len(slots):
        slot = slots[j]
        if i >= len(ops):
            last = ops[-1].where() if ops else "(none)"
            raise ValueError(
                f"our {slot.key()!r} ({type(slot.module).__name__}) has no ONNX counterpart: "
                f"the graph's weight-bearing nodes end at {last} (missing tensors in {path}; "
                f"a shallower network?)"
            )
        op = ops[i]
        if op.kind != slot.kind:
            raise ValueError(
                f"{op.where()} does not match our {slot.key()!r}: expected a "
                f"{_KIND_NAMES[slot.kind]} node for this {type(slot.module).__name__} (graph "
                f"and module layouts differ in {path})"
            )
        nxt = slots[j + 1] if j + 1 < len(slots) else None
        if slot.kind in ("conv", "linear"):
            getattr(m, slot.kind)(slot, op)
            bias = op.tensors.get("bias")
            has_bias = getattr(slot.module, "bias", None) is not None
            followed_by_bn = nxt is not None and nxt.kind == "bn"
            bn_node_follows = (
                i + 1 < len(ops)
                and ops[i + 1].kind == "bn"
                and ops[i + 1].node.input[0] == op.output
                and len(g.consumers.get(op.output, [])) == 1
            )
            if followed_by_bn and not bn_node_follows:
                # Folded: W' and b' sit in this node; our BN becomes x + (bias or 0).
                assert nxt is not None
                logger.debug("%s: BatchNorm folded into %s", nxt.prefix.rstrip("."), op.where())
                m.folded += 1
                if has_bias:
                    if bias is None:
                        zeros = np.zeros(tuple(m.reference[slot.key("bias")].shape), np.float32)
                        m.put(slot.key("bias"), zeros, op.where())
                    else:
                        m.put(slot.key("bias"), bias.value, op.where("bias"))
                    m.bn_identity(nxt, None, op.where())
                elif bias is None:
                    m.bn_identity(nxt, None, op.where())
                else:
                    m.bn_identity(nxt, bias.value, op.where("bias"))
                i += 1
                j += 2
                continue
            if has_bias:
                if bias is None:
                    raise ValueError(f"{op.where()} has no bias, but our {slot.key('bias')!r} expects one (in {path})")
                m.put(slot.key("bias"), bias.value, op.where("bias"))
            elif bias is not None and np.any(bias.value != 0):
                raise ValueError(
                    f"{op.where('bias')} is a non-zero bias, but our {slot.key()!r} has no bias "
                    f"and no BatchNorm after it to hold one (in {path})"
                )
        else:
            getattr(m, slot.kind)(slot, op)
        i += 1
        j += 1

    if i < len(ops):
        extra = ops[i]
        raise ValueError(
            f"{extra.where()} has no counterpart in our {type(module).__name__}: all "
            f"{len(slots)} layers are already mapped ({len(ops) - i} weight-bearing ONNX "
            f"node(s) left over in {path}; a deeper network?)"
        )
    unused = [
        name
        for name, init in g.initializers.items()
        if name not in used and int(np.prod(init.dims)) > 8 and g.consumers.get(name)
    ]
    if unused:
        raise ValueError(
            f"ONNX initializer {unused[0]!r} (shape {list(g.initializers[unused[0]].dims)}, "
            f"used by {g.consumers[unused[0]][0].op_type} node "
            f"{g.consumers[unused[0]][0].name!r}) has no counterpart in our "
            f"{type(module).__name__} ({len(unused)} such initializer(s) in {path})"
        )

    missing = [k for k in m.reference if k not in m.out]
    if missing:  # every slot writes all its keys; this guards future layer types
        raise ValueError(f"no ONNX tensor mapped to our {missing[0]!r} ({len(missing)} keys)")
    logger.info(
        "%s: mapped %d weight-bearing ONNX nodes onto %d layers (%d BatchNorms folded, %d "
        "with their epsilon's difference moved into running_var)",
        path,
        len(ops),
        len(slots),
        m.folded,
        m.eps_shifted,
    )
    return {k: m.out[k] for k in m.reference}
