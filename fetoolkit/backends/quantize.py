"""fp16 and int8 variants of an exported fp32 ONNX face model, metadata kept.

* ``int8``: onnxruntime *static* quantisation, QDQ format, per-channel int8 weights, uint8
  activations whose ranges are calibrated on REAL aligned faces (the caller passes them,
  already preprocessed). Dynamic quantisation is not offered: it ran 3-4x slower than fp32
  here, and random calibration images ruin the accuracy (``/work/shared/ASSETS.md``).
* ``fp16``: every float32 initializer and op in float16 (``onnxruntime.transformers.float16``),
  input and output kept float32 so the contract's preprocessing is unchanged.

Both copy the source file's ``metadata_props`` (contract, model, embedding size, source
sha256) and set ``fetoolkit.precision``; int8 also records ``fetoolkit.calibration`` (JSON: how
many faces, which ones, the calibration method), so a variant runs in ``OnnxEmbedder`` with no
flags and says what it is.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx

from fetoolkit.backends.export import META_PRECISION, set_metadata

log = logging.getLogger(__name__)

META_CALIBRATION = "fetoolkit.calibration"

Precision = Literal["fp32", "fp16", "int8"]
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8")
CalibrationMethodName = Literal["minmax", "entropy", "percentile"]


class _FaceBatches:
    """``CalibrationDataReader`` over a float32 ``[N, 3, H, W]`` array, in fixed-size batches."""

    def __init__(self, input_name: str, x: np.ndarray, batch_size: int) -> None:
        self.input_name = input_name
        self.batches = [np.ascontiguousarray(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
        self.pos = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.pos >= len(self.batches):
            return None
        self.pos += 1
        return {self.input_name: self.batches[self.pos - 1]}

    def rewind(self) -> None:
        self.pos = 0


def _input_name(model: onnx.ModelProto) -> str:
    inits = {i.name for i in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in inits]
    if len(names) != 1:
        raise ValueError(f"expected one data input, found {names}")
    return names[0]


def _write_atomically(model: onnx.ModelProto, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".part")
    os.close(fd)
    try:
        onnx.save(model, tmp)
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
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


def quantize_int8(src: str | Path, dst: str | Path, calibration: np.ndarray, *, describe: str,
                  method: CalibrationMethodName = "minmax", per_channel: bool = True, batch_size: int = 8,
                  nodes_to_exclude: Sequence[str] = ()) -> Path:
    """Static QDQ int8 quantisation of an fp32 ONNX file, calibrated on real faces.

    Args:
        src: the fp32 ``.onnx`` (its ``metadata_props`` are carried over).
        dst: the int8 ``.onnx`` to write.
        calibration: float32 ``[N, 3, H, W]``: real aligned faces already preprocessed with the
            model's contract (``contract.preprocess(faces)``), N >= 1.
        describe: which faces calibrate, in words (recorded in the file and in reports).
        method: activation-range calibration: ``minmax``, ``entropy`` or ``percentile``.
        per_channel: per-output-channel weight scales (recommended).
        batch_size: faces per calibration forward pass.
        nodes_to_exclude: node names to leave in float32.

    Returns:
        ``dst``.
    """
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    src, dst = Path(src), Path(dst)
    calibration = np.asarray(calibration)
    if calibration.dtype != np.float32 or calibration.ndim != 4 or len(calibration) == 0:
        raise ValueError(f"calibration must be float32 [N, C, H, W] with N >= 1, got {calibration.dtype} "
                         f"{list(calibration.shape)}")
    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    if method not in methods:
        raise ValueError(f"calibration method must be one of {sorted(methods)}, got {method!r}")
    source = onnx.load(str(src))
    reader = _FaceBatches(_input_name(source), calibration, batch_size)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dst.parent, prefix=".quant-") as tmp:
        out = Path(tmp) / "int8.onnx"
        with _quiet_root_logger(logging.ERROR):  # onnxruntime.quantization logs an INFO line per adjusted scale
            quantize_static(str(src), str(out), reader, quant_format=QuantFormat.QDQ, per_channel=per_channel,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=methods[method], nodes_to_exclude=list(nodes_to_exclude))
        model = onnx.load(str(out))
    info: dict[str, Any] = {"n_faces": int(len(calibration)), "faces": describe, "method": method,
                            "per_channel": per_channel, "format": "QDQ", "activations": "uint8",
                            "weights": "int8", "nodes_excluded": list(nodes_to_exclude)}
    set_metadata(model, {p.key: p.value for p in source.metadata_props})
    set_metadata(model, {META_PRECISION: "int8", META_CALIBRATION: json.dumps(info, sort_keys=True)})
    onnx.checker.check_model(model)
    _write_atomically(model, dst)
    log.info("wrote int8 %s (calibrated on %d faces: %s)", dst, len(calibration), describe)
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
