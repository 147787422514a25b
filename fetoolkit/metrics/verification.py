"""Verification metrics: ROC, AUC, EER, TAR@FAR, LFW-style k-fold accuracy, bootstrap intervals.

Pure numpy; every function takes arrays and returns a frozen dataclass or a float. No torch,
no I/O, no printing.

Conventions (all functions):

* ``scores``: real ``[P]`` (cast to float64), one score per pair; **higher = more similar**.
  Every score must be finite.
* ``labels``: bool ``[P]`` or integers/floats in {0, 1}; ``1``/``True`` = genuine (same person),
  ``0``/``False`` = impostor.
* ``folds``: integer ``[P]``; the fold ids must be consecutive integers (for example 0..9 or
  1..10), so that a missing id is reported as a fold with no pairs.
* A pair is **accepted** when ``score >= threshold``.
* FAR = accepted impostors / impostors, TAR = accepted genuine / genuine, FRR = 1 - TAR. All
  rates are fractions in [0, 1].
* Invalid input (mismatched lengths, empty input, non-finite scores, labels other than 0/1, a
  label set without both classes where both are needed) raises ``ValueError``. A figure that
  the data cannot support (TAR at a FAR finer than ``1 / n_impostor``, TAR without genuine
  pairs) is NaN together with a ``reason`` string, never a silent 0.0.

Everything is sort based: one ``argsort`` of the scores, then cumulative counts, so the whole
:func:`verification_report` on 10 million pairs takes a few seconds. The bootstrap does not
re-sort: a resample is a vector of integer weights (how many times each pair was drawn) over the
already sorted pairs, and the weighted cumulative counts give the resample's ROC / k-fold
accuracy exactly as if the drawn pairs had been materialised.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from fetoolkit.metrics._pairs import (
    _check_far,
    _check_folds,
    _eer_sorted,
    _far_quota,
    _prepare,
    _require_both,
    _Rows,
    _Sorted,
    _tar_at_far_sorted,
    far_key,
)
from fetoolkit.metrics.bootstrap import (
    _boot_accuracy,
    _boot_roc,
    _check_boot,
    _percentile,
    accuracy_ci,
    bootstrap_ci,
    eer_ci,
    roc_cis,
    tar_at_far_ci,
    threshold_at_far_ci,
)
from fetoolkit.metrics.kfold import _kfold_core, _kfold_result, kfold_accuracy
from fetoolkit.metrics.paired import PairedDifference, paired_difference_ci
from fetoolkit.metrics.subjects import Subjects, interval_dropping, subject_codes
from fetoolkit.metrics.verification_types import (
    DetCurve,
    EerResult,
    KFoldAccuracy,
    KFoldReport,
    RocCurve,
    TarAtFar,
    VerificationReport,
)

__all__ = [
    "DetCurve",
    "EerResult",
    "KFoldAccuracy",
    "KFoldReport",
    "PairedDifference",
    "RocCurve",
    "TarAtFar",
    "VerificationReport",
    "accuracy_ci",
    "auc",
    "bootstrap_ci",
    "det_curve",
    "eer",
    "eer_ci",
    "far_key",
    "finest_far",
    "kfold_accuracy",
    "paired_difference_ci",
    "roc_cis",
    "roc_curve",
    "tar_at_far",
    "tar_at_far_ci",
    "tar_at_far_decades",
    "threshold_at_far",
    "threshold_at_far_ci",
    "verification_report",
]


# --------------------------------------------------------------------------------------------
# Public ROC-based API
# --------------------------------------------------------------------------------------------


def roc_curve(scores: np.ndarray, labels: np.ndarray) -> RocCurve:
    """ROC curve with ties collapsed (like ``sklearn.metrics.roc_curve(drop_intermediate=False)``).

    Args:
        scores: float ``[P]``, higher = more similar.
        labels: bool/int ``[P]``, 1 = genuine.

    Returns:
        :class:`RocCurve` with float64 ``[M + 1]`` arrays (``M`` = distinct scores), starting at
        ``(far, tar) = (0, 0)`` with threshold ``+inf`` and ending at ``(1, 1)``.

    Raises:
        ValueError: invalid input, or only one class present.
    """
    p = _prepare(scores, labels)
    _require_both(p.n_genuine, p.n_impostor, "roc_curve")
    return _roc_sorted(p)


def _roc_sorted(p: _Sorted) -> RocCurve:
    """:func:`roc_curve` of already sorted pairs."""
    j = np.arange(p.m, -1, -1)
    tps = p.n_genuine - p.gbelow[j]
    fps = p.n_impostor - (p.starts_ext[j] - p.gbelow[j])
    return RocCurve(
        far=fps / p.n_impostor,
        tar=tps / p.n_genuine,
        thresholds=p.threshold(j),
        n_genuine=p.n_genuine,
        n_impostor=p.n_impostor,
    )


def auc(curve: RocCurve) -> float:
    """Area under a ROC curve by the trapezoid rule (ties count 1/2, as in ``roc_auc_score``).

    Args:
        curve: from :func:`roc_curve`.

    Returns:
        AUC in [0, 1].
    """
    far = np.asarray(curve.far, np.float64)
    tar = np.asarray(curve.tar, np.float64)
    if far.shape != tar.shape or far.ndim != 1 or far.size < 2:
        raise ValueError(f"curve needs matching 1-D far/tar with >= 2 points, got {far.shape}, {tar.shape}")
    return float(np.trapezoid(tar, far))


def det_curve(scores: np.ndarray, labels: np.ndarray) -> DetCurve:
    """DET curve: the ROC points as (FAR, FRR = 1 - TAR), same thresholds as :func:`roc_curve`.

    The end points (FAR 0 or FRR 0) are kept; drop them before plotting on a normal-deviate axis.

    Args:
        scores: float ``[P]``.
        labels: bool/int ``[P]``, 1 = genuine.

    Raises:
        ValueError: invalid input, or only one class present.
    """
    c = roc_curve(scores, labels)
    return DetCurve(far=c.far, frr=1.0 - c.tar, thresholds=c.thresholds)


def eer(scores: np.ndarray, labels: np.ndarray) -> EerResult:
    """Equal error rate: where FAR = FRR on the ROC, linearly interpolated between the bracketing points.

    Args:
        scores: float ``[P]``.
        labels: bool/int ``[P]``, 1 = genuine.

    Returns:
        :class:`EerResult` (``eer`` in [0, 1]; 0 for perfectly separated scores, 1 for fully
        inverted ones).

    Raises:
        ValueError: invalid input, or only one class present (EER needs both FAR and FRR).
    """
    p = _prepare(scores, labels)
    _require_both(p.n_genuine, p.n_impostor, "eer")
    return _eer_sorted(p)


def finest_far(n_impostor: int) -> float:
    """The finest FAR a score set with ``n_impostor`` impostor pairs can measure: ``1 / n_impostor``.

    Raises:
        ValueError: ``n_impostor < 1``.
    """
    n = int(n_impostor)
    if n < 1:
        raise ValueError(f"no FAR can be measured without impostor pairs (n_impostor={n_impostor})")
    return 1.0 / n


def tar_at_far(scores: np.ndarray, labels: np.ndarray, far: float) -> TarAtFar:
    """TAR at the lowest ROC threshold whose FAR <= ``far`` (no interpolation, no extrapolation).

    Args:
        scores: float ``[P]``.
        labels: bool/int ``[P]``, 1 = genuine.
        far: target FAR in (0, 1].

    Returns:
        :class:`TarAtFar`. ``tar`` is NaN with a ``reason`` when ``n_impostor * far < 1`` (the
        target is finer than ``1 / n_impostor``; zero impostors included) or there are no
        genuine pairs.

    Raises:
        ValueError: invalid input or ``far`` outside (0, 1].
    """
    return _tar_at_far_sorted(_prepare(scores, labels), far)


def threshold_at_far(scores: np.ndarray, labels: np.ndarray, far: float) -> float:
    """The threshold :func:`tar_at_far` uses (same rule); NaN where its TAR is NaN (see its reason).

    ``+inf`` means only rejecting everything keeps FAR <= ``far``.
    """
    return tar_at_far(scores, labels, far).threshold


def tar_at_far_decades(scores: np.ndarray, labels: np.ndarray) -> dict[str, TarAtFar]:
    """TAR at FAR 1e-1, 1e-2, ... down to the finest decade the impostor count supports.

    Only decades with ``n_impostor * far >= 1`` are reported (never extrapolated); with fewer
    than 10 impostors the dict is empty.

    Returns:
        ``far_key(far)`` -> :class:`TarAtFar`, coarsest first.
    """
    return _decades_sorted(_prepare(scores, labels))


def _decades_sorted(p: _Sorted) -> dict[str, TarAtFar]:
    """:func:`tar_at_far_decades` of already sorted pairs."""
    out: dict[str, TarAtFar] = {}
    k = 1
    while _far_quota(p.n_impostor, 10.0**-k) >= 1:
        out[far_key(10.0**-k)] = _tar_at_far_sorted(p, 10.0**-k)
        k += 1
    return out


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def _rates_at(p: _Sorted, threshold: float) -> tuple[float, float]:
    """(FAR, FRR) of ``score >= threshold`` on the sorted pairs (NaN for a non-finite threshold)."""
    if not np.isfinite(threshold):
        return float("nan"), float("nan")
    j = np.searchsorted(p.u, threshold, side="left")  # boundary: accept the groups >= threshold
    tps, fps = _Rows(p).at(np.asarray(j))
    return float(fps) / p.n_impostor, 1.0 - float(tps) / p.n_genuine


def verification_report(
    scores: np.ndarray,
    labels: np.ndarray,
    folds: np.ndarray | None = None,
    fars: Sequence[float] = (1e-1, 1e-2, 1e-3),
    *,
    kfold: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    n_boot: int = 0,
    seed: int = 0,
    level: float = 0.95,
    subjects: tuple[np.ndarray, np.ndarray] | None = None,
    kfold_subjects: tuple[np.ndarray, np.ndarray] | None = None,
    method: str = "pair",
) -> VerificationReport:
    """All verification figures from one sort of the scores (and one of the k-fold pairs).

    Args:
        scores: float ``[P]``.
        labels: bool/int ``[P]``, 1 = genuine.
        folds: int ``[P]`` fold ids of these pairs (consecutive integers, >= 2 folds) for k-fold
            accuracy on the same pairs; None for none (or for ``kfold``).
        fars: target FARs for ``tar_at_far``, each in (0, 1]; keyed by :func:`far_key`
            (``"1e-3"``). Every measurable decade is reported besides (``decades``).
        kfold: ``(scores float [Q], labels [Q], folds int [Q])`` of a separate k-fold protocol
            (LFW's 6,000 pairs beside an all-pairs ROC); not with ``folds``.
        n_boot: bootstrap resamples for the intervals; 0 = no intervals.
        seed: bootstrap seed. With ``method="pair"`` the EER and TAR intervals equal
            :func:`roc_cis` (class-stratified, without folds) with the same seed and the accuracy
            interval equals :func:`accuracy_ci` (except where the rule of three replaces them).
        level: interval coverage.
        subjects: ``(subject_a, subject_b)``, ``[P]`` each: the subjects of both images of every
            ROC pair (any hashable ids; see :func:`fetoolkit.metrics.subjects.subject_codes`).
            With ``folds`` they are the k-fold pairs' subjects too.
        kfold_subjects: the same for the separate ``kfold`` pairs (``[Q]`` each).
        method: ``"pair"`` (genuine and impostor pairs resampled separately, as independent) or
            ``"subject"`` (Bolle et al.'s two-way subsets bootstrap: subjects resampled, a
            genuine pair of ``s`` weighs ``c_s``, an impostor pair of ``a, b`` weighs
            ``c_a * c_b``; every figure recomputed with these weights). With ``"subject"`` a
            resample where a statistic is undefined (a class or a fold with zero weight, a FAR
            finer than one impostor of that resample) is left out and counted
            (``ci_dropped``); more than 5% left out gives a NaN interval.

    Zero errors: where the estimate has no error (EER 0, TAR 1, k-fold accuracy 1) the bootstrap
    interval collapses onto the estimate; the rule of three is reported instead, the one-sided
    upper bound ``-ln(1 - level) / n`` on the error rate (``3 / n`` at 95%), with ``n`` the
    comparisons (pair method: genuine pairs for TAR, ``min(genuine, impostor)`` for the EER,
    k-fold pairs for the accuracy) or the subjects (subject method: the subjects are the
    independent units, so the bound assumes a subject's comparisons may fail together; it is
    the conservative end). ``interval_rule`` names each interval so replaced.

    Cost: one argsort of the ROC scores (and one of the k-fold scores) plus O(P) passes (about
    5 s for 10 million pairs on one core). Each bootstrap resample costs a few O(P) passes for
    EER/TAR and about one O(P) pass per fold for the accuracy (about 7 s in all for 1000
    resamples of 80k pairs, but seconds per resample at 10 million pairs, where the intervals
    are tiny anyway).

    Returns:
        :class:`VerificationReport` (``.to_dict()`` is what ``results.json`` holds).

    Raises:
        ValueError: invalid input, only one class present, bad folds, both ``folds`` and
            ``kfold``, an unknown ``method``, or ``method="subject"`` without the subjects.
    """
    t0 = time.perf_counter()
    fars = [_check_far(x) for x in fars]
    if folds is not None and kfold is not None:
        raise ValueError("give folds (k-fold on these pairs) or kfold (a separate pair set), not both")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    p = _prepare(scores, labels)
    _require_both(p.n_genuine, p.n_impostor, "verification_report")
    if n_boot:
        n_boot, level = _check_boot(n_boot, level)
    kp, kf = None, None
    if folds is not None:
        kp, kf = p, folds
    elif kfold is not None:
        kp, kf = _prepare(kfold[0], kfold[1]), kfold[2]
        _require_both(kp.n_genuine, kp.n_impostor, "verification_report (k-fold pairs)")
    k_sorted, n_folds = None, 0
    if kp is not None:
        f_idx, n_folds = _check_folds(kf, kp.n)
        k_sorted = f_idx[kp.order]
    subj = ksubj = None
    if method == "subject":
        subj = _sorted_subjects(subjects, p, "subjects")
        if kfold is not None:
            ksubj = _sorted_subjects(kfold_subjects, kp, "kfold_subjects")
        elif kp is not None:
            ksubj = subj
    curve = _roc_sorted(p)
    e = _eer_sorted(p)
    tars = {far_key(x): _tar_at_far_sorted(p, x) for x in fars}
    decades = _decades_sorted(p)
    ka = _kfold_result(*_kfold_core(kp, k_sorted, n_folds)) if kp is not None else None
    t1 = time.perf_counter()
    acc_ci = eer_int = tar_int = None
    thr_ci: dict[str, tuple[float, float]] = {}
    dropped: dict[str, int] = {}
    rule: dict[str, Any] = {}
    if n_boot > 0:
        boot_fars = [t.far for t in {**tars, **decades}.values()]

        def interval(stats: np.ndarray, key: str) -> tuple[float, float]:
            if method == "pair":
                return _percentile(stats, level)
            ci, n_out = interval_dropping(stats, level)
            if n_out:
                dropped[key] = n_out
            return ci

        st = _boot_roc(p, n_boot, seed, None, boot_fars, subj=subj)
        thr_ci = {k[4:]: interval_dropping(v, level)[0] for k, v in st.items() if k.startswith("thr/")}
        eer_int = interval(st["eer"], "eer")
        tar_int = {far_key(x): interval(st[far_key(x)], f"tar_at_far/{far_key(x)}") for x in boot_fars}
        if kp is not None:
            acc_ci = interval(_boot_accuracy(kp, k_sorted, n_folds, n_boot, seed, subj=ksubj), "accuracy")
        eer_int, tar_int, acc_ci = _zero_error_rule(
            p, subj, kp, ksubj, e.eer, {**tars, **decades}, ka, eer_int, tar_int, acc_ci, level, rule
        )
    kreport = None
    if kp is not None and ka is not None:
        kreport = KFoldReport(n_folds, kp.n_genuine, kp.n_impostor, ka, acc_ci)
    rates = {"eer": _rates_at(p, e.threshold)}
    if ka is not None:
        rates["kfold"] = _rates_at(p, ka.best_threshold)
    return VerificationReport(
        n_genuine=p.n_genuine,
        n_impostor=p.n_impostor,
        curve=curve,
        auc=auc(curve),
        eer=e.eer,
        eer_threshold=e.threshold,
        tar_at_far=tars,
        decades=decades,
        finest_far=finest_far(p.n_impostor),
        kfold=kreport,
        n_boot=int(n_boot),
        ci_level=float(level),
        eer_ci=eer_int,
        tar_at_far_ci=tar_int,
        timing_s={"metrics": round(t1 - t0, 3), "bootstrap": round(time.perf_counter() - t1, 3)},
        ci_method=method,
        n_subjects=None if subj is None else subj.n,
        kfold_n_subjects=None if ksubj is None else ksubj.n,
        threshold_rates=rates,
        threshold_ci=thr_ci,
        ci_dropped=dropped,
        interval_rule=rule,
    )


#: The resampling methods of the intervals.
METHODS = ("pair", "subject")


def _sorted_subjects(given: tuple[np.ndarray, np.ndarray] | None, p: _Sorted, name: str) -> Subjects:
    if given is None:
        raise ValueError(
            f"method='subject' needs {name}=(subject_a, subject_b), the subjects of both images of every "
            "pair; without them use method='pair'"
        )
    codes = subject_codes(given[0], given[1])
    if codes.a.size != p.n:
        raise ValueError(f"{name} hold {codes.a.size} pairs, the scores {p.n}")
    return codes.take(p.order)


def _rule_of_three(n: int, level: float) -> float:
    """One-sided upper bound on an error rate with zero errors in ``n`` trials (``3 / n`` at 95%)."""
    return min(1.0, -math.log(1.0 - level) / n) if n > 0 else 1.0


def _zero_error_rule(
    p: _Sorted,
    subj: Subjects | None,
    kp: _Sorted | None,
    ksubj: Subjects | None,
    eer_value: float,
    tars: dict[str, TarAtFar],
    ka: KFoldAccuracy | None,
    eer_int: tuple[float, float] | None,
    tar_int: dict[str, tuple[float, float]] | None,
    acc_ci: tuple[float, float] | None,
    level: float,
    rule: dict[str, Any],
) -> tuple[tuple[float, float] | None, dict[str, tuple[float, float]] | None, tuple[float, float] | None]:
    """Replace the intervals of zero-error estimates by the rule of three; record each in ``rule``."""
    unit = "comparisons" if subj is None else "subjects"
    if subj is None:
        n_gen, n_imp = p.n_genuine, p.n_impostor
    else:
        n_gen, n_imp = subj.n_with(p.y), subj.n_with(~p.y)

    def entry(n: int) -> dict[str, Any]:
        return {"rule": "rule_of_3", "n": int(n), "unit": unit, "bound": _rule_of_three(n, level)}

    if eer_value == 0.0:
        n = min(n_gen, n_imp)
        eer_int = (0.0, _rule_of_three(n, level))
        rule["eer_ci"] = entry(n)
    for k, t in tars.items():
        if tar_int is not None and t.reason is None and t.tar == 1.0:
            tar_int[k] = (1.0 - _rule_of_three(n_gen, level), 1.0)
            rule.setdefault("tar_at_far_ci", {})[k] = entry(n_gen)
    if kp is not None and ka is not None and ka.accuracy_mean == 1.0:
        n = kp.n if ksubj is None else ksubj.n
        acc_ci = (1.0 - _rule_of_three(n, level), 1.0)
        rule["accuracy_ci"] = entry(n)
    return eer_int, tar_int, acc_ci
