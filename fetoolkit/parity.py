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
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from fetoolkit.backends.common import batches, l2_normalize
from fetoolkit.backends.onnx_backend import OnnxEmbedder
from fetoolkit.cpu import machine_info
from fetoolkit.data import EvalData, load_eval_data
from fetoolkit.detect.mtcnn import MTCNNDetector
from fetoolkit.eval import detector_cfg, pipeline_cfg
from fetoolkit.evaluate import keep_enrolled, pair_scores
from fetoolkit.metrics import parity as pm
from fetoolkit.models.factory import create_embedder, resolve_weights
from fetoolkit.models.registry import ModelSpec, get_model_spec
from fetoolkit.pipeline import Crops, PipelineCfg, embed_crops
from fetoolkit.types import Embedder, InputContract
from fetoolkit.versions import library_versions

log = logging.getLogger(__name__)

FAR = 1e-3


# --------------------------------------------------------------------------------------------
# Faces
# --------------------------------------------------------------------------------------------


@dataclass
class AlignedSet:
    """A data set's images aligned once, for every embedder of a run.

    Attributes:
        data: images and pair protocols.
        crops: aligned uint8 RGB crops ``[N, H, W, 3]`` and which images enrolled.
    """

    data: EvalData
    crops: Crops

    @property
    def ok(self) -> np.ndarray:
        """bool ``[N]``: images that enrolled."""
        return self.crops.ok

    @property
    def faces(self) -> np.ndarray:
        """uint8 ``[M, H, W, 3]`` crops of the enrolled images (M = ok.sum())."""
        return self.crops.faces[self.crops.ok]


def align_dataset(cfg: DictConfig, size: tuple[int, int] = (112, 112)) -> AlignedSet:
    """Load ``cfg.dataset`` and align every image with the project pipeline (MTCNN + 5 points).

    The crops go through the pipeline's on-disk crops cache (``cfg.cache``; shared with the
    eval job), so a second run does not detect again.
    """
    from fetoolkit.cache import EmbeddingCache
    from fetoolkit.pipeline import cached_crops, detector_settings

    data = load_eval_data(cfg.dataset, seed=cfg.seed)
    pipe = pipeline_cfg(cfg)
    dcfg = detector_cfg(cfg)
    cache_node = cfg.get("cache")
    cache = EmbeddingCache(cache_node.get("dir")) if cache_node is not None and cache_node.get("crops", True) else None
    crops, state = cached_crops(
        data.paths,
        pipe,
        images=getattr(data, "images", None),
        aligned=data.aligned,
        detector=lambda: MTCNNDetector(dcfg),
        size=size,
        cache=cache,
        detector_settings=detector_settings(dcfg),
    )
    log.info("%s: %d of %d images aligned (crops cache: %s)", data.name, int(crops.ok.sum()), len(data.paths), state)
    return AlignedSet(data, crops)


def select_images(paths: list[Path], ok: np.ndarray, names: list[str]) -> np.ndarray:
    """bool ``[N]``: enrolled images whose file name is in ``names`` (``["10.pgm"]``)."""
    wanted = set(names)
    return np.array([p.name in wanted for p in paths], bool) & ok


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


@dataclass
class Reference:
    """The reference's embeddings and scores on an aligned set.

    Attributes:
        raw: float32 ``[M, D]`` raw embeddings of the enrolled faces.
        emb: float32 ``[N, D]`` L2-normalised, NaN rows for failures to enrol.
        kfold / roc: the enrolled pairs; ``kfold_scores`` / ``roc_scores`` their cosines.
        best_threshold: the reference's k-fold ``best_threshold`` (the eval threshold).
    """

    raw: np.ndarray
    emb: np.ndarray
    kfold: Any
    roc: Any
    kfold_scores: np.ndarray
    roc_scores: np.ndarray
    best_threshold: float


def _full(raw: np.ndarray, ok: np.ndarray) -> np.ndarray:
    emb = np.full((len(ok), raw.shape[1]), np.nan, np.float32)
    emb[ok] = l2_normalize(raw)
    return emb


def embed_set(embedder: Embedder, aligned: AlignedSet, pipe: PipelineCfg) -> np.ndarray:
    """Raw float32 ``[M, D]`` embeddings of the enrolled faces (pipeline batches)."""
    return embed_crops(aligned.faces, embedder, pipe, raw=True)


def reference_from(raw: np.ndarray, aligned: AlignedSet) -> Reference:
    """Scores and the eval threshold of reference embeddings ``raw`` ``[M, D]``."""
    from fetoolkit.metrics import verification as vm

    emb = _full(raw, aligned.ok)
    kfold, _ = keep_enrolled(aligned.data.kfold, aligned.ok)
    roc, _ = keep_enrolled(aligned.data.roc, aligned.ok)
    ks, rs = pair_scores(emb, kfold), pair_scores(emb, roc)
    thr = vm.kfold_accuracy(ks, kfold.labels, kfold.folds).best_threshold
    return Reference(raw, emb, kfold, roc, ks, rs, float(thr))


