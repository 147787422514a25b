"""Parity job: ``python -m fetoolkit.parity model=arcface``.

Runs one model three ways on the same real aligned faces (ORL, all 400 images, through the
project pipeline ``fetoolkit.pipeline.crop_images``):

* the reference: our PyTorch module (``create_embedder(..., backend="torch")``);
* our ONNX export (written into the run directory at ``precision``, or the file given as
  ``onnx=PATH``), run by ``OnnxEmbedder`` with the contract read from the file;
* the vendor's original file where the registry names one: the TFLite graph of ``arcface``
  through ``ai_edge_litert`` (its batch is fixed at 2: padded), the ONNX graph of
  ``mobilefacenet512`` through onnxruntime with the registry's contract.

For each candidate it writes into ``parity.json`` (Hydra run dir): per-face cosine (min, mean),
max |diff|, decisions flipped at the eval threshold (the reference's k-fold
``best_threshold``) over the k-fold and the all-pairs ROC sets, and the change in TAR@FAR=1e-3
and in 10-fold accuracy. The maths is in :mod:`fetoolkit.metrics.parity`. The job exits 1 when a
candidate breaks its tolerance (``tolerance.fp32`` for fp32 exports and vendor files: min
cosine 0.9999, no flipped decision).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig

from fetoolkit.agreement import FAR, compare, reference_from, tolerance_from
from fetoolkit.aligned import align_dataset, embed_set
from fetoolkit.backends.common import batches, l2_normalize
from fetoolkit.backends.onnx_backend import OnnxEmbedder
from fetoolkit.cli_args import USER_ERRORS, hydra_job, user_error_exit
from fetoolkit.config import pipeline_cfg
from fetoolkit.cpu import machine_info
from fetoolkit.jsonutil import jsonable
from fetoolkit.models.factory import create_embedder, resolve_weights
from fetoolkit.models.registry import ModelSpec, get_model_spec
from fetoolkit.types import Embedder, InputContract
from fetoolkit.versions import library_versions

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# Faces
# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# The vendor's TFLite file
# --------------------------------------------------------------------------------------------


class TFLiteEmbedder:
    """Runs a TFLite face model with ``ai_edge_litert`` (test/parity only).

    The file's batch size is fixed (2 for the sirius MobileFaceNet) and resizing fails in its
    RESHAPE, so faces go in batches of that size, the last one padded with copies of its last
    face. ``embed_raw``: uint8 RGB ``[N, H, W, 3]`` -> float32 ``[N, D]``.
    """

    backend = "tflite"

    def __init__(self, path: str | Path, contract: InputContract, *, name: str, num_threads: int | None = None) -> None:
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as e:  # a dev dependency
            raise ImportError("running the vendor TFLite file needs ai-edge-litert (pip install -e '.[dev]')") from e
        self.path = Path(path)
        self.contract = contract
        self.name = name
        self.interpreter = Interpreter(model_path=str(self.path), num_threads=num_threads or 1)
        self.interpreter.allocate_tensors()
        self._inp = self.interpreter.get_input_details()[0]
        self._out = self.interpreter.get_output_details()[0]
        self.fixed_batch = int(self._inp["shape"][0])

    def embed_raw(self, faces: np.ndarray) -> np.ndarray:
        x = self.contract.preprocess(faces)
        n, b = len(x), self.fixed_batch
        pad = (-n) % b
        if pad:
            x = np.concatenate([x, np.repeat(x[-1:], pad, axis=0)])
        out = []
        for s in batches(len(x), b):
            self.interpreter.set_tensor(self._inp["index"], np.ascontiguousarray(x[s], np.float32))
            self.interpreter.invoke()
            out.append(self.interpreter.get_tensor(self._out["index"]).reshape(b, -1).copy())
        return np.concatenate(out)[:n].astype(np.float32)

    def embed(self, faces: np.ndarray) -> np.ndarray:
        return l2_normalize(self.embed_raw(faces))


def vendor_embedder(spec: ModelSpec, num_threads: int | None = None) -> Embedder | None:
    """The vendor's original file run as the vendor ships it, or None when there is none here.

    ``tflite``: NHWC with the registry contract's colour order and normalisation; ``onnx``:
    onnxruntime with the registry contract (vendor files carry no fetoolkit metadata).
    """
    if spec.vendor_format is None or spec.weights is None:
        return None
    path, _ = resolve_weights(spec, None)
    if spec.vendor_format == "tflite":
        nhwc = InputContract(**{**spec.contract.to_dict(), "layout": "NHWC"})
        return TFLiteEmbedder(path, nhwc, name=f"{spec.name} (vendor tflite)", num_threads=num_threads)
    if spec.vendor_format == "onnx":
        return OnnxEmbedder(path, spec.contract, name=f"{spec.name} (vendor onnx)", num_threads=num_threads)
    raise ValueError(f"{spec.name}: unknown vendor format {spec.vendor_format!r}")


# --------------------------------------------------------------------------------------------
# Comparison
# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# The job
# --------------------------------------------------------------------------------------------


def run(cfg: DictConfig, out_dir: Path | None = None) -> dict[str, Any]:
    """Compare torch, our ONNX export and the vendor file for ``cfg.model``; write parity.json.

    Returns the dict written to ``out_dir / "parity.json"``; its ``pass`` is False when any
    candidate broke its tolerance.
    """
    from fetoolkit.aligned import calibration_faces
    from fetoolkit.models.variants import export_variant

    if cfg.num_threads:
        torch.set_num_threads(int(cfg.num_threads))
    spec = get_model_spec(cfg.model.name)
    if spec.arch is None:
        raise ValueError(
            f"{spec.name} has no PyTorch module, so there is no torch reference to compare "
            f"its ONNX file with: run `python -m fetoolkit.eval model=... backend=onnx` instead"
        )
    weights = cfg.model.get("weights")
    precision = str(cfg.precision)
    work = Path(out_dir) if out_dir is not None else Path.cwd()
    work.mkdir(parents=True, exist_ok=True)

    torch_emb = create_embedder(spec.name, weights=weights, backend="torch", batch_size=cfg.pipeline.batch_size)
    aligned = align_dataset(cfg, size=torch_emb.contract.size)
    pipe = pipeline_cfg(cfg)
    ref = reference_from(embed_set(torch_emb, aligned, pipe), aligned)
    log.info("reference (torch): k-fold best threshold %.4f", ref.best_threshold)

    candidates: dict[str, dict[str, Any]] = {}
    held_out = None
    if cfg.get("onnx"):
        onnx_path = Path(cfg.onnx)
    else:
        calib, describe = None, ""
        if precision == "int8":
            calib, describe, held_out = calibration_faces(aligned, cfg.calibration, torch_emb.contract)
        onnx_path = export_variant(
            spec.name,
            weights=weights,
            out=work / f"{spec.name}.{precision}.onnx",
            precision=precision,
            prelu=cfg.prelu,
            opset=cfg.opset,
            calibration=calib,
            calibration_describe=describe,
            weight_bits=int(cfg.quantize.weight_bits),
            int8_prelu=str(cfg.quantize.prelu),
        )
    onnx_emb = OnnxEmbedder(onnx_path, num_threads=cfg.num_threads, batch_size=cfg.pipeline.batch_size)
    file_precision = _precision_of(onnx_path)
    res = compare(ref, embed_set(onnx_emb, aligned, pipe), aligned, tolerance_from(cfg, file_precision), held_out)
    candidates["onnx_export"] = {"path": str(onnx_path), "backend": "onnx", "precision": file_precision, **res}

    if cfg.vendor and weights is None:
        vendor = vendor_embedder(spec, cfg.num_threads)
        if vendor is not None:
            res = compare(ref, embed_set(vendor, aligned, pipe), aligned, tolerance_from(cfg, "fp32"))
            candidates[f"vendor_{vendor.backend}"] = {
                "path": str(getattr(vendor, "path", "")),
                "backend": vendor.backend,
                "precision": "fp32",
                **res,
            }
    elif cfg.vendor:
        log.info("model.weights is set: the vendor file is not compared")

    summary: dict[str, Any] = {
        "model": spec.name,
        "weights_sha256": torch_emb.weights_sha256,
        "dataset": aligned.data.name,
        "n_images": len(aligned.data.paths),
        "n_enrolled": int(aligned.ok.sum()),
        "fte_images": sorted(aligned.crops.failures.values()),
        "far": FAR,
        "reference": {
            "backend": "torch",
            "best_threshold": ref.best_threshold,
            "n_kfold_pairs": len(ref.kfold),
            "n_roc_pairs": len(ref.roc),
        },
        "candidates": candidates,
        "pass": all(c["pass"] for c in candidates.values()),
        "versions": library_versions(),
        "machine": machine_info(cfg.num_threads),
    }
    if out_dir is not None:
        (Path(out_dir) / "parity.json").write_text(json.dumps(jsonable(summary), indent=2, allow_nan=False) + "\n")
    log.info("\n%s", format_summary(summary))
    return summary


def _precision_of(path: Path) -> str:
    from fetoolkit.backends.onnx_backend import read_metadata
    from fetoolkit.backends.onnx_graph import META_PRECISION

    return read_metadata(path).get(META_PRECISION, "fp32")


def format_summary(s: dict[str, Any]) -> str:
    """One line per candidate: cosine, flips, TAR and accuracy change, verdict."""
    lines = [
        f"  {s['model']} on {s['dataset']} ({s['n_enrolled']}/{s['n_images']} faces), "
        f"threshold {s['reference']['best_threshold']:.4f}"
    ]
    for name, c in s["candidates"].items():
        e, v, d = c["embeddings"], c["verification"], c["decisions"]
        tar = "n/a" if v["tar_delta"] is None else f"{v['tar_delta']:+.4f}"
        lines.append(
            f"  {name:<14} cos min {e['cosine_min']:.7f} (1-cos {1 - e['cosine_min']:.1e}) "
            f"mean {e['cosine_mean']:.7f}  max|diff| {e['max_abs_diff']:.2e}  "
            f"flipped {d['kfold']['n_flipped']}/{d['roc']['n_flipped']} (kfold/roc)  "
            f"dTAR@1e-3 {tar}  dACC {v['accuracy_delta']:+.4f}  "
            f"{'PASS' if c['pass'] else 'FAIL: ' + '; '.join(c['violations'])}"
        )
    return "\n".join(lines)


@hydra.main(version_base="1.3", config_path="../../configs", config_name="parity")
def main(cfg: DictConfig) -> None:
    out_dir = Path(hydra.core.hydra_config.HydraConfig.get().runtime.output_dir)
    try:
        summary = run(cfg, out_dir)
    except USER_ERRORS as e:  # bad weights, paths, settings: one line and the fix
        user_error_exit(e)
    log.info("wrote %s", out_dir / "parity.json")
    if not summary["pass"]:
        log.error(
            "parity FAILED: %s",
            "; ".join(f"{k}: {v}" for k, c in summary["candidates"].items() for v in c["violations"]),
        )
        sys.exit(1)


if __name__ == "__main__":
    hydra_job(main, "parity")
