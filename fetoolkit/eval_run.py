"""What the eval job does, as a library: ``run(cfg)`` for ``python -m fetoolkit.eval model=arcface
dataset=orl backend=torch`` (the job itself is :mod:`fetoolkit.jobs.eval`; the gate calls ``run`` too).

Writes into the Hydra run directory:

* ``results.json`` -- every figure, with 95% bootstrap intervals, quality and cache details;
* ``pairs.parquet`` -- one row per pair (scores, labels, folds, dropped pairs marked);
* ``summary.md`` -- the Markdown report;
* ``roc.png`` (log-FAR axis), ``det.png``, ``scores.png`` (genuine/impostor histograms with the
  thresholds), ``erc.png`` (error versus reject of every quality score);
* ``profile.json`` -- the decision profile (calibration map, thresholds, what it is valid for;
  :mod:`fetoolkit.decision.profile`), ``reliability.png`` and ``tippett.png`` (the calibration's).

The run folder is the run's alone (:mod:`fetoolkit.run_dir`): claimed before any work, a folder in use
by another run or holding an earlier run's files is refused (``RunFolderError``, naming the folder,
the files and the fix), and the files are staged outside it and renamed in. The headline figures
are logged before anything is written, so a write that fails (``fetoolkit.results.WriteError``,
naming the file: a full disk, a file-size limit) loses no figure that was computed.

A sweep (``-m model=arcface,mobilefacenet512 backend=torch,onnx``) is collected into
``comparison.md``, ``comparison.csv`` and ``roc_overlay.png`` in the sweep folder by the
callback in ``configs/eval.yaml`` (or later: ``python -m fetoolkit.compare SWEEP_DIR``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from fetoolkit import results
from fetoolkit.cache import CacheCfg
from fetoolkit.config import detector_cfg, hydra_choice, pipeline_cfg, section
from fetoolkit.cpu import machine_info
from fetoolkit.data import load_eval_data
from fetoolkit.data.scores import PairScores
from fetoolkit.decision.calibrate import Calibrated
from fetoolkit.decision.profile import PROFILE_FILE, crop_settings
from fetoolkit.deployment import Deployment
from fetoolkit.evaluate import Evaluation, QualityCfg, StatsCfg, evaluate
from fetoolkit.identify import IdentificationCfg
from fetoolkit.models.factory import create_embedder
from fetoolkit.models.registry import get_model_spec
from fetoolkit.pipeline import detector_settings
from fetoolkit.reports.tables import format_summary
from fetoolkit.run_dir import claim
from fetoolkit.score_eval import decision_sections, deployment_from_inputs, deployment_inputs, run_scores
from fetoolkit.store_read import eval_embedded
from fetoolkit.templates import TemplateCfg
from fetoolkit.versions import library_versions

log = logging.getLogger(__name__)

PAIRS_FILE = "pairs.parquet"
RESULTS_FILE = results.RESULTS_FILE


def run(cfg: DictConfig, out_dir: Path | None = None) -> dict[str, Any]:
    """Evaluate ``cfg.model`` on ``cfg.dataset``; write the reports to ``out_dir``.

    Returns the summary dict written to ``results.json``. ``dataset=scores`` evaluates a score file
    instead, without a model (:func:`fetoolkit.score_eval.run_scores`).

    Raises:
        fetoolkit.run_dir.RunFolderError: ``out_dir`` is in use by another run or holds an earlier
            run's files (checked before any work).
        fetoolkit.results.WriteError: a report could not be written (named; the figures were logged).
    """
    if out_dir is None:
        return _run(cfg, None)
    with claim(out_dir):
        return _run(cfg, out_dir)


def _run(cfg: DictConfig, out_dir: Path | None) -> dict[str, Any]:
    if cfg.dataset.name == "scores":
        return run_scores(cfg, out_dir)
    inputs = deployment_inputs(cfg)  # group / dev files checked before minutes of embedding
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
    stats: StatsCfg = section(cfg, "stats", StatsCfg)
    quality = section(cfg, "quality", QualityCfg)
    embedded, source = None, {"store": None}
    if cfg.get("store"):  # embeddings from an embedding store (python -m fetoolkit.extract), checked against cfg
        embedded, source = eval_embedded(
            cfg.store, data, embedder, pipeline_cfg(cfg), detector_cfg(cfg), quality, cfg.num_threads
        )
    ev: Evaluation = evaluate(
        data,
        embedder,
        pipeline=pipeline_cfg(cfg),
        detector_cfg=detector_cfg(cfg),
        fte_policy=cfg.fte_policy,
        cache=cache_cfg.open(),
        cache_crops=cache_cfg.crops,
        stats=stats,
        quality=quality,
        templates=TemplateCfg(
            normalize_images=bool(cfg.dataset.get("normalize_images", False)),
            faceness_weight=bool(cfg.dataset.get("faceness_weight", False)),
        ),
        identification=section(cfg, "identification", IdentificationCfg),
        embedded=embedded,
        nonfinite_scores=str(cfg.get("nonfinite_scores") or "errors"),
    )
    summary = {
        "model": embedder.name,
        "model_config": _model_config(embedder.name),
        "backend": embedder.backend,
        **ev.summary,
        "embeddings_source": source,
        "contract": embedder.contract.to_dict(),
        "weights_sha256": getattr(embedder, "weights_sha256", None),
        "runtime_sha256": getattr(embedder, "runtime_sha256", None),
        "pipeline": OmegaConf.to_container(cfg.pipeline, resolve=True),
        "detector": OmegaConf.to_container(cfg.detector, resolve=True),
        "versions": library_versions(),
        "machine": machine_info(cfg.num_threads),
    }
    pairs = evaluation_pairs(ev)
    deploy = deployment_from_inputs(inputs, pairs, stats)
    summary.update(deploy.summary)
    det = None if ev.data.aligned or ev.data.landmarks is not None else detector_settings(detector_cfg(cfg))
    crops = crop_settings(det, {**summary["pipeline"], "flip_test": summary["comparison"]["flip_test"]})
    cal, profile = decision_sections(summary, pairs, cfg, stats, inputs.dev, crops)
    if out_dir is not None:
        summary["pairs_file"] = PAIRS_FILE
    log.info("\n%s", format_summary(summary))  # before writing: a failed write loses no figure
    if out_dir is not None:
        write_reports(ev, summary, out_dir, deploy, cal, profile)
    return summary


def _model_config(name: str) -> str | None:
    """The name the command gave the model (``model=arcface``) when it names this run's record, else
    None (a config composed by hand, or ``model.name=`` overriding the chosen config)."""
    choice = hydra_choice("model")
    try:
        return choice if choice and get_model_spec(choice).name == name else None
    except KeyError:
        return None


def evaluation_pairs(ev: Evaluation) -> PairScores:
    """The kept ROC comparisons of a model run, with subjects, image paths and layout groups."""
    data, p = ev.data, ev.roc_pairs
    if data.templates is not None:  # the pairs compare templates (IJB): items are template ids
        ids = np.asarray([f"template {t}" for t in data.templates.ids], dtype=object)
        return PairScores(ev.roc_scores, p.labels, None, None, ids[p.idx_a], ids[p.idx_b], {})
    names = np.asarray([str(x) for x in data.paths], dtype=object)
    subjects = data.subject_names()
    sa = sb = None
    if subjects is not None:
        sa, sb = subjects[p.idx_a], subjects[p.idx_b]
    groups = {k: (g[p.idx_a], g[p.idx_b]) for k, g in (data.image_groups or {}).items()}
    return PairScores(ev.roc_scores, p.labels, sa, sb, names[p.idx_a], names[p.idx_b], groups)


def write_reports(
    ev: Evaluation,
    summary: dict[str, Any],
    out_dir: Path,
    deploy: Deployment | None = None,
    cal: Calibrated | None = None,
    profile: dict[str, Any] | None = None,
) -> None:
    """results.json, the pair table, summary.md, the plots, the deployment report and the decision
    profile, written whole (see :func:`fetoolkit.results.write_staged`)."""
    from fetoolkit.decision.profile import write_profile
    from fetoolkit.reports import calibration as calibration_report
    from fetoolkit.reports import deployment as deployment_report

    def files(stage: Path) -> None:
        _write_reports(ev, summary, stage, cal)
        if deploy is not None:
            deployment_report.write(summary, deploy, stage)
        if cal is not None:
            calibration_report.write_plots(cal, ev.roc_pairs.labels, stage, f"{summary['model']} on {ev.data.name}")
        if profile is not None:
            write_profile(stage / PROFILE_FILE, profile)

    results.write_staged(out_dir, summary, files)


def _write_reports(ev: Evaluation, summary: dict[str, Any], out_dir: Path, cal: Calibrated | None = None) -> None:
    from fetoolkit.reports import calibration as calibration_report
    from fetoolkit.reports import plots, tables

    frame = tables.pairs_frame(ev)
    if cal is not None:
        frame = calibration_report.with_llr(frame, cal, roc_protocols=("roc", "roc+kfold"))
    tables.write_pairs(frame, out_dir / summary.get("pairs_file", PAIRS_FILE))
    (out_dir / "summary.md").write_text(tables.markdown_summary(summary))
    name = f"{summary['model']} ({summary['backend']})"
    where = f"{ev.data.name}: {ev.roc_pairs.n_genuine} genuine / {ev.roc_pairs.n_impostor} impostor pairs"
    plots.plot_roc(
        {f"{name} EER={summary['eer']:.4f}": (ev.curve.far, ev.curve.tar)}, out_dir / "roc.png", title=f"ROC on {where}"
    )
    plots.plot_det({name: (ev.det.far, ev.det.frr)}, out_dir / "det.png", title=f"DET on {where}")
    y = ev.roc_pairs.labels
    thr = {"EER threshold": summary["eer_threshold"]}
    if summary.get("best_threshold") is not None:
        thr["k-fold threshold"] = summary["best_threshold"]
    for key in ("1e-3", "1e-4"):
        t = (summary.get("threshold_at_far") or {}).get(key)
        if t is not None and np.isfinite(t):
            thr[f"FAR={key} threshold"] = t
    plots.plot_score_hist(
        ev.roc_scores[y], ev.roc_scores[~y], out_dir / "scores.png", thresholds=thr, title=f"{name} on {ev.data.name}"
    )
    if ev.identification is not None:
        reps = ev.identification.reports
        plots.plot_cmc({k: r.cmc for k, r in reps.items()}, out_dir / "cmc.png", title=f"{name} on {ev.data.name}: CMC")
        if any(r.n_nonmated for r in reps.values()):
            plots.plot_dir(
                {k: (r.dir_fpir, r.dir_tpir) for k, r in reps.items() if r.n_nonmated},
                out_dir / "dir.png",
                title=f"{name} on {ev.data.name}: detection and identification rate",
            )
    erc = summary["quality"].get("erc")
    if ev.erc and erc:
        plots.plot_erc(
            {k: (c.reject, c.fnmr) for k, c in ev.erc.items()},
            out_dir / "erc.png",
            baseline=erc["fnmr_no_reject"],
            title=f"{name} on {ev.data.name}: FNMR at FAR={erc['far']:g} threshold {erc['threshold']:.3f}",
        )
