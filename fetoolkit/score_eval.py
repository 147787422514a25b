"""Evaluation without a model: ``python -m fetoolkit.eval dataset=scores dataset.path=FILE``.

Reads a score file of any system (:mod:`fetoolkit.data.scores`), or a dev and an eval score file
(``dataset.dev=FILE dataset.eval=FILE``), and writes what a model run writes that does not need
embeddings: ``results.json`` (ROC, AUC, EER, TAR@FAR with intervals; k-fold accuracy when the
file gives folds), ``pairs.parquet`` (itself a valid score file), ``summary.md``, the ROC / DET /
score plots, and the deployment report (``report.md``/``.html``: operating point, dev/eval with
EPC, groups with ``groups=FILE``).

The deployment step is shared with model runs: :func:`deployment_inputs` (read and checked before any
work) and :func:`deployment_from_inputs`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from fetoolkit import results
from fetoolkit.config import section
from fetoolkit.cpu import machine_info
from fetoolkit.data.groups import GroupTable, load_groups
from fetoolkit.data.scores import PairScores, ScoreSet, load_scores
from fetoolkit.decision.calibrate import Calibrated, CalibrationCfg, calibrate_pairs
from fetoolkit.decision.profile import PROFILE_FILE, run_profile
from fetoolkit.deployment import Deployment, GroupReportCfg, ThresholdCfg, deployment
from fetoolkit.figures import Figures, StatsCfg, verification_figures
from fetoolkit.versions import library_versions

log = logging.getLogger(__name__)

PAIRS_FILE = "pairs.parquet"


def _source_meta(s: ScoreSet) -> dict[str, Any]:
    return {**s.meta, "n_missing": s.n_missing}


@dataclass(frozen=True)
class DeploymentInputs:
    """What the deployment step reads besides the run's own comparisons, read and checked up front
    (before a model run spends minutes embedding): ``threshold``, ``threshold.dev``, ``groups``."""

    threshold: ThresholdCfg
    dev: ScoreSet | None
    groups: GroupTable | None
    group_report: GroupReportCfg


def deployment_inputs(cfg: DictConfig, dev: ScoreSet | None = None) -> DeploymentInputs:
    """Read and check the deployment settings of a run; ``dev`` (a score set) wins over ``threshold.dev``.

    Raises:
        ValueError: an unknown criterion or a bad group / dev file (named).
        FileNotFoundError: a group or dev file that does not exist.
    """
    tcfg: ThresholdCfg = section(cfg, "threshold", ThresholdCfg)
    if dev is None and tcfg.dev:
        dev = load_scores(tcfg.dev, name="dev", **input_rules(cfg))
    gpath = cfg.get("groups")
    return DeploymentInputs(
        tcfg, dev, load_groups(gpath) if gpath else None, section(cfg, "group_report", GroupReportCfg)
    )


def deployment_from_inputs(inputs: DeploymentInputs, pairs: PairScores, stats: StatsCfg) -> Deployment:
    """The deployment sections of a run (``operating_point``, ``dev_eval``, ``groups``)."""
    dev = inputs.dev
    return deployment(
        pairs,
        threshold=inputs.threshold,
        dev=None if dev is None else dev.roc,
        dev_source=None if dev is None else _source_meta(dev),
        groups=inputs.groups,
        group_report=inputs.group_report,
        stats=stats,
    )


def decision_sections(
    summary: dict[str, Any],
    pairs: PairScores,
    cfg: DictConfig,
    stats: StatsCfg,
    dev: ScoreSet | None,
    crops: dict[str, Any] | None,
) -> tuple[Calibrated | None, dict[str, Any] | None]:
    """The calibration and the decision profile of a run (model or score file), shared like
    :func:`deployment_from_inputs`: ``summary`` gains ``calibration`` (or ``calibration_reason``),
    ``profile`` and ``timing_s.calibration``. Returns the calibration and the profile (both None when
    the data cannot be calibrated). ``crops``: :func:`fetoolkit.decision.profile.crop_settings` of
    the run (None: a score file, which names none)."""
    t = time.perf_counter()
    cal, why_not = calibrate_pairs(pairs, section(cfg, "calibration", CalibrationCfg), stats, dev)
    summary["timing_s"]["calibration"] = round(time.perf_counter() - t, 3)
    summary["calibration"] = None if cal is None else cal.summary()
    if why_not:
        summary["calibration_reason"] = why_not
    if cal is None:
        return None, None
    profile = run_profile(summary, pairs, crops)
    summary["profile"] = {"file": PROFILE_FILE, "profile_id": profile["profile_id"]}
    return cal, profile


def input_rules(cfg: DictConfig) -> dict[str, str]:
    """How score files are read by a run: ``duplicate_pairs`` (``dataset.duplicate_pairs``, default
    ``once``) and ``nonfinite_scores`` (default ``errors``), as :func:`load_scores` keywords."""
    d = cfg.get("dataset") or {}
    return {
        "duplicate_pairs": str(d.get("duplicate_pairs") or "once"),
        "nonfinite_scores": str(cfg.get("nonfinite_scores") or "errors"),
    }


def _sets(cfg: DictConfig) -> tuple[ScoreSet, ScoreSet | None]:
    d = cfg.dataset
    fmt = d.get("format") or "auto"
    rules = input_rules(cfg)
    if d.get("dev") or d.get("eval"):
        if not (d.get("dev") and d.get("eval")):
            raise ValueError("dataset=scores: give both dataset.dev=FILE and dataset.eval=FILE (or dataset.path=FILE)")
        return load_scores(d.eval, fmt=fmt, name="eval", **rules), load_scores(d.dev, fmt=fmt, name="dev", **rules)
    if not d.get("path"):
        raise ValueError(
            "dataset=scores needs dataset.path=FILE (a bob 4/5-column file, a CSV/Parquet with label,score, "
            "or an eval run's pairs.parquet), or dataset.dev=FILE dataset.eval=FILE"
        )
    return load_scores(d.path, fmt=fmt, **rules), None


def _system(d: DictConfig, main: ScoreSet) -> str:
    if d.get("system"):
        return str(d.system)
    run = main.meta.get("run") or {}
    return str(run.get("model") or main.meta["path"].rsplit("/", 1)[-1])


def pair_table(main: ScoreSet) -> pd.DataFrame:
    """The comparisons evaluated, in the CSV score-file columns (plus ``protocol``); scores as read (a
    non-finite score stays so: read again, the same rule gives the same figures)."""

    def frame(p: PairScores, protocol: str, folds: np.ndarray | None) -> pd.DataFrame:
        score = p.scores if p.scores_read is None else p.scores_read  # as read: a NaN stays NaN
        cols: dict[str, Any] = {"protocol": protocol, "label": p.labels, "score": score}
        for name, v in (("subject1", p.subject_a), ("subject2", p.subject_b), ("item1", p.item_a), ("item2", p.item_b)):
            if v is not None:
                cols[name] = v
        if "group" in p.groups:
            cols["group1"], cols["group2"] = p.groups["group"]
        if folds is not None:
            cols["fold"] = folds
        return pd.DataFrame(cols)

    if main.kfold is None:
        return frame(main.roc, "roc", None)
    if main.meta.get("kfold_is_roc"):
        return frame(main.roc, "roc+kfold", main.kfold_folds)
    return pd.concat([frame(main.roc, "roc", None), frame(main.kfold, "kfold", main.kfold_folds)], ignore_index=True)


def _subjects(p: PairScores) -> tuple[np.ndarray, np.ndarray] | None:
    """Both sides' subjects of a score set's comparisons (for the subject bootstrap), None when unknown."""
    return (p.subject_a, p.subject_b) if p.has_subjects else None  # type: ignore[return-value]


def run_scores(cfg: DictConfig, out_dir: Path | None = None) -> dict[str, Any]:
    """Evaluate ``cfg.dataset`` (``name: scores``); write the reports to ``out_dir``. Returns the summary."""
    d = cfg.dataset
    main, dev = _sets(cfg)
    inputs = deployment_inputs(cfg, dev)
    stats: StatsCfg = section(cfg, "stats", StatsCfg)
    k = main.kfold
    fig = verification_figures(
        main.roc.scores,
        main.roc.labels,
        None if k is None else k.scores,
        None if k is None else k.labels,
        main.kfold_folds,
        stats,
        subjects=_subjects(main.roc),
        kfold_subjects=None if k is None else _subjects(k),
    )
    deploy = deployment_from_inputs(inputs, main.roc, stats)
    data_meta: dict[str, Any] = {"n_missing": main.n_missing, "duplicate_pairs": main.meta["duplicate_pairs"]}
    if dev is not None:
        data_meta.update(dev=_source_meta(dev), eval=_source_meta(main))
    else:
        data_meta["scores"] = _source_meta(main)
        if inputs.dev is not None:
            data_meta["dev"] = _source_meta(inputs.dev)
    summary: dict[str, Any] = {
        "model": _system(d, main),
        "backend": "scores",
        "dataset": d.get("label") or ("scores" if dev is None else "eval scores"),
        "weights_sha256": (main.meta.get("run") or {}).get("weights_sha256"),
        "n_comparisons": len(main.roc),
        "n_genuine": main.roc.n_genuine,
        "n_impostor": main.roc.n_impostor,
        "nonfinite_scores": main.meta["nonfinite_scores"],
        **fig.to_dict(),
        **deploy.summary,
        "timing_s": fig.report.timing_s,
        "data": data_meta,
        "threshold_cfg": OmegaConf.to_container(cfg.threshold, resolve=True) if cfg.get("threshold") else None,
        "versions": library_versions(),
        "machine": machine_info(None),
    }
    summary["timing_s"] = dict(summary["timing_s"])  # the report's own dict stays as it was
    # a score file names no detector or pipeline: the profile says so (crops null)
    cal, profile = decision_sections(summary, main.roc, cfg, stats, inputs.dev, crops=None)
    from fetoolkit.reports.tables import format_summary

    if out_dir is not None:
        summary["pairs_file"] = PAIRS_FILE
    log.info("\n%s", format_summary(summary))  # before writing: a failed write loses no figure
    if out_dir is not None:
        _write(main, fig, deploy, summary, out_dir, cal, profile)
    return summary


def _write(
    main: ScoreSet,
    fig: Figures,
    deploy: Deployment,
    summary: dict[str, Any],
    out_dir: Path,
    cal: Calibrated | None,
    profile: dict[str, Any] | None,
) -> None:
    from fetoolkit.decision.profile import write_profile
    from fetoolkit.reports import calibration as calibration_report
    from fetoolkit.reports import deployment as deployment_report
    from fetoolkit.reports import plots, tables

    def files(stage: Path) -> None:
        table = pair_table(main)
        if cal is not None:
            table = calibration_report.with_llr(table, cal, roc_protocols=("roc", "roc+kfold"))
            calibration_report.write_plots(cal, main.roc.labels, stage, str(summary["model"]))
        if profile is not None:
            write_profile(stage / PROFILE_FILE, profile)
        tables.write_pairs(table, stage / PAIRS_FILE)
        (stage / "summary.md").write_text(tables.markdown_summary(summary))
        where = f"{summary['dataset']}: {summary['n_genuine']} genuine / {summary['n_impostor']} impostor comparisons"
        name = summary["model"]
        plots.plot_roc(
            {f"{name} EER={summary['eer']:.4f}": (fig.report.curve.far, fig.report.curve.tar)},
            stage / "roc.png",
            title=f"ROC on {where}",
        )
        plots.plot_det({name: (fig.report.det.far, fig.report.det.frr)}, stage / "det.png", title=f"DET on {where}")
        y = main.roc.labels
        plots.plot_score_hist(
            main.roc.scores[y],
            main.roc.scores[~y],
            stage / "scores.png",
            thresholds={"operating threshold": t} if (t := summary["operating_point"]["threshold"]) is not None else {},
            title=f"{name} on {summary['dataset']}",
        )
        deployment_report.write(summary, deploy, stage)

    results.write_staged(out_dir, summary, files)
