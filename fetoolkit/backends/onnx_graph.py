"""Small read-and-tidy helpers on ONNX graphs, shared by the export, int8, MTCNN, import and
bench code. Only ``onnx`` is needed (no torch, no onnxruntime)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import onnx
from onnx import helper

#: ``metadata_props`` keys of the files fetoolkit writes (``backends/export.py``, ``backends/quantize.py``).
META_CONTRACT = "fetoolkit.contract"
META_MODEL = "fetoolkit.model"
META_SOURCE_SHA256 = "fetoolkit.source_sha256"
META_EMBED_DIM = "fetoolkit.embed_dim"
META_PRECISION = "fetoolkit.precision"
META_EXPORT = "fetoolkit.export"
META_CALIBRATION = "fetoolkit.calibration"


#: Ops never evaluated while folding constants (not deterministic): the export's and the
#: importer's constant folders both skip them.
NEVER_FOLD = (
    "RandomNormal",
    "RandomUniform",
    "RandomNormalLike",
    "RandomUniformLike",
    "Multinomial",
    "Bernoulli",
    "Dropout",
)


def set_metadata(model: onnx.ModelProto, values: dict[str, str]) -> None:
    """Set (add or overwrite) ``metadata_props`` entries in place."""
    current = {p.key: p.value for p in model.metadata_props}
    current.update(values)
    del model.metadata_props[:]
    for key, value in current.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


def int_attr(node: onnx.NodeProto, name: str, default: int) -> int:
    attr = next((a for a in node.attribute if a.name == name), None)
    return default if attr is None else int(helper.get_attribute_value(attr))


def input_channel_slices(conv: onnx.NodeProto, weight: np.ndarray, channels: int) -> list[tuple[slice, int]] | None:
    """Where input channel ``c`` of ``conv`` sits in its weight: ``(output channels, column)`` per c.

    ``weight`` is ``[M, C/G, kh, kw]``; None when the Conv's input cannot have ``channels`` channels.
    """
    groups = int_attr(conv, "group", 1)
    m, per_group = weight.shape[0], weight.shape[1]
    if per_group * groups != channels or m % groups:
        return None
    out_per_group = m // groups
    return [
        (slice((c // per_group) * out_per_group, (c // per_group + 1) * out_per_group), c % per_group)
        for c in range(channels)
    ]


def graph_maps(nodes: Iterable[onnx.NodeProto]) -> tuple[dict[str, onnx.NodeProto], dict[str, list[onnx.NodeProto]]]:
    """(producer of each tensor, consumers of each tensor) of ``nodes`` (``graph.node`` or a list of it).

    A node reading a tensor twice is listed twice, so ``len(consumers[t])`` is the number of
    uses of ``t``. Callers that compare nodes by identity should pass one list of the node
    objects and keep using it.
    """
    producer: dict[str, onnx.NodeProto] = {}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in nodes:
        for name in node.output:
            producer[name] = node
        for name in node.input:
            if name:
                consumers.setdefault(name, []).append(node)
    return producer, consumers


def data_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """The graph inputs that are not initializers (old exporters list weights as inputs too)."""
    inits = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def opset_of(model: onnx.ModelProto) -> int | None:
    """The model's default-domain opset, or ``None`` when it imports none."""
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=None)


def pad_attributes(node: onnx.NodeProto) -> tuple[str, list[int] | None, float]:
    """A ``Pad`` node's mode, and its pads and value when they are attributes (opset < 11).

    Returns:
        ``(mode, pads, value)``; from opset 11 on ``pads`` is ``None`` (inputs 1 and 2 hold the
        pads and the value: the caller resolves them) and ``value`` is 0.
    """
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    mode = attrs.get("mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else str(mode)
    if "pads" in attrs:
        return mode, [int(p) for p in attrs["pads"]], float(attrs.get("value", 0.0))
    return mode, None, 0.0


def zero_pads_hw(mode: str, pads: Sequence[int], value: float) -> list[int] | None:
    """``[top, left, bottom, right]`` when an NCHW ``Pad`` is a zero padding of H and W only
    (what a Conv's own ``pads`` can do), else ``None``."""
    if mode != "constant" or value != 0.0 or len(pads) != 8 or any(pads[i] for i in (0, 1, 4, 5)) or min(pads) < 0:
        return None
    return [pads[2], pads[3], pads[6], pads[7]]


def count_ops(model: onnx.ModelProto) -> dict[str, int]:
    """``{op_type: count}`` of the graph's nodes."""
    out: dict[str, int] = {}
    for node in model.graph.node:
        out[node.op_type] = out.get(node.op_type, 0) + 1
    return out


def remove_unused_initializers(model: onnx.ModelProto) -> int:
    """Drop initializers (and their duplicate graph inputs) that no node or output reads; returns how many."""
    g = model.graph
    used: set[str] = {name for node in g.node for name in node.input}
    used.update(o.name for o in g.output)
    dead = [i for i in g.initializer if i.name not in used]
    for init in dead:
        g.initializer.remove(init)
    dead_names = {i.name for i in dead}
    for inp in [i for i in g.input if i.name in dead_names]:
        g.input.remove(inp)
    return len(dead)


def channel_vector(value: np.ndarray) -> np.ndarray | None:
    """A per-channel constant of an NCHW tensor (``[C,1,1]`` or ``[1,C,1,1]``) as ``[C]``, else None."""
    if value.ndim not in (3, 4) or any(d != 1 for d in value.shape[:-3]) or value.shape[-2:] != (1, 1):
        return None
    return value.reshape(-1)


def toposort(graph: onnx.GraphProto) -> None:
    """Reorder ``graph.node`` topologically in place (stable: keeps the given order where it can)."""
    produced_by = {o: k for k, n in enumerate(graph.node) for o in n.output}
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    nodes = list(graph.node)
    done = [False] * len(nodes)
    order: list[onnx.NodeProto] = []

    def visit(k: int) -> None:
        stack = [(k, 0)]
        while stack:
            j, i = stack.pop()
            if done[j]:
                continue
            inputs = [x for x in nodes[j].input if x not in available and x in produced_by]
            if i < len(inputs):
                stack.append((j, i + 1))
                dep = produced_by[inputs[i]]
                if not done[dep]:
                    stack.append((dep, 0))
            else:
                done[j] = True
                order.append(nodes[j])
                available.update(nodes[j].output)

    for k in range(len(nodes)):
        visit(k)
    del graph.node[:]
    graph.node.extend(order)
