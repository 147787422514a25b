"""Paired bootstrap interval of the difference between two systems scored on the same pairs.

Both systems' figures are recomputed on *the same* resample in every bootstrap round (the same
subject counts, or the same pair draws), so what the two share -- hard subjects, hard pairs --
cancels in the difference, and the interval of ``stat_2 - stat_1`` is much narrower than the
two separate intervals suggest. No re-sorting: each system keeps its own sorted view, the shared
weights are permuted into each order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fetoolkit.metrics._pairs import (
    _FAR_EPS,
    _check_far,
    _check_folds,
    _eer_sorted,
    _nan_reason,
    _padcumsum,
    _prepare,
    _require_both,
    _Rows,
    _Sorted,
    _tar_at_far_sorted,
)
from fetoolkit.metrics.bootstrap import _batches, _check_boot, _draw, _fold_strata
from fetoolkit.metrics.kfold import _kfold_core
from fetoolkit.metrics.subjects import draw_counts, fold_strata, interval_dropping, pair_weights, subject_codes

STATISTICS = ("eer", "tar_at_far", "accuracy")


@dataclass(frozen=True)
class PairedDifference:
    """``stat_2 - stat_1`` of two systems on the same pairs, with its paired bootstrap interval.

    Attributes:
        statistic: ``eer``, ``tar_at_far`` or ``accuracy`` (mean k-fold accuracy).
        far: the FAR of ``tar_at_far``, else None.
        value_1, value_2: the statistic of each system on the data.
        difference: ``value_2 - value_1``.
        ci: ``(low, high)`` percentile interval of the difference; NaN where not measurable.
        method: ``subject`` (subjects resampled, Bolle's two-way subsets bootstrap) or ``pair``.
        n_boot, level: resamples and coverage.
        n_subjects: subjects resampled (``subject``), else None.
        n_dropped: resamples left out because the statistic was undefined there (see
            :func:`~fetoolkit.metrics.subjects.interval_dropping`).
    """

    statistic: str
    far: float | None
    value_1: float
    value_2: float
    difference: float
    ci: tuple[float, float]
    method: str
    n_boot: int
    level: float
    n_subjects: int | None
    n_dropped: int

    def to_dict(self) -> dict[str, Any]:
        def f(x: float) -> float | None:
            return x if math.isfinite(x) else None

        return {
            "statistic": self.statistic,
            "far": self.far,
            "value_1": f(self.value_1),
            "value_2": f(self.value_2),
            "difference": f(self.difference),
            "ci": [f(self.ci[0]), f(self.ci[1])],
            "method": self.method,
            "n_boot": self.n_boot,
            "level": self.level,
            "n_subjects": self.n_subjects,
            "n_dropped": self.n_dropped,
        }


def _value(p: _Sorted, statistic: str, far: float | None, f: np.ndarray | None, n_folds: int) -> float:
    if statistic == "eer":
        return _eer_sorted(p).eer
    if statistic == "tar_at_far":
        assert far is not None
        return _tar_at_far_sorted(p, far).tar
    assert f is not None
    return float(_kfold_core(p, f, n_folds)[0].mean())


def _rows_stat(
    p: _Sorted, w: np.ndarray, statistic: str, far: float | None, f: np.ndarray | None, n_folds: int
) -> np.ndarray:
    """The statistic of each weighting ``w`` int ``[b, P]`` (in ``p``'s order); NaN where undefined."""
    if statistic == "accuracy":
        assert f is not None
        fold_w = np.stack([w[:, f == k].sum(axis=1) for k in range(n_folds)], axis=1)
        ok = (fold_w > 0).all(axis=1)
        out = np.full(w.shape[0], np.nan)
        if ok.any():
            out[ok] = _kfold_core(p, f, n_folds, w[ok])[0].mean(axis=1)
        return out
    rows = _Rows(p, _padcumsum(w[:, p.y], np.int64), _padcumsum(w[:, ~p.y], np.int64))
    g, i = np.asarray(rows.g), np.asarray(rows.i)
    ok = (g > 0) & (i > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        if statistic == "eer":
            return np.where(ok, rows.eer()[0], np.nan)
        assert far is not None
        ok &= np.floor(i * far + _FAR_EPS) >= 1
        return np.where(ok, rows.tar_at_far(far)[0], np.nan)


def paired_difference_ci(
    scores_1: np.ndarray,
    scores_2: np.ndarray,
    labels: np.ndarray,
    subj_a: np.ndarray | None,
    subj_b: np.ndarray | None,
    statistic: str,
    far: float | None = None,
    *,
    folds: np.ndarray | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> PairedDifference:
    """Paired bootstrap interval of ``stat(scores_2) - stat(scores_1)`` on the same pairs.

    Args:
        scores_1, scores_2: float ``[P]``: the two systems' scores of the same pairs, in one order.
        labels: bool/int ``[P]``, 1 = genuine.
        subj_a, subj_b: ``[P]`` subjects of both images of each pair (any ids), or None for the
            pair bootstrap (genuine and impostor pairs resampled separately; within each fold for
            ``accuracy``).
        statistic: ``"eer"``, ``"tar_at_far"`` (needs ``far``) or ``"accuracy"`` (mean k-fold
            accuracy, needs ``folds``; the threshold selection is redone on every resample).
        far: target FAR of ``tar_at_far``.
        folds: int ``[P]`` fold ids for ``accuracy``.
        n_boot: resamples (>= 1). level: coverage. seed: ``numpy.random.default_rng`` seed.

    In every resample both systems get the same weights: the same subject counts (subject
    method: a genuine pair of ``s`` weighs ``c_s``, an impostor pair of ``a, b`` weighs
    ``c_a * c_b``; for ``accuracy`` with subject-disjoint folds the subjects are drawn within each
    fold) or the same pair draws. A resample where either system's statistic is undefined is left
    out and counted (``n_dropped``); more than 5% left out gives a NaN interval. Identical scores
    give exactly ``(0, 0)``.

    Raises:
        ValueError: invalid input, the score arrays differ in length, an unknown statistic, or one
            missing its ``far`` / ``folds``.
    """
    return paired_differences(
        scores_1, scores_2, labels, subj_a, subj_b, [(statistic, far)], folds=folds, n_boot=n_boot, seed=seed,
        level=level,
    )[0]  # fmt: skip


def paired_differences(
    scores_1: np.ndarray,
    scores_2: np.ndarray,
    labels: np.ndarray,
    subj_a: np.ndarray | None,
    subj_b: np.ndarray | None,
    statistics: Sequence[tuple[str, float | None]],
    *,
    folds: np.ndarray | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> list[PairedDifference]:
    """:func:`paired_difference_ci` of several ``(statistic, far)`` from one set of resamples
    (each equals its single call with the same seed)."""
    n_boot, level = _check_boot(n_boot, level)
    specs: list[tuple[str, float | None]] = []
    for statistic, far in statistics:
        if statistic not in STATISTICS:
            raise ValueError(f"statistic must be one of {STATISTICS}, got {statistic!r}")
        if statistic == "tar_at_far":
            if far is None:
                raise ValueError("statistic 'tar_at_far' needs far=")
            specs.append((statistic, _check_far(far)))
        else:
            specs.append((statistic, None))
    p1, p2 = _prepare(scores_1, labels), _prepare(scores_2, labels)
    if p1.n != p2.n:
        raise ValueError(f"the two score arrays differ in length: {p1.n} vs {p2.n} (the same pairs are needed)")
    _require_both(p1.n_genuine, p1.n_impostor, "paired_difference_ci")
    f_idx, n_folds = None, 0
    if any(st == "accuracy" for st, _ in specs):
        if folds is None:
            raise ValueError("statistic 'accuracy' (k-fold accuracy) needs folds")
        f_idx, n_folds = _check_folds(folds, p1.n)
    y = np.empty(p1.n, bool)
    y[p1.order] = p1.y  # the labels in the given order
    f1 = None if f_idx is None else f_idx[p1.order]
    f2 = None if f_idx is None else f_idx[p2.order]
    subj = None if subj_a is None or subj_b is None else subject_codes(subj_a, subj_b)
    if subj is not None and subj.a.size != p1.n:
        raise ValueError(f"subjects hold {subj.a.size} pairs, the scores {p1.n}")
    measurable = [
        st != "tar_at_far" or _nan_reason(p1.n_genuine, p1.n_impostor, far or 1.0) is None for st, far in specs
    ]
    rng = np.random.default_rng(seed)
    if subj is not None:
        strata = fold_strata(subj, f_idx, n_folds) if f_idx is not None else None
    else:
        strata = [sel[s] for sel in (np.flatnonzero(y), np.flatnonzero(~y)) for s in _fold_strata(sel, f_idx)]
    parts: list[list[np.ndarray]] = [[] for _ in specs]
    for b in _batches(n_boot, 4 * p1.n):  # two systems, int64 weights
        if subj is not None:
            w = pair_weights(draw_counts(rng, b, subj.n, strata), subj, y)
        else:
            w = _draw(strata, p1.n, b, rng).astype(np.int64)
        w1, w2 = w[:, p1.order], w[:, p2.order]
        for q, (st, far) in enumerate(specs):
            if not measurable[q]:
                parts[q].append(np.full(b, np.nan))
                continue
            parts[q].append(_rows_stat(p2, w2, st, far, f2, n_folds) - _rows_stat(p1, w1, st, far, f1, n_folds))
    out = []
    for q, (st, far) in enumerate(specs):
        v1 = _value(p1, st, far, f1, n_folds)
        v2 = _value(p2, st, far, f2, n_folds)
        ci, dropped = interval_dropping(np.concatenate(parts[q]), level)
        out.append(
            PairedDifference(
                st,
                far,
                float(v1),
                float(v2),
                float(v2 - v1),
                ci,
                "pair" if subj is None else "subject",
                int(n_boot),
                float(level),
                None if subj is None else subj.n,
                dropped,
            )
        )
    return out


def decision_hter_difference(
    base_accept: np.ndarray,
    accepted: np.ndarray,
    labels: np.ndarray,
    subjects: tuple[np.ndarray, np.ndarray],
    *,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, tuple[float, float]]:
    """HTER (mean of FMR and FNMR) of the current decisions minus the baseline's on the same pairs,
    with the subject-bootstrap interval: both sets of decisions weighed by the same resampled
    subjects in every round (Bolle et al.'s two-way subsets bootstrap, :mod:`fetoolkit.metrics.subjects`).
    For the gate, whose baselines keep decisions (at the baseline threshold), not scores.

    Args:
        base_accept, accepted: bool ``[P]`` decisions of the baseline and of the current run.
        labels: bool ``[P]``, True = genuine.
        subjects: ``(subject_a, subject_b)`` ``[P]`` of each pair.

    Returns:
        ``(difference, (low, high))``; > 0 means the current run errs more.
    """
    n_boot, level = _check_boot(n_boot, level)
    codes = subject_codes(*subjects)
    err_base = (base_accept != labels).astype(np.int64)
    err_cur = (accepted != labels).astype(np.int64)

    def hter(w: np.ndarray, err: np.ndarray) -> np.ndarray:
        g = (w * labels).sum(-1)
        i = (w * ~labels).sum(-1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return 0.5 * ((w * (err * labels)).sum(-1) / g + (w * (err * ~labels)).sum(-1) / i)

    ones = np.ones((1, len(labels)), np.int64)
    diff = float(hter(ones, err_cur)[0] - hter(ones, err_base)[0])
    rng = np.random.default_rng(seed)
    out = []
    batch = max(1, min(n_boot, (1 << 23) // max(len(labels), 1)))
    for start in range(0, n_boot, batch):
        w = pair_weights(draw_counts(rng, min(batch, n_boot - start), codes.n), codes, labels)
        out.append(hter(w, err_cur) - hter(w, err_base))
    ci, _ = interval_dropping(np.concatenate(out), level)
    return diff, ci
