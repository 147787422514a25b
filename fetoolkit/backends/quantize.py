"""fp16 and int8 variants of an exported fp32 ONNX face model, metadata kept.

* ``int8``: onnxruntime *static* quantisation, QDQ format, per-channel int8 weights, uint8
  activations whose ranges are calibrated on REAL aligned faces (the caller passes them,
  already preprocessed). Dynamic quantisation is not offered: it ran 3-4x slower than fp32
  here, and random calibration images ruin the accuracy (``/work/shared/ASSETS.md``).
  Exact fp32 graph passes run first (``split_prelus``, ``one_pass_prelus``,
  ``equalize_channels``; see below).
* ``fp16``: every float32 initializer and op in float16 (``onnxruntime.transformers.float16``),
  input and output kept float32 so the contract's preprocessing is unchanged.

Both copy the source file's ``metadata_props`` (contract, model, embedding size, source
sha256) and set ``fetoolkit.precision``; int8 also records ``fetoolkit.calibration`` (JSON: how
many faces, which ones, the calibration method, the graph passes), so a variant runs in
``OnnxEmbedder`` with no flags and says what it is.

Why the passes (measured on ORL, all 400 aligned faces, 10-fold protocol):

1. ``split_prelus``. Our fp32 export writes ``PReLU(y, a)`` as ``a*y + (1-a)*relu(y)`` (fast in
   fp32). Quantised as it is, that is two ``QLinearMul`` plus a float Dequantize/Relu/Quantize
   round trip per PReLU, none of which onnxruntime runs in parallel: on the MobileFaceNets
   those elementwise passes took 70% of the int8 time, and int8 ran *slower* than fp32 on two
   threads. It also cancels badly: the sirius MobileFaceNet has slopes up to +-9, so
   ``9y - 8y`` is quantised at 9x the range of its result. The pass rewrites each one as
   ``Conv1x1dw(y, b) + Relu(Conv1x1dw(y, c))`` with per-channel ``b = s*a``, ``c = s*(1-a) >= 0``
   and ``s = -1`` on the channels with ``a > 1`` (``1 - a < 0`` there), the sign folded into
   the input channels of the Convs that read the PReLU. Every op of the result is a
   ``QLinearConv`` (with per-channel scales the 1x1 depthwise weights are exact in int8: one
   weight per channel) or a ``QLinearAdd``, and onnxruntime runs the whole int8 graph in
   NHWC with no float op left. The IResNets' PReLUs get the same rewrite (random-weight
   IResNet-50 int8: 2.7x -> 3.3x fp32 at one thread, 2.0x -> 2.6x at two, batch 8).
   ``one_pass_prelus`` then folds one of the two depthwise Convs into the Conv before it
   (``T = y' + Relu(Conv1x1dw(y', w))``), a third fewer passes over each PReLU's tensor; each
   channel takes the side of the PReLU its calibration ranges round best (``one_pass_forms``).
   On an AMD EPYC (Zen 4) the sirius int8 file ran 13-15% faster at batch 32 on both kernel
   families, TAR@FAR=1e-3 on ORL unchanged; the mean cosine to fp32 went 0.9945 -> 0.9950
   (sirius) and 0.988 -> 0.984 (mobilefacenet512; ``quantize.prelu=split`` keeps the split
   form). With every channel on the negative side the sirius file lost 0.0011 of TAR (mean
   cosine 0.992): where the slope is near 0, two rounded terms of opposite sign cancel.
2. ``equalize_channels`` (cross-layer equalisation, data-aware). Activations are quantised per
   tensor, but the channels of a MobileFaceNet's depthwise inputs do not share a range (sirius:
   the largest channel maximum is 4-20x the median one, up to 240), so most channels got a
   handful of int8 levels. Where a tensor flows
   from Convs to Convs through ops that commute with a positive per-channel scale (Relu,
   PReLU, Mul by a per-channel constant, Add of two such tensors), channel ``c`` is divided by
   ``s_c`` in the producing Convs' weights and bias and multiplied back in the consuming
   Convs' input weights. ``s_c`` comes from the channel's largest magnitude on the calibration
   faces over every tensor of the region: all of it when every consumer is depthwise (the
   per-channel weight scales absorb it), balanced with the consumer's weight range
   (``sqrt(range / weight range)``) otherwise.
   A one-pass PReLU's 1x1 depthwise Conv is a per-channel scale inside the region: its input
   and output share the region's scale.

All three passes are exact in real arithmetic (``quantize_int8`` checks the transformed fp32 graph
against the source on the calibration faces before quantising). Against our fp32 export the
sirius MobileFaceNet went from TAR@FAR=1e-3 -0.040 and 10-fold accuracy -0.0144 (mean cosine
0.845) to -0.0006 and -0.0006 (mean cosine 0.996), and int8 from 0.7-1.2x to about 2x fp32 at
batch 32 on one and two threads; see ``quantize_int8``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
from onnx import helper, numpy_helper

from fetoolkit.backends.onnx_graph import (
    META_CALIBRATION,
    META_PRECISION,
    channel_vector,
    data_inputs,
    graph_maps,
    input_channel_slices,
    opset_of,
    set_metadata,
    toposort,
)
from fetoolkit.backends.prelu import one_pass_prelus, split_prelu_inputs, split_prelus
from fetoolkit.cpu import machine_info
from fetoolkit.hub import atomic_path

log = logging.getLogger(__name__)

Precision = Literal["fp32", "fp16", "int8"]
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8")
CalibrationMethodName = Literal["minmax", "entropy", "percentile"]
WeightBits = Literal[7, 8]

#: What each weight range is for (recorded in the file as ``kernels``).
WEIGHT_BITS_TARGET = {
    7: "any x86-64 CPU (7-bit weights: no u8s8 saturation without VNNI)",
    8: "CPUs with VNNI only (full-range weights saturate in int16 on AVX2-only CPUs)",
}


class _FaceBatches:
    """``CalibrationDataReader`` over a float32 ``[N, 3, H, W]`` array, in fixed-size batches."""

    def __init__(self, input_name: str, x: np.ndarray, batch_size: int) -> None:
        self.input_name = input_name
        self.batches = [np.ascontiguousarray(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
        self.pos = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.pos >= len(self.batches):
            return None
        self.pos += 1
        return {self.input_name: self.batches[self.pos - 1]}

    def rewind(self) -> None:
        self.pos = 0


def _input_name(model: onnx.ModelProto) -> str:
    names = [i.name for i in data_inputs(model)]
    if len(names) != 1:
        raise ValueError(f"expected one data input, found {names}")
    return names[0]


def _write_atomically(model: onnx.ModelProto, dst: Path) -> Path:
    with atomic_path(dst) as tmp:
        onnx.save(model, str(tmp))
    return dst


@contextlib.contextmanager
def _quiet_root_logger(level: int = logging.WARNING) -> Iterator[None]:
    """Raise the root logger's level for the duration (onnxruntime logs to the root logger)."""
    root = logging.getLogger()
    old = root.level
    root.setLevel(max(level, old))
    try:
        yield
    finally:
        root.setLevel(old)


