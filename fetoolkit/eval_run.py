"""What the eval job does, as a library: ``run(cfg)`` for ``python -m fetoolkit.eval model=arcface
dataset=orl backend=torch`` (the job itself is :mod:`fetoolkit.jobs.eval`; the gate calls ``run`` too).

Writes into the Hydra run directory:

* ``results.json`` -- every figure, with 95% bootstrap intervals, quality and cache details;
* ``pairs.parquet`` -- one row per pair (scores, labels, folds, dropped pairs marked);
* ``summary.md`` -- the Markdown report;
* ``roc.png`` (log-FAR axis), ``det.png``, ``scores.png`` (genuine/impostor histograms with the
  thresholds), ``erc.png`` (error versus reject of every quality score).

A sweep (``-m model=arcface,mobilefacenet512 backend=torch,onnx``) is collected into
``comparison.md``, ``comparison.csv`` and ``roc_overlay.png`` in the sweep folder by the
callback in ``configs/eval.yaml`` (or later: ``python -m fetoolkit.compare SWEEP_DIR``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from fetoolkit import results
from fetoolkit.cache import CacheCfg
from fetoolkit.config import detector_cfg, pipeline_cfg, section
from fetoolkit.cpu import machine_info
from fetoolkit.data import load_eval_data
from fetoolkit.evaluate import Evaluation, QualityCfg, StatsCfg, evaluate
from fetoolkit.models.factory import create_embedder
from fetoolkit.versions import library_versions

log = logging.getLogger(__name__)

PAIRS_FILE = "pairs.parquet"
RESULTS_FILE = results.RESULTS_FILE


def run(cfg: DictConfig, out_dir: Path | None = None) -> dict[str, Any]:
    """Evaluate ``cfg.model`` on ``cfg.dataset``; write the reports to ``out_dir``.

    Returns the summary dict written to ``results.json``.
    """
    if cfg.num_threads:
        torch.set_num_threads(int(cfg.num_threads))
    embedder = create_embedder(
        cfg.model.name,
        weights=cfg.model.get("weights"),
        backend=cfg.backend.name,
        num_threads=cfg.num_threads,
        batch_size=cfg.pipeline.batch_size,
        allow_mismatch=bool(cfg.model.get("allow_mismatch", False)),
    )
    data = load_eval_data(cfg.dataset, seed=cfg.seed)
    cache_cfg: CacheCfg = section(cfg, "cache", CacheCfg)
    ev: Evaluation = evaluate(
        data,
        embedder,
        pipeline=pipeline_cfg(cfg),
        detector_cfg=detector_cfg(cfg),
        fte_policy=cfg.fte_policy,
        cache=cache_cfg.open(),
        cache_crops=cache_cfg.crops,
        stats=section(cfg, "stats", StatsCfg),
        quality=section(cfg, "quality", QualityCfg),
    )
    summary = {
        "model": embedder.name,
        "backend": embedder.backend,
        **ev.summary,
        "contract": embedder.contract.to_dict(),
        "weights_sha256": getattr(embedder, "weights_sha256", None),
        "runtime_sha256": getattr(embedder, "runtime_sha256", None),
        "pipeline": OmegaConf.to_container(cfg.pipeline, resolve=True),
        "detector": OmegaConf.to_container(cfg.detector, resolve=True),
        "versions": library_versions(),
        "machine": machine_info(cfg.num_threads),
    }
    if out_dir is not None:
        summary["pairs_file"] = PAIRS_FILE
        write_reports(ev, summary, out_dir)
    log.info("\n%s", format_summary(summary))
    return summary


def write_reports(ev: Evaluation, summary: dict[str, Any], out_dir: Path) -> None:
    """results.json, the pair table, summary.md and the four plots, written whole.

    Everything is written into a staging folder inside ``out_dir`` and renamed into place only
    when all of it succeeded, ``results.json`` last and with ``"complete": true`` (which
    ``compare`` and the gate require): a run that died halfway (a full disk, a kill) leaves no
    ``results.json`` that looks finished, and no half-written file under its final name.
    """
    import shutil
    import tempfile

    out_dir.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=out_dir, prefix=".writing-"))
    try:
        _write_reports(ev, summary, stage)
        summary["complete"] = True
        (stage / RESULTS_FILE).write_text(results.dumps(summary))
        for f in sorted(stage.iterdir(), key=lambda p: p.name == RESULTS_FILE):  # results.json last
            os.replace(f, out_dir / f.name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _write_reports(ev: Evaluation, summary: dict[str, Any], out_dir: Path) -> None:
    from fetoolkit.reports import plots, tables

    tables.write_pairs(tables.pairs_frame(ev), out_dir / summary.get("pairs_file", PAIRS_FILE))
    (out_dir / "summary.md").write_text(tables.markdown_summary(summary))
    name = f"{summary['model']} ({summary['backend']})"
    where = f"{ev.data.name}: {ev.roc_pairs.n_genuine} genuine / {ev.roc_pairs.n_impostor} impostor pairs"
    plots.plot_roc(
        {f"{name} EER={summary['eer']:.4f}": (ev.curve.far, ev.curve.tar)}, out_dir / "roc.png", title=f"ROC on {where}"
    )
    plots.plot_det({name: (ev.det.far, ev.det.frr)}, out_dir / "det.png", title=f"DET on {where}")
    y = ev.roc_pairs.labels
    thr = {"EER threshold": summary["eer_threshold"], "k-fold threshold": summary["best_threshold"]}
    for key in ("1e-3", "1e-4"):
        t = (summary.get("threshold_at_far") or {}).get(key)
        if t is not None and np.isfinite(t):
            thr[f"FAR={key} threshold"] = t
    plots.plot_score_hist(
        ev.roc_scores[y], ev.roc_scores[~y], out_dir / "scores.png", thresholds=thr, title=f"{name} on {ev.data.name}"
    )
    erc = summary["quality"].get("erc")
    if ev.erc and erc:
        plots.plot_erc(
            {k: (c.reject, c.fnmr) for k, c in ev.erc.items()},
            out_dir / "erc.png",
            baseline=erc["fnmr_no_reject"],
            title=f"{name} on {ev.data.name}: FNMR at FAR={erc['far']:g} threshold {erc['threshold']:.3f}",
        )


def format_summary(s: dict[str, Any]) -> str:
    """A short fixed-width table of the headline figures."""

    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.4f}"

    def ci(c: list[float | None] | None) -> str:
        return "" if not c or c[0] is None else f" [{c[0]:.4f}, {c[1]:.4f}]"

    tar = s["tar_at_far"]
    tci = s.get("tar_at_far_ci") or {}
    dec = s.get("tar_at_far_decades") or {}
    rows = [
        ("model / backend", f"{s['model']} / {s['backend']}"),
        ("dataset", f"{s['dataset']}: {s['n_images']} images, fte {s['fte']}"),
        ("pairs (ROC)", f"{s['n_genuine']} genuine, {s['n_impostor']} impostor"),
        (
            "10-fold accuracy",
            f"{s['accuracy_mean']:.4f}{ci(s.get('accuracy_ci'))} +- {s['accuracy_std']:.4f} "
            f"(threshold {s['best_threshold']:.4f})",
        ),
        ("AUC", f"{s['auc']:.5f}"),
        ("EER", f"{s['eer']:.4f}{ci(s.get('eer_ci'))}"),
    ]
    # Every decade the impostor count supports, with its interval (the three headline FARs without one).
    for k, v in (dec or tar).items():
        rows.append((f"TAR@FAR={k}", f"{pct(v)}{ci(tci.get(k))}"))
    q = s.get("quality") or {}
    if q.get("erc"):
        rows.append(("ERC best quality score", f"{q['erc']['best']} (default: {q['default']})"))
    rows.append(("embedding cache", str(s.get("cache"))))
    m = s.get("machine")
    if m:
        masked = f", ISA masked to {m['isa_masked']}" if m.get("isa_masked") else ""
        rows.append(("measured on", f"{m['cpu']}, {m['threads']['cpus_usable']} cores ({' '.join(m['isa'])}{masked})"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)
