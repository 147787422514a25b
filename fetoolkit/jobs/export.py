"""Export job: ``python -m fetoolkit.export model=arcface [precision=fp32|fp16|int8] [out=PATH]``.

Writes an ONNX file (default ``models/<registry name>.onnx``; ``models/<name>.<precision>.onnx``
for fp16/int8) with a dynamic batch axis that passes ``onnx.checker`` and carries, in
``metadata_props``, the input contract, the embedding size, the model name, the precision and
the sha256 of the source weights (see ``fetoolkit.backends.export``). ``OnnxEmbedder`` reads the
contract from the file, so the result runs with no flags.

``precision=int8`` is onnxruntime static QDQ quantisation, per-channel, calibrated on REAL
aligned faces: by default the ORL image ``10.pgm`` of each of the 40 subjects (40 faces,
``calibration.images``), aligned by the project pipeline. Those images are the calibration set;
the accuracy cost is reported on all pairs and, separately, on the pairs that use none of them
(``verification_held_out``).

With ``measure=true`` (default) the job also measures the accuracy cost on ORL against the
PyTorch module (per-face cosine, flipped decisions, change in TAR@FAR=1e-3 and 10-fold accuracy,
as ``fetoolkit.parity`` does) and writes everything to ``export.json`` in the Hydra run dir.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import hydra
import onnx
import torch
from omegaconf import DictConfig

from fetoolkit.agreement import compare, reference_from, tolerance_from
from fetoolkit.aligned import align_dataset, calibration_faces, embed_set
from fetoolkit.backends.onnx_backend import OnnxEmbedder
from fetoolkit.backends.onnx_graph import META_CALIBRATION, count_ops, data_inputs, opset_of
from fetoolkit.cli_args import USER_ERRORS, hydra_job, user_error_exit
from fetoolkit.config import pipeline_cfg
from fetoolkit.cpu import machine_info
from fetoolkit.hub import sha256_file
from fetoolkit.jsonutil import jsonable
from fetoolkit.models.factory import create_embedder
from fetoolkit.models.registry import get_model_spec
from fetoolkit.models.variants import export_variant
from fetoolkit.versions import library_versions

log = logging.getLogger(__name__)


def default_out(name: str, precision: str) -> Path:
    """``models/<name>.onnx`` (fp32) or ``models/<name>.<precision>.onnx``."""
    return Path("models") / (f"{name}.onnx" if precision == "fp32" else f"{name}.{precision}.onnx")


def describe_file(path: Path) -> dict[str, Any]:
    """Facts about an exported file: size, sha256, metadata, input/output shapes, op counts."""
    model = onnx.load(str(path))
    onnx.checker.check_model(model)

    def dims(v: Any) -> list[Any]:
        return [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]

    return {
        "path": str(path),
        "size_bytes": path.stat().st_size,
        "sha256": sha256_file(path),
        "metadata": {p.key: p.value for p in model.metadata_props},
        "inputs": {i.name: dims(i) for i in data_inputs(model)},
        "outputs": {o.name: dims(o) for o in model.graph.output},
        "opset": opset_of(model),
        "ops": dict(sorted(count_ops(model).items())),
        "onnx_checker": "passed",
    }


def run(cfg: DictConfig, out_dir: Path | None = None) -> dict[str, Any]:
    """Export ``cfg.model`` at ``cfg.precision`` to ``cfg.out``; measure its accuracy cost.

    Returns the dict written to ``out_dir / "export.json"``.
    """
    if cfg.num_threads:
        torch.set_num_threads(int(cfg.num_threads))
    spec = get_model_spec(cfg.model.name)
    if spec.arch is None:
        raise ValueError(
            f"{spec.name} is an ONNX-only model: its vendor file is already the ONNX graph "
            "(there is no PyTorch module to export)"
        )
    precision = str(cfg.precision)
    weights = cfg.model.get("weights")
    out = Path(cfg.out) if cfg.get("out") else default_out(spec.name, precision)
    need_faces = precision == "int8" or bool(cfg.measure)
    aligned = align_dataset(cfg, size=spec.contract.size) if need_faces else None

    calib, describe, held_out = None, "", None
    if precision == "int8":
        calib, describe, held_out = calibration_faces(aligned, cfg.calibration, spec.contract)
    export_variant(
        spec.name,
        weights=weights,
        out=out,
        precision=precision,
        prelu=cfg.prelu,
        opset=cfg.opset,
        calibration=calib,
        calibration_describe=describe,
        calibration_method=cfg.calibration.method,
        weight_bits=int(cfg.quantize.weight_bits),
        int8_prelu=str(cfg.quantize.prelu),
    )
    summary: dict[str, Any] = {"model": spec.name, "precision": precision, **describe_file(out)}
    batch_dim = next(iter(summary["inputs"].values()))[0]
    if not isinstance(batch_dim, str):
        raise RuntimeError(f"{out}: the batch axis is fixed at {batch_dim}, expected a dynamic axis")
    if precision == "int8":
        recipe = json.loads(summary["metadata"][META_CALIBRATION])
        summary["calibration"] = {
            "faces": describe,
            "n_faces": int(len(calib)),
            "method": cfg.calibration.method,
            **{k: recipe[k] for k in ("weight_bits", "kernels", "quantized_on", "prelus_split", "prelus_one_pass")},
        }

    if cfg.measure:
        assert aligned is not None
        pipe = pipeline_cfg(cfg)
        ref_emb = create_embedder(spec.name, weights=weights, backend="torch", batch_size=cfg.pipeline.batch_size)
        ref = reference_from(embed_set(ref_emb, aligned, pipe), aligned)
        cand = OnnxEmbedder(out, num_threads=cfg.num_threads, batch_size=cfg.pipeline.batch_size)
        summary["accuracy_cost"] = {
            "reference": "torch fp32",
            "dataset": aligned.data.name,
            "n_enrolled": int(aligned.ok.sum()),
            **compare(ref, embed_set(cand, aligned, pipe), aligned, tolerance_from(cfg, precision), held_out),
        }
        v = summary["accuracy_cost"]["verification"]
        log.info(
            "%s %s on %s: min cosine %.6f, TAR@1e-3 %s -> %s, 10-fold accuracy %.4f -> %.4f",
            spec.name,
            precision,
            aligned.data.name,
            summary["accuracy_cost"]["embeddings"]["cosine_min"],
            v["tar_ref"],
            v["tar_cand"],
            v["accuracy_ref"],
            v["accuracy_cand"],
        )
    summary["versions"] = library_versions()
    summary["machine"] = machine_info(cfg.num_threads)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "export.json").write_text(json.dumps(jsonable(summary), indent=2, allow_nan=False) + "\n")
    log.info("wrote %s (%s, %.1f MB)", out, precision, summary["size_bytes"] / 1e6)
    return summary


@hydra.main(version_base="1.3", config_path="../../configs", config_name="export")
def main(cfg: DictConfig) -> None:
    out_dir = Path(hydra.core.hydra_config.HydraConfig.get().runtime.output_dir)
    try:
        run(cfg, out_dir)
    except USER_ERRORS as e:  # bad weights, paths, settings: one line and the fix
        user_error_exit(e)
    log.info("wrote %s", out_dir / "export.json")


if __name__ == "__main__":
    hydra_job(main, "export")
