"""Measuring tools of the speed benchmark (``python -m fetoolkit.bench``): timing loops, the
physical matmul peak, MAC counts of an ONNX graph, onnxruntime sessions and the timed variants,
and the naive TFLite->ONNX conversion the export is compared with.

The benchmark job (``fetoolkit.jobs.bench``) composes them; nothing here writes results.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn as nn

from fetoolkit.backends.onnx_graph import data_inputs

log = logging.getLogger(__name__)

# node names of the 1x1 depthwise Convs that write a PReLU: split_prelus's two, one_pass_prelus's one
PRELU_CONV_SUFFIXES = ("_split_lin", "_split_pre", "_onepass_pre")


# --------------------------------------------------------------------------------------------
# Peak and FLOPs
# --------------------------------------------------------------------------------------------


def _times(fn: Callable[[], object], seconds: float, max_reps: int, min_reps: int = 1) -> list[float]:
    """Seconds of each timed call of ``fn``: one warm-up call, then calls until ``seconds`` pass
    (at least ``min_reps``, at most ``max_reps``)."""
    fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_reps or (len(times) < max_reps and time.perf_counter() - start < seconds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def peak_operands(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)


def matmul_peak(threads: int, n: int = 2048, seconds: float = 1.0, max_reps: int = 10) -> dict[str, float]:
    """fp32 sgemm GFLOP/s (``2 n^3`` per call) in torch and numpy on ``threads`` threads.

    The fastest call counts (a peak: what the machine can do when nothing else runs).

    Returns ``{"torch": g, "numpy": g, "peak": max}`` (numpy is left out without threadpoolctl).
    """
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    flop = 2.0 * n**3
    out: dict[str, float] = {}
    torch.set_num_threads(threads)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    out["torch"] = flop / min(_times(lambda: torch.mm(ta, tb), seconds, max_reps, min_reps=3)) / 1e9
    try:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=threads, user_api="blas"):
            out["numpy"] = flop / min(_times(lambda: a @ b, seconds, max_reps, min_reps=3)) / 1e9
    except ImportError:
        log.info("threadpoolctl missing: numpy sgemm not measured")
    out["peak"] = max(out.values())
    return out


def _dims(vi: Any) -> list[int | str]:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in vi.type.tensor_type.shape.dim]


def count_macs(model: onnx.ModelProto) -> dict[str, int]:
    """Multiply-adds per face of every Conv/ConvInteger/QLinearConv and Gemm/MatMul.

    The 1x1 depthwise Convs of a split or one-pass PReLU (``fetoolkit.backends.prelu``) are
    the activation, counted as no more than the ``Mul`` nodes of the other PReLU forms: not at all.

    The data input's batch axis is set to 1 and ONNX shape inference gives every output shape.

    Returns:
        ``{"conv": macs, "gemm": macs, "total": macs}``.
    """
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for inp in data_inputs(m):
        dims = inp.type.tensor_type.shape.dim
        if dims:
            dims[0].ClearField("dim_param")
            dims[0].dim_value = 1
    m = onnx.shape_inference.infer_shapes(m)
    shapes: dict[str, list[int | str]] = {i.name: list(i.dims) for i in m.graph.initializer}
    for vi in [*m.graph.value_info, *m.graph.input, *m.graph.output]:
        shapes[vi.name] = _dims(vi)
    conv = gemm = 0
    for node in m.graph.node:
        if node.op_type in ("Conv", "ConvInteger", "QLinearConv") and node.name.endswith(PRELU_CONV_SUFFIXES):
            continue  # a PReLU written as 1x1 depthwise Convs (export's split form): elementwise, not the model's
        if node.op_type in ("Conv", "ConvInteger", "QLinearConv"):
            w_name = node.input[3] if node.op_type == "QLinearConv" else node.input[1]
            w, y = shapes.get(w_name), shapes.get(node.output[0])
            if not w or not y or not all(isinstance(d, int) for d in [*w, *y]):
                raise ValueError(f"no static shape for {node.op_type} node {node.name!r}")
            # y: [N, Cout, H, W]; w: [Cout, Cin/group, kh, kw]
            conv += int(np.prod(y)) * int(np.prod(w[1:]))
        elif node.op_type in ("Gemm", "MatMul", "MatMulInteger", "QLinearMatMul"):
            a_name = node.input[0]
            y = shapes.get(node.output[0])
            a = shapes.get(a_name)
            if not y or not a or not all(isinstance(d, int) for d in [*y, *a]):
                raise ValueError(f"no static shape for {node.op_type} node {node.name!r}")
            k = a[0] if node.op_type == "Gemm" and any(x.name == "transA" and x.i for x in node.attribute) else a[-1]
            gemm += int(np.prod(y)) * int(k)
    return {"conv": conv, "gemm": gemm, "total": conv + gemm}


# --------------------------------------------------------------------------------------------
# Runners
# --------------------------------------------------------------------------------------------


def ort_session(path: str | Path, threads: int) -> Any:
    """An onnxruntime CPU session on ``threads`` intra-op threads, as ``OnnxEmbedder`` opens it."""
    import onnxruntime as ort

    from fetoolkit.backends.onnx_backend import prune_unused_inputs, session_options

    model = onnx.load(str(path))
    source: str | bytes = str(path)
    if prune_unused_inputs(model):
        source = model.SerializeToString()
    return ort.InferenceSession(source, session_options(threads), providers=["CPUExecutionProvider"])


@dataclass
class Variant:
    """One thing to time: a torch module or an ONNX file.

    Attributes:
        engine: ``torch`` (eager) or ``onnxruntime``.
        label: ``fp32``, ``int8``, ``vendor``, ``naive``.
        module: the torch module (engine torch).
        path: the ONNX file (engine onnxruntime).
        fixed_batch: the file's fixed batch size, or None.
        note: where it came from.
    """

    engine: str
    label: str
    module: nn.Module | None = None
    path: Path | None = None
    fixed_batch: int | None = None
    note: str = ""


def make_call(v: Variant, x: np.ndarray, threads: int, batch: int) -> tuple[Callable[[], object], int]:
    """A zero-argument call running ``v`` on ``threads`` threads, and the batch it runs.

    A fixed-batch file runs at its own batch whatever ``batch`` asks for.
    """
    run_batch = v.fixed_batch or batch
    xb = np.ascontiguousarray(np.resize(x, (run_batch, *x.shape[1:])) if len(x) < run_batch else x[:run_batch])
    if v.engine == "torch":
        assert v.module is not None
        module = v.module
        t = torch.from_numpy(xb)

        def call() -> object:
            torch.set_num_threads(threads)
            with torch.inference_mode():
                return module(t)

        return call, run_batch
    assert v.path is not None
    sess = ort_session(v.path, threads)
    name = sess.get_inputs()[0].name
    return (lambda: sess.run(None, {name: xb})), run_batch


def time_group(
    calls: dict[str, Callable[[], object]], seconds: float, max_reps: int, min_reps: int = 3, rewarm_s: float = 0.25
) -> dict[str, list[float]]:
    """Time several calls side by side: one warm-up each, then round robins of one call each.

    Round robins continue until ``seconds`` per call have passed in total (at least
    ``min_reps``, at most ``max_reps``), so every call sees the same background load (these
    machines are shared). A call shorter than ``rewarm_s`` is run once untimed right before
    its timed run, so its weights are back in cache (the other calls of the round evict them;
    a service calls one model back to back). Returns ``{name: [seconds of each timed call]}``.
    """
    last: dict[str, float] = {}
    for k, fn in calls.items():
        t0 = time.perf_counter()
        fn()
        last[k] = time.perf_counter() - t0
    times: dict[str, list[float]] = {k: [] for k in calls}
    start = time.perf_counter()
    for rep in range(max(max_reps, min_reps)):
        for k, fn in calls.items():
            if last[k] < rewarm_s:
                fn()
            t0 = time.perf_counter()
            fn()
            last[k] = time.perf_counter() - t0
            times[k].append(last[k])
        if rep + 1 >= min_reps and time.perf_counter() - start >= seconds * len(calls):
            break
    return times


def naive_arcface(tflite: Path, module: nn.Module, out: Path) -> tuple[Path, int | None, str]:
    """The vendor TFLite converted naively to ONNX (tflite2onnx), or our module with the naive PReLU.

    Returns (path, fixed batch or None, how it was made).
    """
    try:
        import tflite2onnx

        tflite2onnx.convert(str(tflite), str(out))
        m = onnx.load(str(out))
        inp = [i for i in m.graph.input if i.name not in {t.name for t in m.graph.initializer}][0]
        fixed = inp.type.tensor_type.shape.dim[0].dim_value or None
        ops = sorted({n.op_type for n in m.graph.node})
        return out, fixed, f"tflite2onnx of the vendor TFLite (ops {ops})"
    except Exception as e:  # not installed, or it fails on this file
        log.warning("tflite2onnx unavailable (%s): exporting our module with a naive PReLU instead", e)
    import copy

    class NaivePReLU(nn.Module):
        def __init__(self, alpha: torch.Tensor) -> None:
            super().__init__()
            self.register_buffer("alpha", alpha.detach().reshape(1, -1, 1, 1).clone())

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(x) + self.alpha * (x - torch.abs(x)) * 0.5

    naive = copy.deepcopy(module).eval()
    for _, sub in list(naive.named_modules()):
        for child_name, child in list(sub.named_children()):
            if isinstance(child, nn.PReLU):
                setattr(sub, child_name, NaivePReLU(child.weight))
    with torch.no_grad():
        torch.onnx.export(
            naive,
            (torch.zeros(2, 3, 112, 112),),
            str(out),
            input_names=["input"],
            output_names=["embedding"],
            opset_version=17,
            dynamo=False,
        )
    return out, 2, "our module exported with PReLU as relu(x) + a*(x-|x|)*0.5 (tflite2onnx unavailable)"
