"""The result types of the verification metrics (frozen dataclasses; ``to_dict`` for JSON).

See :mod:`fetoolkit.metrics.verification` for the conventions."""

from __future__ import annotations

from dataclasses import dataclass, field
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
class KFoldReport:
    """The k-fold part of a :class:`VerificationReport` (its own pair set: LFW-style protocols score
    k-fold accuracy on fewer pairs than the ROC).

    Attributes:
        n_folds: number of folds.
        n_genuine, n_impostor: class counts of the k-fold pairs.
        accuracy: the k-fold accuracy and its per-fold thresholds.
        ci: ``(low, high)`` bootstrap interval of the mean accuracy (resampled within each
            (fold, class)), None without intervals.

    ``to_dict`` adds ``accuracy_sem`` (:attr:`sem`) beside ``accuracy_std``.
    """

    n_folds: int
    n_genuine: int
    n_impostor: int
    accuracy: KFoldAccuracy
    ci: tuple[float, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The ``kfold`` block and the top-level accuracy keys of ``results.json``."""
        a = self.accuracy
        return {
            "kfold": {
                "n_folds": int(self.n_folds),
                "n_genuine": int(self.n_genuine),
                "n_impostor": int(self.n_impostor),
                "fold_accuracies": list(a.fold_accuracies),
                "fold_thresholds": list(a.fold_thresholds),
            },
            "accuracy_mean": a.accuracy_mean,
            "accuracy_std": a.accuracy_std,
            "accuracy_sem": self.sem,
            "best_threshold": a.best_threshold,
        }

    @property
    def sem(self) -> float | None:
        """Standard error of the mean fold accuracy, ``std(ddof=1) / sqrt(k)`` (what FaceX-Zoo
        reports as "std"; ``accuracy_std`` is the population std over folds, as insightface's)."""
        acc = np.asarray(self.accuracy.fold_accuracies, np.float64)
        return float(acc.std(ddof=1) / np.sqrt(acc.size)) if acc.size > 1 else None


@dataclass(frozen=True, eq=False)
class VerificationReport:
    """All verification figures of one score set (and of its k-fold protocol, when there is one).

    Attributes:
        n_genuine: number of genuine ROC pairs.
        n_impostor: number of impostor ROC pairs.
        curve: the ROC curve (see :class:`RocCurve`); ``det`` gives the same points as a DET curve.
        auc: area under ``curve`` (trapezoid rule).
        eer: equal error rate; ``eer_threshold`` its threshold (see :class:`EerResult`).
        tar_at_far: ``far_key(far)`` (e.g. ``"1e-3"``) -> :class:`TarAtFar` at each asked FAR,
            NaN with a reason where the impostor count cannot measure it.
        decades: ``far_key`` -> :class:`TarAtFar` at 1e-1, 1e-2, ... down to the finest decade the
            impostor count supports (never extrapolated), coarsest first.
        finest_far: ``1 / n_impostor``.
        kfold: the k-fold figures, None when no folds were given.
        n_boot: number of bootstrap resamples (0: no intervals).
        ci_level: coverage of the intervals.
        eer_ci: ``(low, high)`` percentile interval, None when ``n_boot == 0``.
        tar_at_far_ci: ``far_key`` -> ``(low, high)`` for every key of ``tar_at_far`` and
            ``decades`` (``(nan, nan)`` where not measurable), None when ``n_boot == 0``.
        timing_s: seconds spent on the figures (``metrics``) and the intervals (``bootstrap``).
        ci_method: how the intervals resampled: ``"pair"`` or ``"subject"``.
        n_subjects, kfold_n_subjects: subjects resampled (subject method), else None.
        ci_dropped: subject method: interval -> resamples left out because the statistic was
            undefined there (``"eer"``, ``"tar_at_far/1e-3"``, ``"accuracy"``); only nonzero counts.
        interval_rule: interval key (``"eer_ci"``, ``"accuracy_ci"``, ``"tar_at_far_ci"`` ->
            ``{far_key: ...}``) -> ``{"rule": "rule_of_3", "n", "unit", "bound"}`` where a zero-error
            estimate got the rule-of-three bound instead of the (degenerate) bootstrap interval.
    """

    n_genuine: int
    n_impostor: int
    curve: RocCurve
    auc: float
    eer: float
    eer_threshold: float
    tar_at_far: dict[str, TarAtFar]
    decades: dict[str, TarAtFar]
    finest_far: float
    kfold: KFoldReport | None = None
    n_boot: int = 0
    ci_level: float = 0.95
    eer_ci: tuple[float, float] | None = None
    tar_at_far_ci: dict[str, tuple[float, float]] | None = None
    timing_s: dict[str, float] = field(default_factory=dict)
    ci_method: str = "pair"
    n_subjects: int | None = None
    kfold_n_subjects: int | None = None
    ci_dropped: dict[str, int] = field(default_factory=dict)
    interval_rule: dict[str, Any] = field(default_factory=dict)
    threshold_rates: dict[str, tuple[float, float]] = field(default_factory=dict)
    threshold_ci: dict[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def det(self) -> DetCurve:
        """The ROC points as a DET curve (FAR, FRR = 1 - TAR), same thresholds."""
        c = self.curve
        return DetCurve(far=c.far, frr=1.0 - c.tar, thresholds=c.thresholds)

    def to_dict(self) -> dict[str, Any]:
        """The verification keys of ``results.json`` (its serialisation): non-finite floats become
        None, reasons say why.

        Keys, in this order: the k-fold keys of :meth:`KFoldReport.to_dict` (when there are
        folds); ``auc, eer, eer_threshold``; ``tar_at_far`` and ``tar_at_far_threshold`` (the asked
        FARs, None where not measurable), ``tar_at_far_reasons`` (only those keys), ``finest_far``,
        ``tar_at_far_decades``, ``threshold_at_far`` and ``achieved_far`` (every measurable decade);
        and with intervals ``accuracy_ci`` (with folds), ``eer_ci``, ``tar_at_far_ci`` (``[low,
        high]``; None where not measurable) and ``interval_rule`` (the intervals the rule of three
        gave, see :attr:`interval_rule`).
        """
        t, dec = self.tar_at_far, self.decades
        d: dict[str, Any] = self.kfold.to_dict() if self.kfold is not None else {}
        d.update(
            {
                "auc": self.auc,
                "eer": self.eer,
                "eer_threshold": self.eer_threshold,
                "tar_at_far": {k: json_float(v.tar) for k, v in t.items()},
                "tar_at_far_threshold": {k: json_float(v.threshold) for k, v in t.items()},
                "tar_at_far_reasons": {k: v.reason for k, v in t.items() if v.reason},
                "finest_far": self.finest_far,
                "tar_at_far_decades": {k: json_float(v.tar) for k, v in dec.items()},
                "threshold_at_far": {k: json_float(v.threshold) for k, v in dec.items()},
                "achieved_far": {k: json_float(v.achieved_far) for k, v in dec.items()},
            }
        )
        if self.n_boot > 0:
            if self.kfold is not None:
                d["accuracy_ci"] = json_pair(self.kfold.ci)
            d["eer_ci"] = json_pair(self.eer_ci)
            both = {**t, **dec}
            cis = self.tar_at_far_ci or {}
            d["tar_at_far_ci"] = {k: json_pair(cis[k]) if v.reason is None else None for k, v in both.items()}
            d["interval_rule"] = self.interval_rule
        d["thresholds"] = self.thresholds()
        return d

    def thresholds(self) -> dict[str, Any]:
        """``results.json`` ``thresholds``: every threshold of the report in one place, per criterion.

        ``far``: ``far_key`` -> the lowest threshold with FAR <= the target (every asked FAR and
        every measurable decade), its achieved FAR and FRR (``1 - TAR``); ``eer``: the EER threshold
        (interpolated) and the FAR/FRR it gives on these pairs; ``kfold``: the k-fold best threshold
        (median of the folds') and each fold's, with the FAR/FRR the median gives on the ROC pairs.
        ``threshold_ci``: the bootstrap interval of the threshold itself (how far it moves when the
        pairs or subjects are redrawn; the interval to quote beside a threshold carried to new data).
        """

        def ci(key: str) -> list[float | None] | None:
            c = self.threshold_ci.get(key)
            return None if c is None else json_pair(c)

        far: dict[str, Any] = {}
        for k, v in {**self.tar_at_far, **self.decades}.items():
            far[k] = {
                "threshold": json_float(v.threshold),
                "achieved_far": json_float(v.achieved_far),
                "frr": json_float(1.0 - v.tar),
                "threshold_ci": ci(k) if v.reason is None else None,
                **({"reason": v.reason} if v.reason else {}),
            }
        eer_far, eer_frr = self.threshold_rates.get("eer", (float("nan"), float("nan")))
        out: dict[str, Any] = {
            "far": dict(sorted(far.items(), key=lambda kv: -float(kv[0]))),
            "eer": {
                "threshold": json_float(self.eer_threshold),
                "far": json_float(eer_far),
                "frr": json_float(eer_frr),
                "threshold_ci": ci("eer"),
            },
        }
        if self.kfold is not None:
            k_far, k_frr = self.threshold_rates.get("kfold", (float("nan"), float("nan")))
            out["kfold"] = {
                "threshold": json_float(self.kfold.accuracy.best_threshold),
                "far": json_float(k_far),
                "frr": json_float(k_frr),
                "fold_thresholds": [json_float(x) for x in self.kfold.accuracy.fold_thresholds],
                "n_folds": int(self.kfold.n_folds),
            }
        out["accept"] = "score >= threshold"
        return out
