"""``export_variant``: a registry model exported to ONNX at fp32, fp16 or int8."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from fetoolkit.backends.export import export_onnx
from fetoolkit.backends.quantize import PRECISIONS, convert_fp16, quantize_int8
from fetoolkit.hub import record_derived
from fetoolkit.models.factory import load_module, resolve_weights
from fetoolkit.models.registry import get_model_spec


def export_variant(
    name: str,
    *,
    weights: str | Path | None,
    out: str | Path,
    precision: str = "fp32",
    prelu: str = "split",
    opset: int = 17,
    calibration: np.ndarray | None = None,
    calibration_describe: str = "",
    calibration_method: str = "minmax",
    weight_bits: int = 7,
    int8_prelu: str = "one_pass",
) -> Path:
    """Export registry model ``name`` (weights: the record's default or ``weights``) to ``out``.

    Args:
        name: registry name or alias.
        weights: a weights file, or None for the record's default.
        out: destination ``.onnx``.
        precision: ``fp32``, ``fp16`` or ``int8``.
        prelu: PReLU form of the fp32 graph (``split``, ``decomposed`` or ``native``).
        opset: ONNX opset of the fp32 export.
        calibration: int8 only: float32 ``[N, 3, H, W]`` real aligned faces, preprocessed with
            the model's contract.
        calibration_describe: int8 only: which faces those are (recorded in the file).
        calibration_method: int8 only: ``minmax``, ``entropy`` or ``percentile``.
        weight_bits: int8 only: 7 (every x86-64 CPU) or 8 (VNNI CPUs only); see ``quantize_int8``.
        int8_prelu: int8 only: the PReLU form, ``one_pass`` (faster) or ``split``; see ``quantize_int8``.

    Returns:
        ``out``.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "int8" and calibration is None:
        raise ValueError("int8 needs calibration faces (real aligned faces, preprocessed)")
    if int8_prelu not in ("one_pass", "split"):
        raise ValueError(f"int8_prelu must be one_pass or split, got {int8_prelu!r}")
    spec = get_model_spec(name)
    path, sha = resolve_weights(spec, weights)
    module = load_module(spec, path, sha)
    out = Path(out)
    made_by = f"python -m fetoolkit.export model={spec.name} precision={precision} out={out}"
    if precision == "fp32":
        export_onnx(module, spec.contract, out, name=spec.name, source_sha256=sha, opset=opset, prelu=prelu)  # type: ignore[arg-type]
        record_derived(out, sha, made_by)
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".export-") as tmp:
        fp32 = export_onnx(
            module, spec.contract, Path(tmp) / "fp32.onnx", name=spec.name, source_sha256=sha, opset=opset, prelu=prelu
        )  # type: ignore[arg-type]
        del module
        if precision == "fp16":
            convert_fp16(fp32, out)
        else:
            assert calibration is not None
            quantize_int8(
                fp32,
                out,
                calibration,
                describe=calibration_describe,
                method=calibration_method,
                weight_bits=weight_bits,
                one_pass=int8_prelu == "one_pass",
            )
    record_derived(out, sha, made_by)  # size + sha256 of the file and of its weights, beside it
    return out
