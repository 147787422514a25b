"""The main job: ``python -m fetoolkit.eval model=arcface dataset=orl backend=torch``.

Writes ``results.json`` and ``roc.png`` into the Hydra run directory and logs a summary table.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from fetoolkit.data import load_eval_data
from fetoolkit.detect.mtcnn import DetectorCfg
from fetoolkit.evaluate import Evaluation, evaluate
from fetoolkit.models.factory import create_embedder
from fetoolkit.pipeline import PipelineCfg
from fetoolkit.reports.plots import plot_roc
from fetoolkit.versions import library_versions

log = logging.getLogger(__name__)


def detector_cfg(cfg: DictConfig) -> DetectorCfg:
    d = cfg.detector
    return DetectorCfg(min_face_size=d.min_face_size, thresholds=tuple(d.thresholds), factor=d.factor,
                       select=cfg.pipeline.select)


def pipeline_cfg(cfg: DictConfig) -> PipelineCfg:
    return PipelineCfg(**OmegaConf.to_container(cfg.pipeline, resolve=True))  # type: ignore[arg-type]


def run(cfg: DictConfig, out_dir: Path | None = None) -> dict[str, Any]:
    """Evaluate ``cfg.model`` on ``cfg.dataset``; write results.json and roc.png to ``out_dir``.

    Returns the summary dict written to ``results.json``.
    """
    if cfg.num_threads:
        torch.set_num_threads(int(cfg.num_threads))
    embedder = create_embedder(cfg.model.name, weights=cfg.model.get("weights"), backend=cfg.backend.name,
                               num_threads=cfg.num_threads, batch_size=cfg.pipeline.batch_size)
    data = load_eval_data(cfg.dataset, seed=cfg.seed)
    ev: Evaluation = evaluate(data, embedder, pipeline=pipeline_cfg(cfg), detector_cfg=detector_cfg(cfg),
                              fte_policy=cfg.fte_policy)
    summary = {
        "model": embedder.name,
        "backend": embedder.backend,
        **ev.summary,
        "contract": embedder.contract.to_dict(),
        "weights_sha256": embedder.weights_sha256,
        "pipeline": OmegaConf.to_container(cfg.pipeline, resolve=True),
        "versions": library_versions(),
    }
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "results.json").write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n")
        label = f"{embedder.name} ({embedder.backend}) EER={summary['eer']:.4f}"
        plot_roc({label: (ev.curve.far, ev.curve.tar)}, out_dir / "roc.png", title=f"ROC on {data.name}")
    log.info("\n%s", format_summary(summary))
    return summary


def format_summary(s: dict[str, Any]) -> str:
    """A short fixed-width table of the headline figures."""
    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.4f}"

    tar = s["tar_at_far"]
    rows = [
        ("model / backend", f"{s['model']} / {s['backend']}"),
        ("dataset", f"{s['dataset']}: {s['n_images']} images, fte {s['fte']}"),
        ("pairs (ROC)", f"{s['n_genuine']} genuine, {s['n_impostor']} impostor"),
        ("10-fold accuracy", f"{s['accuracy_mean']:.4f} +- {s['accuracy_std']:.4f} (threshold {s['best_threshold']:.4f})"),
        ("AUC", f"{s['auc']:.5f}"),
        ("EER", f"{s['eer']:.4f}"),
        ("TAR@FAR 1e-1/1e-2/1e-3", " / ".join(pct(tar[k]) for k in ("1e-1", "1e-2", "1e-3"))),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)


@hydra.main(version_base="1.3", config_path="../configs", config_name="eval")
def main(cfg: DictConfig) -> None:
    out_dir = Path(hydra.core.hydra_config.HydraConfig.get().runtime.output_dir)
    run(cfg, out_dir)
    log.info("wrote %s", out_dir / "results.json")


if __name__ == "__main__":
    main()
