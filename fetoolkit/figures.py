"""The verification figures of one set of scored comparisons, as ``results.json`` holds them.

Shared by the model evaluation (:mod:`fetoolkit.evaluate`) and the score-file evaluation
(:mod:`fetoolkit.score_eval`), so ``dataset=scores`` on a run's own pair table reproduces that run's
figures exactly.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from fetoolkit.jsonutil import json_float, json_pair
from fetoolkit.metrics import verification as vm

#: The FARs whose TAR results.json always lists (None with a reason when not measurable).
FARS = (1e-1, 1e-2, 1e-3)

PAIR_METHOD = (
    "percentile bootstrap; genuine and impostor pairs resampled separately "
    "(accuracy: within each fold); pairs treated as independent, so intervals "
    "are optimistic when pairs share images"
)


@dataclass(frozen=True)
class StatsCfg:
    """Bootstrap settings (``stats`` in ``configs/eval.yaml``).

    Attributes:
        n_boot: resamples for the 95% intervals; 0 = no intervals.
        level: interval coverage.
        seed: bootstrap seed.
    """

    n_boot: int = 1000
    level: float = 0.95
    seed: int = 0


@dataclass(frozen=True)
class Figures:
    """ROC figures (always) and k-fold figures (when folds are known).

    Attributes:
        kfold: ``kfold``/``accuracy_*``/``best_threshold`` keys, or {} without folds.
        roc: AUC, EER, TAR@FAR, thresholds and achieved FARs.
        ci: the interval keys (empty when ``n_boot == 0``).
        stats: the ``stats`` block.
        curve: the ROC curve.
        det: the DET curve.
        decades: TAR@FAR at every decade the impostor count supports.
        timing_s: seconds spent on the figures (``metrics``) and the intervals (``bootstrap``).
    """

    kfold: dict[str, Any]
    roc: dict[str, Any]
    ci: dict[str, Any]
    stats: dict[str, Any]
    curve: vm.RocCurve
    det: vm.DetCurve
    decades: dict[str, vm.TarAtFar]
    timing_s: dict[str, float]


def verification_figures(
    rs: np.ndarray,
    rl: np.ndarray,
    ks: np.ndarray | None,
    kl: np.ndarray | None,
    kf: np.ndarray | None,
    stats: StatsCfg,
) -> Figures:
    """Figures of ROC scores ``rs`` float64 ``[P]`` / labels ``rl`` bool ``[P]`` and of k-fold scores
    ``ks`` / labels ``kl`` / consecutive fold ids ``kf`` int64 ``[Q]`` (all three None: no k-fold)."""
    t0 = time.perf_counter()
    kblock: dict[str, Any] = {}
    if ks is not None and kl is not None and kf is not None:
        acc = vm.kfold_accuracy(ks, kl, kf)
        kblock = {
            "kfold": {
                "n_folds": int(len(np.unique(kf))),
                "n_genuine": int(kl.sum()),
                "n_impostor": int((~kl).sum()),
                "fold_accuracies": list(acc.fold_accuracies),
                "fold_thresholds": list(acc.fold_thresholds),
            },
            "accuracy_mean": acc.accuracy_mean,
            "accuracy_std": acc.accuracy_std,
            "best_threshold": acc.best_threshold,
        }
    curve = vm.roc_curve(rs, rl)
    det = vm.DetCurve(far=curve.far, frr=1.0 - curve.tar, thresholds=curve.thresholds)  # = det_curve(rs, labels)
    eer = vm.eer(rs, rl)
    decades = vm.tar_at_far_decades(rs, rl)
    tars = {vm.far_key(far): decades.get(vm.far_key(far)) or vm.tar_at_far(rs, rl, far) for far in FARS}
    n_impostor = int((~rl).sum())
    roc = {
        "auc": vm.auc(curve),
        "eer": eer.eer,
        "eer_threshold": eer.threshold,
        "tar_at_far": {k: json_float(t.tar) for k, t in tars.items()},
        "tar_at_far_threshold": {k: json_float(t.threshold) for k, t in tars.items()},
        "tar_at_far_reasons": {k: t.reason for k, t in tars.items() if t.reason},
        "finest_far": vm.finest_far(n_impostor),
        "tar_at_far_decades": {k: json_float(t.tar) for k, t in decades.items()},
        "threshold_at_far": {k: json_float(t.threshold) for k, t in decades.items()},
        "achieved_far": {k: json_float(t.achieved_far) for k, t in decades.items()},
    }
    t1 = time.perf_counter()
    ci: dict[str, Any] = {}
    if stats.n_boot > 0:
        kw = {"n_boot": stats.n_boot, "level": stats.level, "seed": stats.seed}
        if kblock:
            ci["accuracy_ci"] = json_pair(vm.accuracy_ci(ks, kl, kf, **kw))
        all_tars = {**tars, **decades}
        eer_int, tar_int = vm.roc_cis(rs, rl, [t.far for t in all_tars.values()], **kw)
        ci["eer_ci"] = json_pair(eer_int)
        ci["tar_at_far_ci"] = {k: json_pair(tar_int[k]) if t.reason is None else None for k, t in all_tars.items()}
    block = {"n_boot": stats.n_boot, "level": stats.level, "seed": stats.seed, "method": PAIR_METHOD}
    timing = {"metrics": round(t1 - t0, 3), "bootstrap": round(time.perf_counter() - t1, 3)}
    return Figures(kblock, roc, ci, block, curve, det, decades, timing)
