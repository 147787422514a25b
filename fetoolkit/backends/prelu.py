"""PReLU in ONNX graphs (torch-free): the constant-slope forms our exports write, and their matchers.

``prelu(y) = relu(y) - a * relu(-y)`` for an NCHW float32 ``y [N, C, H, W]`` and a constant
per-channel slope ``a`` (float32 ``[C, 1, 1]`` or ``[1, C, 1, 1]``), written as

* ``PRelu(y, a)``: the native node, as torch exports it;
* decomposed: ``Add(Mul(y, a), Mul(Relu(y), 1 - a))`` (``rewrite_prelus(model, "decomposed")``,
  the ``prelu="decomposed"`` form of ``fetoolkit.backends.export``);
* exact: ``Add(Relu(y), Mul(Relu(Mul(y, -1)), -a))`` (``rewrite_prelus(model, "exact")``, the
  MTCNN export of ``fetoolkit.detect.mtcnn_files``);
* split: ``Add(Conv1x1dw(y, s*a), Relu(Conv1x1dw(y, s*(1-a))))`` (``split_prelus``: the default
  fp32 export form and the int8 recipe's first pass), ``s = -1`` on the channels with
  ``a > 1`` and folded into the input channels of the Convs reading the result.
* one-pass: ``Add(y', Relu(Conv1x1dw(y', w)))`` with ``y' = k*y`` folded into the Conv that
  writes ``y`` (``one_pass_prelus``, from the split form: the int8 recipe's form), per channel
  ``k = s, w = a - 1`` or ``k = s*a, w = (1 - a)/a``. Written only inside int8 files, so the
  importer does not read it back.

The matchers (``match_decomposed``, ``match_split``) read a graph through a ``GraphLookup``
(producer, consumers and constant value of a tensor), so the int8 pass's dict maps and the
importer's ``OnnxGraph`` (which folds constants) share them; ``fetoolkit.models.onnx_reader``
reads the decomposed and split forms back as PReLUs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import onnx
from onnx import helper, numpy_helper

from fetoolkit.backends.onnx_graph import (
    channel_vector,
    graph_maps,
    input_channel_slices,
    remove_unused_initializers,
    toposort,
)

__all__ = [
    "DecomposedPrelu",
    "GraphLookup",
    "SplitPrelu",
    "match_decomposed",
    "match_split",
    "one_pass_forms",
    "one_pass_prelus",
    "rewrite_prelus",
    "split_prelu_inputs",
    "split_prelus",
]

RewriteForm = Literal["decomposed", "exact"]
#: What a form writes for one PRelu node: its replacement nodes and the initializers they add.
Written = tuple[list[onnx.NodeProto], list[onnx.TensorProto]]


# --------------------------------------------------------------------------------------------
# Rewriting a native PRelu in the decomposed or exact form
# --------------------------------------------------------------------------------------------


def _decomposed(node: onnx.NodeProto, slope: np.ndarray) -> Written | None:
    """``Add(Mul(y, a), Mul(Relu(y), 1 - a))``; ``None`` (node kept) for a non-float32 slope.

    Exact in real arithmetic: for ``y > 0`` it is ``a*y + (1-a)*y = y``, for ``y <= 0`` it is
    ``a*y``. ``1 - a`` is computed in float64 and stored as float32.
    """
    if slope.dtype != np.float32:
        return None
    y, out, base = node.input[0], node.output[0], f"{node.output[0]}_prelu"
    a_name, b_name = f"{base}_a", f"{base}_1ma"
    inits = [
        numpy_helper.from_array(slope, a_name),
        numpy_helper.from_array((1.0 - slope.astype(np.float64)).astype(np.float32), b_name),
    ]
    nodes = [
        helper.make_node("Mul", [y, a_name], [f"{base}_lin"], name=f"{node.name}_lin"),
        helper.make_node("Relu", [y], [f"{base}_relu"], name=f"{node.name}_relu"),
        helper.make_node("Mul", [f"{base}_relu", b_name], [f"{base}_pos"], name=f"{node.name}_pos"),
        helper.make_node("Add", [f"{base}_lin", f"{base}_pos"], [out], name=f"{node.name}_add"),
    ]
    return nodes, inits


def _exact(node: onnx.NodeProto, slope: np.ndarray) -> Written:
    """``Add(Relu(y), Mul(Relu(Mul(y, -1)), -a))``, any slope dtype.

    Exact: for ``y > 0`` it is ``y + 0``, for ``y < 0`` it is ``0 + (-y) * (-a) = a * y``, the
    same float32 product torch's PReLU computes (MTCNN's outputs were bit-identical to the
    ``PRelu`` graph's). onnxruntime's ``PRelu`` cannot run in its NCHWc layout and costs two
    reorders each: this form ran PNet ~20 % and ONet ~1.5-2x faster at 1 thread. (The
    decomposed form is as fast but rounds ``y > 0``.)
    """
    y, out, base = node.input[0], node.output[0], f"{node.output[0]}_prelu"
    neg_slope = -slope
    inits = [
        numpy_helper.from_array(neg_slope, f"{base}_negslope"),
        # -1 shaped like the slope (per channel), not a scalar: onnxruntime then keeps the Mul
        # in its NCHWc layout (a scalar made ONet ~2x slower).
        numpy_helper.from_array(-np.ones_like(neg_slope), f"{base}_minus1"),
    ]
    nodes = [
        helper.make_node("Relu", [y], [f"{base}_pos"], name=f"{node.name}_pos"),
        helper.make_node("Mul", [y, f"{base}_minus1"], [f"{base}_negy"], name=f"{node.name}_negy"),
        helper.make_node("Relu", [f"{base}_negy"], [f"{base}_negrelu"], name=f"{node.name}_negrelu"),
        helper.make_node("Mul", [f"{base}_negrelu", f"{base}_negslope"], [f"{base}_neg"], name=f"{node.name}_neg"),
        helper.make_node("Add", [f"{base}_pos", f"{base}_neg"], [out], name=f"{node.name}_add"),
    ]
    return nodes, inits


_FORMS: dict[str, Callable[[onnx.NodeProto, np.ndarray], Written | None]] = {"decomposed": _decomposed, "exact": _exact}


def rewrite_prelus(model: onnx.ModelProto, form: RewriteForm) -> int:
    """Rewrite in place each ``PRelu(y, a)`` whose slope is an initializer in ``form``; returns how many.

    ``form``: ``"decomposed"`` (float32 slopes only) or ``"exact"`` (see the module docstring).
    The nodes written for a PRelu node ``P`` with output ``T`` are named ``<P>_<part>`` and
    write ``<T>_prelu_<part>`` (the last one ``T``); the new initializers are appended after
    the existing ones, and the old slopes are left for ``remove_unused_initializers``.
    """
    if form not in _FORMS:
        raise ValueError(f"form must be one of {sorted(_FORMS)}, got {form!r}")
    write = _FORMS[form]
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    nodes: list[onnx.NodeProto] = []
    new_inits: list[onnx.TensorProto] = []
    count = 0
    for node in g.node:
        slope = inits.get(node.input[1]) if node.op_type == "PRelu" else None
        written = None if slope is None else write(node, numpy_helper.to_array(slope))
        if written is None:
            nodes.append(node)
            continue
        nodes += written[0]
        new_inits += written[1]
        count += 1
    del g.node[:]
    g.node.extend(nodes)
    g.initializer.extend(new_inits)
    return count


# --------------------------------------------------------------------------------------------
# Matching the decomposed and split forms
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GraphLookup:
    """How the matchers read a graph, by tensor name.

    ``producer``: the node writing the tensor, or ``None`` (graph input, initializer);
    ``consumers``: the nodes reading it, a node once per use; ``const``: its value when it is a
    constant, ``None`` when it is computed at run time.
    """

    producer: Callable[[str], onnx.NodeProto | None]
    consumers: Callable[[str], Sequence[onnx.NodeProto]]
    const: Callable[[str], np.ndarray | None]


@dataclass(frozen=True)
class DecomposedPrelu:
    """``Add(Mul(y, a), Mul(Relu(y), b))`` as found; a PReLU when ``b = 1 - a`` (callers check the values)."""

    y: str  # the run-time input
    a: str  # the constant of Mul(y, a)
    b: str  # the constant of Mul(Relu(y), b)
    nodes: tuple[onnx.NodeProto, onnx.NodeProto, onnx.NodeProto]  # Mul(y, a), Relu(y), Mul(Relu(y), b)


@dataclass(frozen=True)
class SplitPrelu:
    """``Add(Conv1x1dw(y, s*a), Relu(Conv1x1dw(y, s*(1-a))))`` as found, ``y`` with ``C`` channels."""

    nodes: tuple[onnx.NodeProto, onnx.NodeProto, onnx.NodeProto]  # the lin Conv, the Relu's Conv, the Relu
    slope: np.ndarray  # float32 [C]: a
    sign: np.ndarray  # float64 [C]: s, 1 or -1


def _mul_by_const(name: str, g: GraphLookup) -> tuple[onnx.NodeProto, str, str] | None:
    """``(node, x, c)`` if ``name`` is written by ``Mul(x, c)`` or ``Mul(c, x)``, ``c`` constant, ``x`` not."""
    node = g.producer(name)
    if node is None or node.op_type != "Mul" or len(node.input) != 2:
        return None
    x, c = node.input
    if g.const(x) is not None:
        x, c = c, x
    if g.const(x) is not None or g.const(c) is None:
        return None
    return node, x, c


def match_decomposed(add: onnx.NodeProto, g: GraphLookup) -> DecomposedPrelu | None:
    """The decomposed form ending at ``add``, its three inner tensors read by nothing else; else ``None``.

    Either Mul may come first in the Add, and either input first in each Mul.
    """
    if add.op_type != "Add" or len(add.input) != 2:
        return None
    left, right = (_mul_by_const(name, g) for name in add.input)
    if left is None or right is None:
        return None
    for (lin, y, a), (pos, r, b) in ((left, right), (right, left)):
        relu = g.producer(r)
        if relu is None or relu.op_type != "Relu" or relu.input[0] != y:
            continue
        if any(len(g.consumers(n.output[0])) != 1 for n in (lin, pos, relu)):
            continue
        return DecomposedPrelu(y, a, b, (lin, relu, pos))
    return None


def _depthwise_1x1(node: onnx.NodeProto | None, g: GraphLookup) -> np.ndarray | None:
    """The weight (float64 ``[C]``) of a bias-free, unpadded, stride-1 1x1 depthwise Conv, else ``None``."""
    if node is None or node.op_type != "Conv" or len(node.input) != 2:
        return None
    w = g.const(node.input[1])
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if w is None or w.ndim != 4 or w.shape[1:] != (1, 1, 1):
        return None
    if int(attrs.get("group", 1)) != w.shape[0] or any(int(p) for p in attrs.get("pads", [])):
        return None
    if any(int(s) != 1 for s in attrs.get("strides", [])) or any(int(d) != 1 for d in attrs.get("dilations", [])):
        return None
    return w.reshape(-1).astype(np.float64)


def match_split(add: onnx.NodeProto, g: GraphLookup) -> SplitPrelu | None:
    """The split form ending at ``add``, its three inner tensors read by nothing else; else ``None``.

    Per channel the two weights tell ``s`` apart: ``s = 1`` gives ``|1 - l| = r`` and ``s = -1``
    gives ``|1 + l| = r`` for lin weight ``l`` and relu weight ``r >= 0`` (to ``1e-5`` relative);
    both hold only at ``l = 0``, where ``s = 1``.
    """
    if add.op_type != "Add" or len(add.input) != 2:
        return None
    for lin_name, relu_name in (add.input, add.input[::-1]):
        lin, relu = g.producer(lin_name), g.producer(relu_name)
        if relu is None or relu.op_type != "Relu":
            continue
        pre = g.producer(relu.input[0])
        l_w, r_w = _depthwise_1x1(lin, g), _depthwise_1x1(pre, g)
        if lin is None or pre is None or l_w is None or r_w is None:
            continue
        if l_w.shape != r_w.shape or lin.input[0] != pre.input[0]:
            continue
        if (r_w < 0).any() or any(len(g.consumers(n.output[0])) != 1 for n in (lin, pre, relu)):
            continue
        tol = 1e-5 * (1 + np.abs(l_w).max())
        plus, minus = np.abs(np.abs(1 - l_w) - r_w) <= tol, np.abs(np.abs(1 + l_w) - r_w) <= tol
        if not (plus | minus).all():
            continue
        sign = np.where(plus, 1.0, -1.0)
        return SplitPrelu((lin, pre, relu), (sign * l_w).astype(np.float32), sign)
    return None


# --------------------------------------------------------------------------------------------
# Writing the split form
# --------------------------------------------------------------------------------------------


def _prelu_terms(
    node: onnx.NodeProto, g: GraphLookup
) -> tuple[str, np.ndarray, np.ndarray, list[onnx.NodeProto]] | None:
    """``(y, a, b, nodes)`` if ``node`` ends a PReLU written as ``T = a*y + b*relu(y)``.

    ``a``, ``b``: float64 ``[C]``. A native ``PRelu`` with a constant per-channel slope
    (``b = 1 - a``) or the decomposed form (``b`` as stored); ``nodes`` are the pattern's.
    """
    if node.op_type == "PRelu":
        slope = g.const(node.input[1]) if len(node.input) == 2 else None
        a = None if slope is None else channel_vector(slope)
        if a is None:
            return None
        return node.input[0], a.astype(np.float64), 1.0 - a.astype(np.float64), [node]
    found = match_decomposed(node, g)
    if found is None:
        return None
    a_value, b_value = g.const(found.a), g.const(found.b)
    assert a_value is not None and b_value is not None
    a, b = channel_vector(a_value), channel_vector(b_value)
    if a is None or b is None or len(a) != len(b):
        return None
    return found.y, a.astype(np.float64), b.astype(np.float64), [*found.nodes, node]


def _graph_lookup(
    nodes: list[onnx.NodeProto], consts: dict[str, np.ndarray]
) -> tuple[dict[str, onnx.NodeProto], dict[str, list[onnx.NodeProto]], GraphLookup]:
    """The producer and consumer maps of ``nodes`` (one list, compared by identity) and a
    ``GraphLookup`` over them and ``consts`` (initializer name -> value)."""
    producer, consumers = graph_maps(nodes)
    return producer, consumers, GraphLookup(producer.get, lambda t: consumers.get(t, []), consts.get)


def _splice(
    model: onnx.ModelProto,
    nodes: list[onnx.NodeProto],
    dropped: set[int],
    replaced: dict[int, list[onnx.NodeProto]],
    new_inits: list[onnx.TensorProto],
) -> None:
    """Rewrite ``model``'s nodes in place: each node of ``nodes`` whose id is in ``dropped`` goes, and
    the nodes ``replaced`` holds for its id (if any) take its place; ``new_inits`` are appended, the
    graph is sorted again and initializers nothing reads any more are removed."""
    kept: list[onnx.NodeProto] = []
    for node in nodes:
        if id(node) in dropped:
            kept.extend(replaced.get(id(node), []))
        else:
            kept.append(node)
    g = model.graph
    del g.node[:]
    g.node.extend(kept)
    g.initializer.extend(new_inits)
    toposort(g)
    remove_unused_initializers(model)


def split_prelus(model: onnx.ModelProto) -> int:
    """Rewrite every PReLU ``T = a*y + b*relu(y)`` after a Conv as ``Conv1x1dw(y, s*a) + Relu(Conv1x1dw(y, s*b))``.

    ``s = -1`` on the channels where ``b < 0`` (slope ``a > 1``), so the Relu branch is
    ``relu(|b| y)``; the result is then ``s*T``, and the sign is folded into the input channels
    of the Convs reading ``T``. A PReLU whose output feeds anything but Convs (or a Conv whose
    weight is shared) is rewritten only when it needs no sign. The new nodes and weights
    (float32 ``[C, 1, 1, 1]``) are named ``<T>_split_*``. In place; returns how many.
    """
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    consts = {k: numpy_helper.to_array(v) for k, v in inits.items()}
    nodes_now = list(g.node)  # the passes compare nodes by identity: one list for the whole pass
    producer, consumers, lookup = _graph_lookup(nodes_now, consts)
    outputs = {o.name for o in g.output}
    replaced: dict[int, list[onnx.NodeProto]] = {}  # id of the PReLU's last node -> the nodes replacing it
    dropped: set[int] = set()
    new_inits: list[onnx.TensorProto] = []
    count = 0
    for node in nodes_now:
        found = _prelu_terms(node, lookup)
        if found is None:
            continue
        y, a, b, nodes = found
        src = producer.get(y)
        if (
            src is None
            or src.op_type != "Conv"
            or len(src.input) < 2
            or src.input[1] not in consts
            or consts[src.input[1]].ndim != 4
            or consts[src.input[1]].shape[0] != len(a)
        ):
            continue  # only NCHW Conv outputs: the 1x1 depthwise Convs need the channel axis
        t = node.output[0]
        sign = np.where(b < 0, -1.0, 1.0)
        sinks = consumers.get(t, [])
        sink_edits: list[tuple[str, np.ndarray]] = []
        if (sign < 0).any():
            if t in outputs or not sinks:
                continue
            ok = True
            for conv in sinks:
                w_name = conv.input[1] if conv.op_type == "Conv" and len(conv.input) > 1 else ""
                if (
                    conv.op_type != "Conv"
                    or conv.input[0] != t
                    or w_name not in consts
                    or len(consumers.get(w_name, [])) != 1
                ):
                    ok = False
                    break
                w = consts[w_name].astype(np.float64)
                where = input_channel_slices(conv, w, len(a))
                if where is None:
                    ok = False
                    break
                for ch in np.flatnonzero(sign < 0):
                    rows, col = where[ch]
                    w[rows, col] *= -1.0
                sink_edits.append((w_name, w))
            if not ok:
                continue
        for w_name, w in sink_edits:
            consts[w_name] = w.astype(np.float32)
            inits[w_name].CopyFrom(numpy_helper.from_array(consts[w_name], w_name))
        c = len(a)
        lin_w, relu_w = f"{t}_split_lin_w", f"{t}_split_relu_w"
        new_inits += [
            numpy_helper.from_array((sign * a).astype(np.float32).reshape(c, 1, 1, 1), lin_w),
            numpy_helper.from_array((sign * b).astype(np.float32).reshape(c, 1, 1, 1), relu_w),
        ]
        dw: dict[str, Any] = {"group": c, "kernel_shape": [1, 1]}
        replaced[id(node)] = [
            helper.make_node("Conv", [y, lin_w], [f"{t}_split_lin"], name=f"{t}_split_lin", **dw),
            helper.make_node("Conv", [y, relu_w], [f"{t}_split_pre"], name=f"{t}_split_pre", **dw),
            helper.make_node("Relu", [f"{t}_split_pre"], [f"{t}_split_relu"], name=f"{t}_split_relu"),
            helper.make_node("Add", [f"{t}_split_lin", f"{t}_split_relu"], [t], name=f"{t}_split_add"),
        ]
        dropped.update(id(n) for n in nodes)
        count += 1
    if count:
        _splice(model, nodes_now, dropped, replaced, new_inits)
    return count


# --------------------------------------------------------------------------------------------
# Writing the one-pass form
# --------------------------------------------------------------------------------------------


def split_prelu_inputs(model: onnx.ModelProto) -> list[str]:
    """The input tensor ``y`` of every split PReLU in ``model`` (what ``one_pass_prelus`` reads ranges of)."""
    g = model.graph
    nodes = list(g.node)
    _, _, lookup = _graph_lookup(nodes, {i.name: numpy_helper.to_array(i) for i in g.initializer})
    found = (match_split(n, lookup) for n in nodes)
    return [f.nodes[0].input[0] for f in found if f is not None]


def one_pass_forms(slope: np.ndarray, positive: np.ndarray, negative: np.ndarray) -> np.ndarray:
    """Per channel, True where the positive-side one-pass form quantises better than the negative-side one.

    ``slope``: ``a`` [C]; ``positive`` / ``negative``: the largest ``relu(y)`` / ``relu(-y)``
    per channel on the calibration faces [C]. A rough int8 error model of one channel,
    relative to the range of the result ``T``: every tensor of the PReLU is quantised with one
    step of its largest range ``M`` (the channel equalisation makes them share it), four
    roundings plus the Relu branch's weight ``|w|`` times the rounding of its input:
    ``(3 + |w|) * M / range(T)``; ``w = a - 1`` (negative side) or ``(1 - a) / a`` (positive
    side, the input ``a*y`` then spans only ``|a|`` of ``y``'s range).
    """
    a = slope.astype(np.float64)
    p, n = positive.astype(np.float64), negative.astype(np.float64)
    t = np.maximum(p, np.abs(a) * n) + 1e-30
    err_neg = (3 + np.abs(a - 1)) * np.maximum.reduce([p, n, np.abs(a - 1) * n, t]) / t
    safe = np.abs(a) > 1e-3
    w_pos = np.abs(1 - a) / np.where(safe, np.abs(a), 1.0)
    err_pos = (3 + w_pos) * np.maximum.reduce([np.abs(a) * np.maximum(p, n), np.abs(1 - a) * p, t]) / t
    return safe & (err_pos < err_neg)


def _scale_output_channels(conv: onnx.NodeProto, k: np.ndarray, g: GraphLookup) -> list[tuple[str, np.ndarray]] | None:
    """New ``(name, value)`` of ``conv``'s weight (and bias) with output channel ``c`` times ``k[c]``.

    ``None`` when that is not safe: not a Conv with constant weights of ``len(k)`` output
    channels, or a weight or bias also read by another node.
    """
    if conv.op_type != "Conv" or len(conv.input) < 2:
        return None
    edits = []
    for i, name in enumerate(conv.input[1:3], start=1):  # the weight, then the bias if any
        if not name:
            continue
        value = g.const(name)
        if value is None or len(g.consumers(name)) != 1 or value.ndim != (4 if i == 1 else 1):
            return None
        if value.shape[0] != len(k):
            return None
        shape = (-1,) + (1,) * (value.ndim - 1)
        edits.append((name, (value.astype(np.float64) * k.reshape(shape)).astype(np.float32)))
    return edits


def one_pass_prelus(model: onnx.ModelProto, ranges: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None) -> int:
    """Rewrite each split PReLU as ``T = y' + Relu(Conv1x1dw(y', w))``, ``y' = k*y``; returns how many.

    The split form ``s*T = Conv1x1dw(y, s*a) + Relu(Conv1x1dw(y, s*(1-a)))`` reads its input
    ``y`` [N, C, H, W] twice, the one-pass form once: one 1x1 depthwise Conv (Relu fused) and
    the Add, a third fewer passes over the tensor (outside the dense Convs, those passes are
    most of an int8 MobileFaceNet's time). With ``s`` as in the split form (``-1`` where
    ``a > 1``), each channel takes one of two forms, both giving the split form's ``s*T``:

    * negative side: ``k = s``, ``w = a - 1``: ``y > 0`` gives ``y + 0``, ``y < 0`` gives
      ``y + (a-1) y = a y`` (for ``s = 1``; ``s = -1`` mirrors it);
    * positive side: ``k = s*a``, ``w = (1 - a) / a``: ``s*(a y + (1-a) relu(y))``.

    ``ranges`` maps ``y``'s name to its largest ``relu(y)`` and ``relu(-y)`` per channel (float
    ``[C]`` each, from calibration faces); ``one_pass_forms`` picks the form per channel from
    them. Without an entry every channel takes the negative side. ``k`` is folded into the output
    channels of the Conv writing ``y``; a split PReLU whose ``y`` has another reader, or whose
    producer cannot take ``k`` (not a Conv, shared weights), is left split. The new nodes and
    weight (float32 ``[C, 1, 1, 1]``) are named ``<T>_onepass_*``. In place.
    """
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    consts = {k: numpy_helper.to_array(v) for k, v in inits.items()}
    nodes_now = list(g.node)
    producer, consumers, lookup = _graph_lookup(nodes_now, consts)
    outputs = {o.name for o in g.output}
    replaced: dict[int, list[onnx.NodeProto]] = {}
    dropped: set[int] = set()
    new_inits: list[onnx.TensorProto] = []
    for add in nodes_now:
        found = match_split(add, lookup)
        if found is None:
            continue
        lin, pre, relu = found.nodes
        y = lin.input[0]
        src = producer.get(y)
        if src is None or y in outputs or len(consumers.get(y, [])) != 2:
            continue
        a = found.slope.astype(np.float64)
        positive = one_pass_forms(a, *ranges[y]) if ranges and y in ranges else np.zeros(len(a), bool)
        k = found.sign * np.where(positive, a, 1.0)
        w = np.where(positive, (1.0 - a) / np.where(positive, a, 1.0), a - 1.0)
        edits: list[tuple[str, np.ndarray]] = []
        if (k != 1).any():
            scaled = _scale_output_channels(src, k, lookup)
            if scaled is None:
                continue
            edits = scaled
        for name, value in edits:
            consts[name] = value
            inits[name].CopyFrom(numpy_helper.from_array(value, name))
        t = add.output[0]
        w_name = f"{t}_onepass_w"
        new_inits.append(numpy_helper.from_array(w.astype(np.float32).reshape(-1, 1, 1, 1), w_name))
        dw: dict[str, Any] = {"group": len(a), "kernel_shape": [1, 1]}
        replaced[id(add)] = [
            helper.make_node("Conv", [y, w_name], [f"{t}_onepass_pre"], name=f"{t}_onepass_pre", **dw),
            helper.make_node("Relu", [f"{t}_onepass_pre"], [f"{t}_onepass_relu"], name=f"{t}_onepass_relu"),
            helper.make_node("Add", [y, f"{t}_onepass_relu"], [t], name=f"{t}_onepass_add"),
        ]
        dropped.update(id(n) for n in (lin, pre, relu, add))
    if replaced:
        _splice(model, nodes_now, dropped, replaced, new_inits)
    return len(replaced)
