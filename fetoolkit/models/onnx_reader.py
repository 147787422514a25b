"""Reading an ONNX graph for the importer (torch-free): constants, weight-bearing nodes, PReLU forms.

:func:`collect_ops` orders a graph canonically (post-order depth-first from the outputs, inputs
left to right) and returns its weight-bearing nodes (``Conv``, ``BatchNormalization``,
``PRelu``, ``Gemm``, ``MatMul`` + bias ``Add``) with their constant inputs resolved through
initializers, ``Constant`` nodes and constant-only reshaping ops; zero ``Pad`` nodes before a
Conv and the decomposed and split PReLU forms of our exports are read back as what they stand
for. :mod:`fetoolkit.models.onnx_import` pairs them with a module's layers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fetoolkit.backends.onnx_graph import NEVER_FOLD, input_channel_slices
from fetoolkit.backends.prelu import GraphLookup, match_decomposed, match_split

logger = logging.getLogger(__name__)

__all__ = ["ConstTensor", "OnnxGraph", "WeightOp", "collect_ops"]

# Ops that may turn constants into constants (folded on the fly by ``OnnxGraph.const``).
_CONST_OPS = ("Identity", "Unsqueeze", "Squeeze", "Reshape", "Flatten", "Cast", "Constant")
# Constant subgraphs larger than this are not folded (shape arithmetic is tiny).
_FOLD_MAX_ELEMENTS = 1 << 16
# Input preprocessing that MXNet-converted graphs carry before the first Conv.
_PREPROC_OPS = ("Sub", "Mul", "Div", "Add", "Transpose")


@dataclass
class ConstTensor:
    """A constant ONNX node input: what it is called, where it came from, its value."""

    name: str  # the node input's name
    origin: str  # the initializer / Constant it resolves to (differs behind Identity etc.)
    value: np.ndarray

    def describe(self) -> str:
        return repr(self.name) if self.origin == self.name else f"{self.name!r} (= {self.origin!r})"


@dataclass
class WeightOp:
    """One weight-bearing ONNX node with its constant inputs by role."""

    kind: str  # "conv" | "bn" | "prelu" | "linear"
    node: Any  # onnx.NodeProto
    tensors: dict[str, ConstTensor]
    output: str
    attrs: dict[str, Any] = field(default_factory=dict)

    def first(self) -> ConstTensor:
        return next(iter(self.tensors.values()))

    def where(self, role: str | None = None) -> str:
        t = self.tensors[role] if role else self.first()
        return f"ONNX tensor {t.describe()} of {self.node.op_type} node {self.node.name!r}"


class OnnxGraph:
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

    def const(self, name: str) -> ConstTensor | None:
        """The constant value of tensor ``name``, or ``None`` if it depends on the input."""
        hit = self._resolve(name)
        return None if hit is None else ConstTensor(name=name, origin=hit[0], value=hit[1])

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


def collect_ops(g: OnnxGraph, path: Path) -> tuple[list[WeightOp], set[str]]:
    """Weight-bearing ops in canonical order, and the names of the constants they used."""
    ops: list[WeightOp] = []
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

    def need(node: Any, index: int, role: str) -> ConstTensor:
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

    prelus, prelu_parts, signs = _prelus(g)
    for index, node in enumerate(order):
        if id(node) in prelu_parts:
            continue
        if id(node) in prelus:
            slope, other = prelus[id(node)]
            used.update((slope.origin, other.origin))
            ops.append(WeightOp("prelu", node, {"weight": slope}, node.output[0]))
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
            ops.append(WeightOp("conv", node, tensors, node.output[0], attrs))
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
            ops.append(WeightOp("bn", node, tensors, node.output[0], attrs))
        elif node.op_type == "PRelu":
            ops.append(WeightOp("prelu", node, {"weight": need(node, 1, "slope")}, node.output[0]))
        elif node.op_type == "Gemm":
            attrs = _attrs(node)
            if int(attrs.get("transA", 0)) != 0:
                raise ValueError(f"Gemm node {node.name!r} in {path} has transA=1: not a Linear")
            b = need(node, 1, "B")
            alpha = float(attrs.get("alpha", 1.0))
            w = b.value if int(attrs.get("transB", 0)) else b.value.T
            tensors = {"weight": ConstTensor(b.name, b.origin, np.ascontiguousarray(w) * alpha)}
            if len(node.input) > 2 and node.input[2]:
                c = need(node, 2, "C")
                beta = float(attrs.get("beta", 1.0))
                tensors["bias"] = ConstTensor(c.name, c.origin, c.value.reshape(-1) * beta)
            ops.append(WeightOp("linear", node, tensors, node.output[0], attrs))
        elif node.op_type == "MatMul":
            w = need(node, 1, "weight")
            tensors = {"weight": ConstTensor(w.name, w.origin, np.ascontiguousarray(w.value.T))}
            output = node.output[0]
            adds = [n for n in g.consumers.get(output, []) if n.op_type == "Add"]
            if len(g.consumers.get(output, [])) == 1 and len(adds) == 1:
                add = adds[0]
                other = [i for i in add.input if i != output]
                c = g.const(other[0]) if len(other) == 1 else None
                if c is not None:
                    used.add(c.origin)
                    tensors["bias"] = ConstTensor(c.name, c.origin, c.value.reshape(-1))
                    output = add.output[0]
                    consumed_adds.add(id(add))
            ops.append(WeightOp("linear", node, tensors, output))
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


def _zero_pad_hw(g: OnnxGraph, node: Any, path: Path, used: set[str]) -> list[int]:
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


def _prelus(g: OnnxGraph) -> tuple[dict[int, tuple[ConstTensor, ConstTensor]], set[int], dict[str, np.ndarray]]:
    """PReLUs in the decomposed and split forms of our exports (``fetoolkit.backends.prelu``).

    Decomposed: ``Add(Mul(y, a), Mul(Relu(y), b))`` with ``a + b == 1`` per channel
    (``fetoolkit.backends.export``'s ``prelu="decomposed"``). Split: ``Add(Conv1x1dw(y, s*a),
    Relu(Conv1x1dw(y, s*(1-a))))`` (``fetoolkit.backends.prelu.split_prelus``), the Convs
    reading the result with the input channels where ``s = -1`` negated. Returns
    ``{id(Add node): (slope tensor a, tensor b)}`` (split: ``a`` float32 ``[1, C, 1, 1]`` taken
    from the weights, ``b = 1 - a`` ``[C]``), the ids of the nodes the patterns absorb, and
    ``{tensor: s}`` for the split results whose readers carry a folded sign.
    """
    found: dict[int, tuple[ConstTensor, ConstTensor]] = {}
    parts: set[int] = set()
    signs: dict[str, np.ndarray] = {}

    def value(name: str) -> np.ndarray | None:
        t = g.const(name)
        return None if t is None else t.value

    lookup = GraphLookup(g.producer.get, lambda t: g.consumers.get(t, []), value)
    for add in g.graph.node:
        decomposed = match_decomposed(add, lookup)
        if decomposed is not None:  # (then it cannot be split: both Add inputs come from Muls)
            a_t, b_t = g.const(decomposed.a), g.const(decomposed.b)
            assert a_t is not None and b_t is not None
            a, b = a_t.value.astype(np.float64), b_t.value.astype(np.float64)
            if (
                a.shape == b.shape
                and a.size >= 1
                and np.allclose(a + b, 1.0, rtol=0, atol=1e-5 * (1 + np.abs(a).max()))
            ):
                found[id(add)] = (a_t, b_t)
                parts.update(id(n) for n in decomposed.nodes)
            continue
        split = match_split(add, lookup)
        if split is None:
            continue
        lin, pre, _ = split.nodes
        l_t, r_t = g.const(lin.input[1]), g.const(pre.input[1])
        assert l_t is not None and r_t is not None
        a = split.slope
        found[id(add)] = (
            ConstTensor(l_t.name, l_t.origin, a.reshape(1, len(a), 1, 1)),
            ConstTensor(r_t.name, r_t.origin, (1 - a.astype(np.float64)).astype(np.float32)),
        )
        parts.update(id(n) for n in split.nodes)
        if (split.sign < 0).any():
            signs[add.output[0]] = split.sign
    return found, parts, signs


def _unfold_sign(weight: ConstTensor, sign: np.ndarray, node: Any, path: Any) -> ConstTensor:
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
    return ConstTensor(weight.name, weight.origin, out.astype(weight.value.dtype))
