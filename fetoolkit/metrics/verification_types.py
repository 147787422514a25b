"""The result types of the verification metrics (frozen dataclasses; ``to_dict`` for JSON).

See :mod:`fetoolkit.metrics.verification` for the conventions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fetoolkit.jsonutil import json_float, json_pair

# --------------------------------------------------------------------------------------------
# Result types
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class RocCurve:
    """A ROC curve, one point per distinct score (ties collapsed), plus the (0, 0) start.

    Attributes:
        far: float64 ``[M + 1]``, non-decreasing from 0 to 1.
        tar: float64 ``[M + 1]``, non-decreasing from 0 to 1.
        thresholds: float64 ``[M + 1]``, strictly decreasing; ``thresholds[0] = +inf`` (nothing
            accepted), then the ``M`` distinct scores. Point ``i`` is the rates when accepting
            ``score >= thresholds[i]``.
        n_genuine: number of genuine pairs.
        n_impostor: number of impostor pairs.
    """

    far: np.ndarray
    tar: np.ndarray
    thresholds: np.ndarray
    n_genuine: int
    n_impostor: int


@dataclass(frozen=True, eq=False)
class DetCurve:
    """A DET curve: the ROC points as (FAR, FRR), same thresholds as :class:`RocCurve`.

    Attributes:
        far: float64 ``[M + 1]``, non-decreasing from 0 to 1.
        frr: float64 ``[M + 1]``, non-increasing from 1 to 0 (``1 - tar``).
        thresholds: float64 ``[M + 1]``, strictly decreasing, ``thresholds[0] = +inf``.
    """

    far: np.ndarray
    frr: np.ndarray
    thresholds: np.ndarray


@dataclass(frozen=True)
class EerResult:
    """Equal error rate.

    Attributes:
        eer: the rate where FAR = FRR, linearly interpolated between the two bracketing ROC points.
        threshold: the score threshold interpolated the same way. When the crossing lies between
            the ``+inf`` start of the curve and the first finite point, the first finite threshold
            (the highest score) is reported, since no finite interpolation exists.
    """

    eer: float
    threshold: float


@dataclass(frozen=True)
class TarAtFar:
    """TAR at a target FAR.

    Attributes:
        far: the target FAR.
        tar: TAR at ``threshold``; NaN when it cannot be measured (see ``reason``).
        threshold: the lowest ROC threshold whose FAR <= ``far`` (``+inf`` when only rejecting
            everything achieves it, i.e. the top-scored tie group already holds too many
            impostors); NaN when not measurable.
        achieved_far: the FAR actually obtained at ``threshold`` (<= ``far``); NaN when not
            measurable.
        reason: why ``tar`` is NaN; None when it was measured.
    """

    far: float
    tar: float
    threshold: float
    achieved_far: float
    reason: str | None = None


@dataclass(frozen=True)
class KFoldAccuracy:
    """LFW-protocol k-fold accuracy (threshold chosen on the other folds, applied to each fold).

    Attributes:
        accuracy_mean: mean of ``fold_accuracies``.
        accuracy_std: population std (``ddof=0``, like insightface) of ``fold_accuracies``.
        fold_accuracies: accuracy on each fold, in increasing fold-id order.
        fold_thresholds: the threshold chosen for each fold (on the other folds).
        best_threshold: mean of ``fold_thresholds``.
    """

    accuracy_mean: float
    accuracy_std: float
    fold_accuracies: tuple[float, ...]
    fold_thresholds: tuple[float, ...]
    best_threshold: float


@dataclass(frozen=True)
class VerificationReport:
    """All verification figures of one score set.

    Attributes:
        n_genuine: number of genuine pairs.
        n_impostor: number of impostor pairs.
        accuracy_mean, accuracy_std, fold_accuracies, fold_thresholds, best_threshold: as in
            :class:`KFoldAccuracy`.
        auc: area under the ROC curve.
        eer: equal error rate; ``eer_threshold`` its threshold (see :class:`EerResult`).
        tar_at_far: ``far_key(far)`` (e.g. ``"1e-3"``) -> :class:`TarAtFar`.
        n_boot: number of bootstrap resamples (0: no intervals).
        ci_level: coverage of the intervals.
        accuracy_ci, eer_ci: ``(low, high)`` percentile intervals, None when ``n_boot == 0``.
        tar_at_far_ci: ``far_key`` -> ``(low, high)``, None when ``n_boot == 0``.
    """

    n_genuine: int
    n_impostor: int
    accuracy_mean: float
    accuracy_std: float
    fold_accuracies: tuple[float, ...]
    fold_thresholds: tuple[float, ...]
    best_threshold: float
    auc: float
    eer: float
    eer_threshold: float
    tar_at_far: dict[str, TarAtFar]
    n_boot: int = 0
    ci_level: float = 0.95
    accuracy_ci: tuple[float, float] | None = None
    eer_ci: tuple[float, float] | None = None
    tar_at_far_ci: dict[str, tuple[float, float]] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: non-finite floats become None, reasons say why.

        Keys: ``n_genuine, n_impostor, accuracy_mean, accuracy_std, best_threshold,
        fold_accuracies, fold_thresholds, auc, eer, eer_threshold, tar_at_far`` (TAR keyed
        ``"1e-1"`` ...), ``tar_at_far_reasons`` (only the keys whose TAR is None),
        ``threshold_at_far``, ``achieved_far``; and when intervals were computed ``n_boot,
        ci_level, accuracy_ci, eer_ci, tar_at_far_ci`` (``[low, high]`` lists).
        """
        t = self.tar_at_far
        d: dict[str, Any] = {
            "n_genuine": int(self.n_genuine),
            "n_impostor": int(self.n_impostor),
            "accuracy_mean": json_float(self.accuracy_mean),
            "accuracy_std": json_float(self.accuracy_std),
            "best_threshold": json_float(self.best_threshold),
            "fold_accuracies": [json_float(a) for a in self.fold_accuracies],
            "fold_thresholds": [json_float(a) for a in self.fold_thresholds],
            "auc": json_float(self.auc),
            "eer": json_float(self.eer),
            "eer_threshold": json_float(self.eer_threshold),
            "tar_at_far": {k: json_float(v.tar) for k, v in t.items()},
            "tar_at_far_reasons": {k: v.reason for k, v in t.items() if v.reason},
            "threshold_at_far": {k: json_float(v.threshold) for k, v in t.items()},
            "achieved_far": {k: json_float(v.achieved_far) for k, v in t.items()},
        }
        if self.n_boot > 0:
            d["n_boot"] = int(self.n_boot)
            d["ci_level"] = float(self.ci_level)
            d["accuracy_ci"] = json_pair(self.accuracy_ci)
            d["eer_ci"] = json_pair(self.eer_ci)
            d["tar_at_far_ci"] = {k: json_pair(v) for k, v in (self.tar_at_far_ci or {}).items()}
        return d