def compare(
    ref: Reference,
    cand_raw: np.ndarray,
    aligned: AlignedSet,
    tol: pm.ParityTolerance,
    held_out: np.ndarray | None = None,
) -> dict[str, Any]:
    """Parity figures of candidate raw embeddings ``[M, D]`` against ``ref``, and violations.

    Args:
        ref: the reference.
        cand_raw: float32 ``[M, D]`` candidate embeddings of the same enrolled faces.
        aligned: the faces and protocols.
        tol: limits to check.
        held_out: optional bool ``[N]``, True for images used to calibrate the candidate: the
            verification figures are also given on the pairs that use none of them.

    Returns:
        JSON-ready dict: ``embeddings``, ``decisions`` (``kfold``, ``roc``), ``verification``,
        optionally ``verification_held_out``, ``tolerance``, ``violations``, ``pass``.
    """
    emb = _full(cand_raw, aligned.ok)
    ks, rs = pair_scores(emb, ref.kfold), pair_scores(emb, ref.roc)
    agree = pm.embedding_agreement(ref.raw, cand_raw)
    dec = {
        "kfold": pm.decision_agreement(ref.kfold_scores, ks, ref.best_threshold, ref.kfold.labels),
        "roc": pm.decision_agreement(ref.roc_scores, rs, ref.best_threshold, ref.roc.labels),
    }
    shift = pm.verification_shift(
        ref.roc_scores, rs, ref.roc.labels, ref.kfold_scores, ks, ref.kfold.labels, ref.kfold.folds, far=FAR
    )
    violations = pm.check_tolerance(tol, agree, list(dec.values()), shift)
    out: dict[str, Any] = {
        "embeddings": agree.to_dict(),
        "decisions": {k: v.to_dict() for k, v in dec.items()},
        "verification": shift.to_dict(),
    }
    if held_out is not None and held_out.any():
        keep = ~held_out
        kf, _ = keep_enrolled(ref.kfold, keep)
        rc, _ = keep_enrolled(ref.roc, keep)
        held: dict[str, Any] = {
            "n_images_excluded": int(held_out.sum()),
            "n_roc_pairs": len(rc),
            "n_kfold_pairs": len(kf),
        }
        try:
            h = pm.verification_shift(
                pair_scores(ref.emb, rc),
                pair_scores(emb, rc),
                rc.labels,
                pair_scores(ref.emb, kf),
                pair_scores(emb, kf),
                kf.labels,
                kf.folds,
                far=FAR,
            )
            held.update(h.to_dict())
        except ValueError as e:  # too few pairs left (a small set): say why, do not guess
            held["reason"] = f"not measurable without the calibration images: {e}"
        out["verification_held_out"] = held
    out["tolerance"] = asdict(tol)
    out["violations"] = violations
    out["pass"] = not violations
    return out


def tolerance_from(cfg: DictConfig, precision: str) -> pm.ParityTolerance:
    """``cfg.tolerance.<precision>`` as a :class:`ParityTolerance`."""
    node = cfg.tolerance.get(precision)
    if node is None:
        raise KeyError(f"no tolerance.{precision} in the config; known: {list(cfg.tolerance)}")
    return pm.ParityTolerance(**OmegaConf.to_container(node, resolve=True))  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# The job
# --------------------------------------------------------------------------------------------


def run(cfg: DictConfig, out_dir: Path | None = None) -> dict[str, Any]:
    """Compare torch, our ONNX export and the vendor file for ``cfg.model``; write parity.json.

    Returns the dict written to ``out_dir / "parity.json"``; its ``pass`` is False when any
    candidate broke its tolerance.
    """
    from fetoolkit.export import calibration_faces, export_variant

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


def jsonable(x: Any) -> Any:
    """``x`` with NaN/inf floats as None and numpy scalars as Python ones (for strict JSON)."""
    if isinstance(x, dict):
        return {k: jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, np.generic):
        return jsonable(x.item())
    return x


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
            f"  {name:<14} cos min {e['cosine_min']:.7f} (1-cos {1 - e['cosine_min']:.1e}) mean {e['cosine_mean']:.7f}  max|diff| "
            f"{e['max_abs_diff']:.2e}  flipped {d['kfold']['n_flipped']}/{d['roc']['n_flipped']} (kfold/roc)  "
            f"dTAR@1e-3 {tar}  dACC {v['accuracy_delta']:+.4f}  {'PASS' if c['pass'] else 'FAIL: ' + '; '.join(c['violations'])}"
        )
    return "\n".join(lines)


@hydra.main(version_base="1.3", config_path="../configs", config_name="parity")
def main(cfg: DictConfig) -> None:
    out_dir = Path(hydra.core.hydra_config.HydraConfig.get().runtime.output_dir)
    summary = run(cfg, out_dir)
    log.info("wrote %s", out_dir / "parity.json")
    if not summary["pass"]:
        log.error(
            "parity FAILED: %s",
            "; ".join(f"{k}: {v}" for k, c in summary["candidates"].items() for v in c["violations"]),
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