# --------------------------------------------------------------------------------------------
# int8 graph passes (fp32 in, fp32 out, exact in real arithmetic; see the module docstring)
# --------------------------------------------------------------------------------------------
# (``split_prelus`` is in ``fetoolkit.backends.prelu``, with the other PReLU forms.)


#: Ops a per-channel positive scale passes through unchanged (f(s*x) = s*f(x) per channel).
_HOMOGENEOUS = ("Relu", "PRelu", "LeakyRelu", "Mul", "Add")


def _is_scale_conv(node: onnx.NodeProto, consts: dict[str, np.ndarray]) -> bool:
    """True for a bias-free, unpadded, stride-1 1x1 depthwise Conv: ``y[:, c] = w_c * x[:, c]``."""
    if node.op_type != "Conv" or len(node.input) != 2 or node.input[1] not in consts:
        return False
    w = consts[node.input[1]]
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    return (
        w.ndim == 4
        and w.shape[1:] == (1, 1, 1)
        and int(attrs.get("group", 1)) == w.shape[0]
        and not any(int(v) for v in attrs.get("pads", []))
        and all(int(v) == 1 for v in (*attrs.get("strides", []), *attrs.get("dilations", [])))
    )


def _regions(model: onnx.ModelProto, consts: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """Tensors that flow from Convs to Convs through positively homogeneous per-channel ops.

    Each region: ``sink_input`` (the tensor the consuming Convs read), ``sinks``,
    ``producers`` (Convs whose outputs enter the region) and ``tensors`` (all of the region's
    tensors, producers' outputs included). Found backwards from every Conv's data input.
    """
    g = model.graph
    nodes_now = list(g.node)
    producer, consumers = graph_maps(nodes_now)
    outputs = {o.name for o in g.output}
    regions: list[dict[str, Any]] = []
    seen: set[str] = set()
    for conv in nodes_now:
        if conv.op_type != "Conv" or conv.input[0] in seen:
            continue
        t = conv.input[0]
        seen.add(t)
        sinks = consumers.get(t, [])
        if any(
            s.op_type != "Conv"
            or s.input[0] != t
            or len(s.input) < 2
            or s.input[1] not in consts
            or consts[s.input[1]].ndim != 4
            for s in sinks
        ):
            continue
        tensors, producers, inner, stack, ok = {t}, [], [], [t], True
        while stack and ok:
            x = stack.pop()
            node = producer.get(x)
            if node is None or x in outputs:
                ok = False
            elif node.op_type == "Conv":
                ok = len(node.input) > 1 and node.input[1] in consts and consts[node.input[1]].ndim == 4
                producers.append(node)
            elif node.op_type not in _HOMOGENEOUS:
                ok = False
            else:
                inner.append(node)
                data = [i for i in node.input if i and i not in consts]
                if node.op_type == "Add":
                    ok = len(data) == 2
                elif node.op_type in ("Mul", "PRelu"):
                    const = [i for i in node.input if i and i in consts]
                    ok = (
                        len(data) == 1
                        and len(const) == 1
                        and (consts[const[0]].size == 1 or channel_vector(consts[const[0]]) is not None)
                    )
                for i in data:
                    if i not in tensors:
                        tensors.add(i)
                        stack.append(i)
        if ok:  # a bias-free 1x1 depthwise Conv reading a region tensor is a per-channel Mul inside it
            for p in [p for p in producers if p.input[0] in tensors and _is_scale_conv(p, consts)]:
                producers.remove(p)
                inner.append(p)
        if not ok or not producers:
            continue
        inner_ids = {id(n) for n in inner}
        if any(id(c) not in inner_ids for x in tensors - {t} for c in consumers.get(x, [])):
            continue  # a region tensor also feeds something outside the region
        regions.append({"sink_input": t, "sinks": sinks, "producers": producers, "tensors": sorted(tensors)})
    return regions


def _channel_extremes(
    model: onnx.ModelProto, x: np.ndarray, tensors: Sequence[str], batch_size: int = 8
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-channel ``(max relu(v), max relu(-v))`` of NCHW ``tensors`` over the faces ``x`` (onnxruntime, fp32).

    The reductions run inside the graph (``ReduceMax`` of ``v`` and of ``-v`` over all axes but
    1), so only ``[C]`` vectors come out, whatever the model's size. float64 ``[C]`` each, >= 0.
    """
    import onnxruntime as ort

    if not tensors:
        return {}
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    g = probe.graph
    del g.output[:]
    opset = opset_of(probe) or 13
    if opset >= 18:
        g.initializer.append(numpy_helper.from_array(np.array([0, 2, 3], np.int64), "_eq_axes"))
    for k, t in enumerate(tensors):
        g.node.append(helper.make_node("Neg", [t], [f"_eq_neg{k}"]))
        for v, out in ((t, f"_eq_max{k}"), (f"_eq_neg{k}", f"_eq_min{k}")):
            if opset >= 18:
                g.node.append(helper.make_node("ReduceMax", [v, "_eq_axes"], [out], keepdims=0))
            else:
                g.node.append(helper.make_node("ReduceMax", [v], [out], axes=[0, 2, 3], keepdims=0))
            g.output.append(helper.make_tensor_value_info(out, onnx.TensorProto.FLOAT, None))
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(probe.SerializeToString(), so, providers=["CPUExecutionProvider"])
    name = _input_name(model)
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for i in range(0, len(x), batch_size):
        values = sess.run(None, {name: x[i : i + batch_size]})
        for k, t in enumerate(tensors):
            pos, neg = (np.maximum(np.asarray(v, np.float64).reshape(-1), 0.0) for v in values[2 * k : 2 * k + 2])
            if t in out:
                pos, neg = np.maximum(out[t][0], pos), np.maximum(out[t][1], neg)
            out[t] = (pos, neg)
    return out


def _channel_ranges(model: onnx.ModelProto, x: np.ndarray, tensors: Sequence[str]) -> dict[str, np.ndarray]:
    """Per-channel ``max |value|`` of NCHW ``tensors`` over the faces ``x``: float64 ``[C]`` each."""
    return {t: np.maximum(pos, neg) for t, (pos, neg) in _channel_extremes(model, x, tensors).items()}


def equalize_channels(model: onnx.ModelProto, calibration: np.ndarray) -> int:
    """Cross-layer equalisation of per-channel activation ranges (in place); returns the regions scaled.

    See the module docstring. ``calibration``: float32 ``[N, 3, H, W]`` preprocessed faces.
    """
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    consts = {k: numpy_helper.to_array(v) for k, v in inits.items()}
    regions = _regions(model, consts)
    if not regions:
        return 0
    ranges = _channel_ranges(model, calibration, sorted({t for r in regions for t in r["tensors"]}))
    _, consumers = graph_maps(g.node)
    done = 0
    for reg in regions:
        r = np.max([ranges[t] for t in reg["tensors"]], axis=0)
        c = len(r)
        params = [p.input[k] for p in reg["producers"] for k in (1, 2) if len(p.input) > k and p.input[k]]
        params += [s.input[1] for s in reg["sinks"]]
        if len(set(params)) != len(params) or any(len(consumers.get(n, [])) != 1 or n not in consts for n in params):
            continue  # a shared weight would be scaled twice
        if any(consts[p.input[1]].shape[0] != c for p in reg["producers"]):
            continue
        places = [input_channel_slices(s, consts[s.input[1]], c) for s in reg["sinks"]]
        if any(p is None for p in places):
            continue
        alive = r > 1e-6 * r.max() if r.max() > 0 else np.zeros(c, bool)
        if not alive.any():
            continue
        depthwise = all(consts[s.input[1]].shape[1] == 1 for s in reg["sinks"])
        if depthwise:  # each output channel reads one input channel: its weight scale absorbs s
            s = r
        else:  # balance the activation range against the weight range it moves into
            wcol = np.zeros(c)
            for sink, where in zip(reg["sinks"], places):
                w = np.abs(consts[sink.input[1]])
                for ch, (rows, col) in enumerate(where):  # type: ignore[union-attr]
                    wcol[ch] = max(wcol[ch], float(w[rows, col].max()))
            alive &= wcol > 0
            if not alive.any():
                continue
            s = np.sqrt(r / np.where(wcol > 0, wcol, 1.0))
        s = np.where(alive, s, 1.0)
        s = np.where(alive, s / np.exp(np.log(s[alive]).mean()), 1.0)
        for p in reg["producers"]:
            w = consts[p.input[1]].astype(np.float64) / s.reshape(-1, 1, 1, 1)
            consts[p.input[1]] = w.astype(np.float32)
            if len(p.input) > 2 and p.input[2]:
                consts[p.input[2]] = (consts[p.input[2]].astype(np.float64) / s).astype(np.float32)
        for sink, where in zip(reg["sinks"], places):
            w = consts[sink.input[1]].astype(np.float64)
            for ch, (rows, col) in enumerate(where):  # type: ignore[union-attr]
                w[rows, col] *= s[ch]
            consts[sink.input[1]] = w.astype(np.float32)
        for name in params:
            inits[name].CopyFrom(numpy_helper.from_array(consts[name], name))
        done += 1
    return done


def _check_same_outputs(a: onnx.ModelProto, b: onnx.ModelProto, x: np.ndarray, what: str) -> float:
    """Min cosine between the outputs of two fp32 graphs on ``x``; raises below 0.9999."""
    import onnxruntime as ort

    from fetoolkit.backends.onnx_backend import session_options
    from fetoolkit.metrics.parity import embedding_agreement

    outs = []
    for m in (a, b):
        sess = ort.InferenceSession(m.SerializeToString(), session_options(), providers=["CPUExecutionProvider"])
        outs.append(sess.run(None, {_input_name(m): x})[0].reshape(len(x), -1).astype(np.float64))
    cos = embedding_agreement(outs[0], outs[1]).cosine_min
    if not cos >= 0.9999:
        raise RuntimeError(f"int8 graph pass {what} changed the fp32 outputs (min cosine {cos:.6f}): a bug")
    return cos


def quantize_int8(
    src: str | Path,
    dst: str | Path,
    calibration: np.ndarray,
    *,
    describe: str,
    method: CalibrationMethodName = "minmax",
    per_channel: bool = True,
    batch_size: int = 8,
    nodes_to_exclude: Sequence[str] = (),
    split_prelu: bool = True,
    one_pass: bool = True,
    equalize: bool = True,
    weight_bits: WeightBits = 7,
) -> Path:
    """Static QDQ int8 quantisation of an fp32 ONNX file, calibrated on real faces.

    The recipe (defaults; see the module docstring for why and for the figures): the exact fp32
    passes ``split_prelus``, ``one_pass_prelus`` and ``equalize_channels`` (the last two read the
    calibration faces), then
    onnxruntime ``quantize_static``: QDQ, per-channel symmetric int8 weights in a 7-bit range
    (``weight_bits``), per-tensor uint8 activations with MinMax ranges.

    Args:
        src: the fp32 ``.onnx`` (its ``metadata_props`` are carried over).
        dst: the int8 ``.onnx`` to write.
        calibration: float32 ``[N, 3, H, W]``: real aligned faces already preprocessed with the
            model's contract (``contract.preprocess(faces)``), N >= 1.
        describe: which faces calibrate, in words (recorded in the file and in reports).
        method: activation-range calibration: ``minmax``, ``entropy`` or ``percentile``.
        per_channel: per-output-channel weight scales (recommended).
        batch_size: faces per calibration forward pass.
        nodes_to_exclude: node names to leave in float32 (names after the passes: a split
            PReLU's nodes are named after its output tensor, ``<T>_split_*`` or ``<T>_onepass_*``).
        split_prelu: run ``split_prelus`` first (recommended: faster and more accurate).
        one_pass: then rewrite the split PReLUs in one-pass form (recommended: faster, same accuracy).
        equalize: run ``equalize_channels`` first (recommended: it is what keeps the sirius
            MobileFaceNet's accuracy).
        weight_bits: 7 (default: the same results on every x86-64 CPU) or 8 (full int8 range:
            only for CPUs with VNNI; on AVX2-only CPUs onnxruntime's u8s8 kernels saturate;
            see ``fetoolkit.backends.onnx_backend.WEIGHT_BITS_DOC``). Recorded in the file with the
            CPU it was quantised on.

    Returns:
        ``dst``.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    src, dst = Path(src), Path(dst)
    if weight_bits not in (7, 8):
        raise ValueError(f"weight_bits must be 7 or 8, got {weight_bits!r}")
    calibration = np.asarray(calibration)
    if calibration.dtype != np.float32 or calibration.ndim != 4 or len(calibration) == 0:
        raise ValueError(
            f"calibration must be float32 [N, C, H, W] with N >= 1, got {calibration.dtype} {list(calibration.shape)}"
        )
    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    if method not in methods:
        raise ValueError(f"calibration method must be one of {sorted(methods)}, got {method!r}")
    source = onnx.load(str(src))
    graph = onnx.ModelProto()
    graph.CopyFrom(source)
    n_split_here = split_prelus(graph) if split_prelu else 0
    n_one_pass = 0
    if one_pass:  # the form of each channel chosen from its ranges on the calibration faces
        n_one_pass = one_pass_prelus(graph, _channel_extremes(graph, calibration, split_prelu_inputs(graph)))
    # PReLUs in split or one-pass form, whether rewritten here or by the fp32 export (split is its default)
    n_split = sum(1 for n in graph.graph.node if n.op_type == "Add" and n.name.endswith(("_split_add", "_onepass_add")))
    n_equalized = equalize_channels(graph, calibration) if equalize else 0
    if n_split_here or n_one_pass or n_equalized:
        _check_same_outputs(source, graph, calibration[:32], "split_prelus/one_pass_prelus/equalize_channels")
    reader = _FaceBatches(_input_name(source), calibration, batch_size)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dst.parent, prefix=".quant-") as tmp:
        prepared = Path(tmp) / "fp32.onnx"
        onnx.save(graph, str(prepared))
        del graph
        out = Path(tmp) / "int8.onnx"
        with _quiet_root_logger(logging.ERROR):  # onnxruntime.quantization logs an INFO line per adjusted scale
            quantize_static(
                str(prepared),
                str(out),
                reader,
                quant_format=QuantFormat.QDQ,
                per_channel=per_channel,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                reduce_range=weight_bits == 7,
                calibrate_method=methods[method],
                nodes_to_exclude=list(nodes_to_exclude),
            )
        model = onnx.load(str(out))
    machine = machine_info()
    info: dict[str, Any] = {
        "n_faces": int(len(calibration)),
        "faces": describe,
        "method": method,
        "per_channel": per_channel,
        "format": "QDQ",
        "activations": "uint8",
        "weights": "int8",
        "nodes_excluded": list(nodes_to_exclude),
        "prelus_split": n_split,
        "prelus_one_pass": n_one_pass,
        "regions_equalized": n_equalized,
        "weight_bits": weight_bits,
        "kernels": WEIGHT_BITS_TARGET[weight_bits],
        "quantized_on": {k: machine[k] for k in ("cpu", "isa", "isa_masked", "int8_kernels")},
    }
    set_metadata(model, {p.key: p.value for p in source.metadata_props})
    set_metadata(model, {META_PRECISION: "int8", META_CALIBRATION: json.dumps(info, sort_keys=True)})
    onnx.checker.check_model(model)
    _write_atomically(model, dst)
    log.info(
        "wrote int8 %s (calibrated on %d faces: %s; %d PReLUs split, %d regions equalised)",
        dst,
        len(calibration),
        describe,
        n_split,
        n_equalized,
    )
    return dst


def convert_fp16(src: str | Path, dst: str | Path) -> Path:
    """float16 weights and compute, float32 input/output; metadata carried over.

    Returns:
        ``dst``.
    """
    from onnxruntime.transformers.float16 import convert_float_to_float16

    src, dst = Path(src), Path(dst)
    source = onnx.load(str(src))
    meta = {p.key: p.value for p in source.metadata_props}
    model = convert_float_to_float16(source, keep_io_types=True, disable_shape_infer=False)
    toposort(model.graph)  # the converter appends its input Casts after their consumers
    set_metadata(model, meta)
    set_metadata(model, {META_PRECISION: "fp16"})
    onnx.checker.check_model(model)
    _write_atomically(model, dst)
    log.info("wrote fp16 %s", dst)
    return dst
