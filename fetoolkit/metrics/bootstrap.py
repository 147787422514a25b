"""Bootstrap intervals of the verification figures: resamples as integer weights over the sorted pairs.

See :mod:`fetoolkit.metrics.verification` for the conventions; the public functions are re-exported there."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from fetoolkit.metrics._pairs import (
    _FAR_EPS,
    _check_far,
    _check_folds,
    _nan_reason,
    _padcumsum,
    _prepare,
    _require_both,
    _Rows,
    _Sorted,
    far_key,
)
from fetoolkit.metrics.kfold import _kfold_core
from fetoolkit.metrics.subjects import Subjects, draw_counts, fold_strata, pair_weights

# Bootstrap batches hold about this many (resample, pair) cells per array.
_BOOT_CELLS = 1 << 22


# --------------------------------------------------------------------------------------------
# Bootstrap
# --------------------------------------------------------------------------------------------


def _check_boot(n_boot: int, level: float) -> tuple[int, float]:
    n_boot = int(n_boot)
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    level = float(level)
    if not (0.0 < level < 1.0):
        raise ValueError(f"level must be in (0, 1), got {level}")
    return n_boot, level


def _batches(n_boot: int, n: int) -> list[int]:
    size = max(1, min(n_boot, _BOOT_CELLS // max(n, 1)))
    return [min(size, n_boot - i) for i in range(0, n_boot, size)]


def _draw(strata: list[np.ndarray], length: int, b: int, rng: np.random.Generator) -> np.ndarray:
    """Stratified bootstrap counts: int32 ``[b, length]``; each stratum's counts sum to its size.

    ``strata`` are disjoint index arrays into ``range(length)``; indices in no stratum get 0.
    """
    w = np.zeros((b, length), np.int32)
    for pos in strata:
        ns = pos.size
        draws = rng.integers(0, ns, size=(b, ns), dtype=np.int32)
        for r in range(b):  # one bincount per row stays in cache
            w[r, pos] = np.bincount(draws[r], minlength=ns)
    return w


def _fold_strata(sel: np.ndarray, f: np.ndarray | None) -> list[np.ndarray]:
    """Indices into ``range(sel.size)`` split by fold (one stratum when ``f`` is None)."""
    if f is None:
        return [np.arange(sel.size)]
    fs = f[sel]
    return [s for s in (np.flatnonzero(fs == k) for k in range(int(f.max()) + 1)) if s.size]


def _percentile(stats: np.ndarray, level: float) -> tuple[float, float]:
    if stats.size == 0 or np.isnan(stats).any():
        return (math.nan, math.nan)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(stats, [alpha, 1.0 - alpha])
    return (float(lo), float(hi))


def _boot_roc(
    p: _Sorted,
    n_boot: int,
    seed: int,
    f: np.ndarray | None,
    fars: Sequence[float],
    want_eer: bool = True,
    want_auc: bool = False,
    subj: Subjects | None = None,
) -> dict[str, np.ndarray]:
    """EER / AUC / TAR@FAR of ``n_boot`` class-stratified resamples: float64 ``[n_boot]`` each.

    Keys ``"eer"``, ``"auc"`` and ``far_key(far)``. TAR@FAR is NaN on every resample when the
    FAR is not measurable (class sizes are fixed by the stratification). No re-sorting: a
    resample is cumulative draw counts over each class in ascending-score order.

    With ``subj`` (the subjects in ``p``'s order) the resamples are subject resamples instead
    (see :func:`_boot_roc_subjects`; ``f`` is not used).
    """
    if subj is not None:
        return _boot_roc_subjects(p, n_boot, seed, subj, fars, want_eer, want_auc)
    rng = np.random.default_rng(seed)
    gsel, isel = np.flatnonzero(p.y), np.flatnonzero(~p.y)
    gstrata, istrata = _fold_strata(gsel, f), _fold_strata(isel, f)
    out: dict[str, list[np.ndarray]] = {"eer": [], "auc": [], "thr/eer": []}
    out.update({far_key(x): [] for x in fars})
    out.update({f"thr/{far_key(x)}": [] for x in fars})
    for b in _batches(n_boot, p.n):
        cg = _padcumsum(_draw(gstrata, gsel.size, b, rng), np.int32)
        ci = _padcumsum(_draw(istrata, isel.size, b, rng), np.int32)
        rows = _Rows(p, cg, ci)
        if want_eer:
            e, th = rows.eer()
            out["eer"].append(e)
            out["thr/eer"].append(th)
        if want_auc:
            out["auc"].append(rows.auc())
        for x in fars:
            if _nan_reason(p.n_genuine, p.n_impostor, x) is None:
                tar, th, _ = rows.tar_at_far(x)
                out[far_key(x)].append(tar)
                out[f"thr/{far_key(x)}"].append(th)
            else:
                out[far_key(x)].append(np.full(b, np.nan))
                out[f"thr/{far_key(x)}"].append(np.full(b, np.nan))
    return {k: np.concatenate(v) if v else np.empty(0) for k, v in out.items()}


def _boot_roc_subjects(
    p: _Sorted,
    n_boot: int,
    seed: int,
    subj: Subjects,
    fars: Sequence[float],
    want_eer: bool = True,
    want_auc: bool = False,
) -> dict[str, np.ndarray]:
    """:func:`_boot_roc` of ``n_boot`` subject resamples (two-way subsets bootstrap).

    A resample gives every pair the integer weight of :func:`~fetoolkit.metrics.subjects.pair_weights`
    (cumulated in int64: the impostor weights ``c_a * c_b`` summed over millions of pairs exceed
    int32). The class totals vary from resample to resample, and so does the FAR quota
    ``floor(impostor weight * far)``. A statistic is NaN on a resample where it is undefined: a
    class with zero weight (EER, AUC, TAR), or a quota below one impostor (TAR@FAR).
    """
    rng = np.random.default_rng(seed)
    gsel, isel = np.flatnonzero(p.y), np.flatnonzero(~p.y)
    out: dict[str, list[np.ndarray]] = {"eer": [], "auc": [], "thr/eer": []}
    out.update({far_key(x): [] for x in fars})
    out.update({f"thr/{far_key(x)}": [] for x in fars})
    for b in _batches(n_boot, 2 * p.n):  # int64 weights: half the resamples of an int32 batch
        w = pair_weights(draw_counts(rng, b, subj.n), subj, p.y)
        rows = _Rows(p, _padcumsum(w[:, gsel], np.int64), _padcumsum(w[:, isel], np.int64))
        del w
        g, i = np.asarray(rows.g), np.asarray(rows.i)
        if int(g.max()) * int(i.max()) >= 2**62:
            raise ValueError("subject bootstrap: the resampled class weights overflow int64 (too many pairs)")
        ok = (g > 0) & (i > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            if want_eer:
                e, th = rows.eer()
                out["eer"].append(np.where(ok, e, np.nan))
                out["thr/eer"].append(np.where(ok, th, np.nan))
            if want_auc:
                out["auc"].append(np.where(ok, rows.auc(), np.nan))
            for x in fars:
                if _nan_reason(p.n_genuine, p.n_impostor, x) is None:
                    measurable = ok & (np.floor(i * x + _FAR_EPS) >= 1)
                    tar, th, _ = rows.tar_at_far(x)
                    out[far_key(x)].append(np.where(measurable, tar, np.nan))
                    out[f"thr/{far_key(x)}"].append(np.where(measurable, th, np.nan))
                else:
                    out[far_key(x)].append(np.full(b, np.nan))
                    out[f"thr/{far_key(x)}"].append(np.full(b, np.nan))
    return {k: np.concatenate(v) if v else np.empty(0) for k, v in out.items()}


def _boot_accuracy(
    p: _Sorted, f: np.ndarray, n_folds: int, n_boot: int, seed: int, subj: Subjects | None = None
) -> np.ndarray:
    """Mean k-fold accuracy of ``n_boot`` resamples stratified by (fold, class): float64 ``[n_boot]``.

    With ``subj`` (the subjects in ``p``'s order): subject resamples, drawn within each fold when
    the folds are subject-disjoint (every fold keeps its subjects' number), else over all
    subjects; NaN on a resample where a fold has zero weight (its accuracy is undefined).
    """
    if subj is not None:
        return _boot_accuracy_subjects(p, f, n_folds, n_boot, seed, subj)
    rng = np.random.default_rng(seed)
    strata = [s for k in range(n_folds) for c in (p.y, ~p.y) if (s := np.flatnonzero((f == k) & c)).size]
    out = []
    for b in _batches(n_boot, p.n):
        accs, _ = _kfold_core(p, f, n_folds, _draw(strata, p.n, b, rng))
        out.append(accs.mean(axis=1))
    return np.concatenate(out)


def _boot_accuracy_subjects(
    p: _Sorted, f: np.ndarray, n_folds: int, n_boot: int, seed: int, subj: Subjects
) -> np.ndarray:
    rng = np.random.default_rng(seed)
    strata = fold_strata(subj, f, n_folds)
    members = [np.flatnonzero(f == k) for k in range(n_folds)]
    out = []
    for b in _batches(n_boot, 2 * p.n):
        w = pair_weights(draw_counts(rng, b, subj.n, strata), subj, p.y)
        fold_w = np.stack([w[:, m].sum(axis=1) for m in members], axis=1)
        ok = (fold_w > 0).all(axis=1)
        acc = np.full(b, np.nan)
        if ok.any():
            accs, _ = _kfold_core(p, f, n_folds, w[ok])
            acc[ok] = accs.mean(axis=1)
        out.append(acc)
    return np.concatenate(out)


_NAMED = ("eer", "auc", "accuracy", "tar_at_far")


def bootstrap_ci(
    scores: np.ndarray,
    labels: np.ndarray,
    statistic: str | Callable[..., float],
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    folds: np.ndarray | None = None,
    far: float | None = None,
) -> tuple[float, float]:
    """Stratified percentile bootstrap interval of a verification statistic.

    Genuine and impostor pairs are resampled separately (with replacement, each class keeping
    its size); when ``folds`` is given, separately within each (fold, class), so every fold
    keeps its size and class balance. The interval is the ``(1 - level) / 2`` and
    ``(1 + level) / 2`` quantiles of the ``n_boot`` resampled statistics. Pairs are treated as
    independent; pairs that share images or identities are not, so the interval is optimistic
    for such protocols.

    Args:
        scores: float ``[P]``.
        labels: bool/int ``[P]``, 1 = genuine.
        statistic: ``"eer"``, ``"auc"``, ``"tar_at_far"`` (needs ``far``) or ``"accuracy"``
            (mean k-fold accuracy, needs ``folds``; the threshold selection is redone on every
            resample) -- these run vectorised on the sorted pairs, without re-sorting; or any
            callable ``statistic(scores, labels) -> float`` (``statistic(scores, labels, folds)``
            when ``folds`` is given), called once per resample.
        n_boot: number of resamples, >= 1.
        level: interval coverage in (0, 1).
        seed: seed of ``numpy.random.default_rng``; same inputs and seed give the same interval.
        folds: int ``[P]`` fold ids, or None.
        far: target FAR for ``"tar_at_far"``.

    Returns:
        ``(low, high)``; ``(nan, nan)`` when the statistic is NaN on any resample (e.g. TAR at
        a FAR finer than ``1 / n_impostor``).

    Raises:
        ValueError: invalid input, only one class present, or a named statistic missing its
            ``far`` / ``folds``.
    """
    n_boot, level = _check_boot(n_boot, level)
    p = _prepare(scores, labels)
    _require_both(p.n_genuine, p.n_impostor, "bootstrap_ci")
    f_sorted: np.ndarray | None = None
    n_folds = 0
    if folds is not None:
        f_idx, n_folds = _check_folds(folds, p.n)
        f_sorted = f_idx[p.order]
    if callable(statistic):
        return _percentile(_boot_generic(p, statistic, n_boot, seed, folds), level)
    if statistic not in _NAMED:
        raise ValueError(f"statistic must be a callable or one of {_NAMED}, got {statistic!r}")
    if statistic == "accuracy":
        if f_sorted is None:
            raise ValueError("statistic 'accuracy' (k-fold accuracy) needs folds")
        return _percentile(_boot_accuracy(p, f_sorted, n_folds, n_boot, seed), level)
    if statistic == "tar_at_far":
        if far is None:
            raise ValueError("statistic 'tar_at_far' needs far=")
        far = _check_far(far)
        return _percentile(_boot_roc(p, n_boot, seed, f_sorted, [far], want_eer=False)[far_key(far)], level)
    return _percentile(
        _boot_roc(p, n_boot, seed, f_sorted, [], want_eer=statistic == "eer", want_auc=statistic == "auc")[statistic],
        level,
    )


def _boot_generic(p: _Sorted, statistic: Callable[..., float], n_boot: int, seed: int, folds: Any) -> np.ndarray:
    """Resample indices (stratified) and call ``statistic`` on each resample."""
    rng = np.random.default_rng(seed)
    s = np.empty(p.n)
    s[p.order] = p.s
    y = np.empty(p.n, bool)
    y[p.order] = p.y
    fo = None if folds is None else np.asarray(folds)
    f_idx = None if folds is None else _check_folds(folds, p.n)[0]
    strata = [sel[st] for sel in (np.flatnonzero(y), np.flatnonzero(~y)) for st in _fold_strata(sel, f_idx)]
    out = np.empty(n_boot)
    for i in range(n_boot):
        idx = np.concatenate([pos[rng.integers(0, pos.size, pos.size)] for pos in strata])
        out[i] = statistic(s[idx], y[idx]) if fo is None else statistic(s[idx], y[idx], fo[idx])
    return out


def accuracy_ci(
    scores: np.ndarray, labels: np.ndarray, folds: np.ndarray, *, n_boot: int = 1000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Bootstrap interval of the mean k-fold accuracy.

    Pairs are resampled within each (fold, class) stratum -- every fold keeps its size and
    class balance -- and the whole protocol, threshold selection included, is rerun on each
    resample (vectorised: counts on the sorted pairs, no re-sorting). Resampling whole folds
    was rejected: with 10 folds it gives a coarse, unstable interval.
    """
    return bootstrap_ci(scores, labels, "accuracy", n_boot=n_boot, level=level, seed=seed, folds=folds)


def eer_ci(
    scores: np.ndarray,
    labels: np.ndarray,
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    folds: np.ndarray | None = None,
) -> tuple[float, float]:
    """Stratified percentile bootstrap interval of the EER (see :func:`bootstrap_ci`)."""
    return bootstrap_ci(scores, labels, "eer", n_boot=n_boot, level=level, seed=seed, folds=folds)


def tar_at_far_ci(
    scores: np.ndarray,
    labels: np.ndarray,
    far: float,
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    folds: np.ndarray | None = None,
) -> tuple[float, float]:
    """Stratified percentile bootstrap interval of TAR@``far``; ``(nan, nan)`` when not measurable."""
    return bootstrap_ci(scores, labels, "tar_at_far", n_boot=n_boot, level=level, seed=seed, folds=folds, far=far)


def roc_cis(
    scores: np.ndarray,
    labels: np.ndarray,
    fars: Sequence[float],
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    folds: np.ndarray | None = None,
) -> tuple[tuple[float, float], dict[str, tuple[float, float]]]:
    """EER and TAR@FAR intervals from one set of bootstrap resamples.

    Equal to :func:`eer_ci` and :func:`tar_at_far_ci` called one by one with the same
    ``seed`` (the resamples do not depend on the statistics asked for), at the cost of one of
    them: drawing the resamples dominates.

    Returns:
        ``(eer_interval, {far_key(far): tar_interval})``; ``(nan, nan)`` for a FAR the impostor
        count cannot measure.
    """
    n_boot, level = _check_boot(n_boot, level)
    fars = [_check_far(x) for x in fars]
    p = _prepare(scores, labels)
    _require_both(p.n_genuine, p.n_impostor, "roc_cis")
    f_sorted = None if folds is None else _check_folds(folds, p.n)[0][p.order]
    st = _boot_roc(p, n_boot, seed, f_sorted, fars)
    return _percentile(st["eer"], level), {far_key(x): _percentile(st[far_key(x)], level) for x in fars}


def threshold_at_far_ci(
    scores: np.ndarray, labels: np.ndarray, far: float, *, n_boot: int = 1000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Stratified percentile bootstrap interval of the threshold :func:`threshold_at_far` picks.

    How far the chosen threshold itself moves when the pairs are redrawn (genuine and impostor
    pairs resampled separately, without re-sorting): the interval to quote beside a threshold that
    is carried to new data. ``(nan, nan)`` when the FAR is not measurable.
    """
    n_boot, level = _check_boot(n_boot, level)
    far = _check_far(far)
    p = _prepare(scores, labels)
    _require_both(p.n_genuine, p.n_impostor, "threshold_at_far_ci")
    if _nan_reason(p.n_genuine, p.n_impostor, far) is not None:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    gsel, isel = np.flatnonzero(p.y), np.flatnonzero(~p.y)
    gstrata, istrata = _fold_strata(gsel, None), _fold_strata(isel, None)
    out = []
    for b in _batches(n_boot, p.n):
        cg = _padcumsum(_draw(gstrata, gsel.size, b, rng), np.int32)
        ci = _padcumsum(_draw(istrata, isel.size, b, rng), np.int32)
        out.append(_Rows(p, cg, ci).tar_at_far(far)[1])
    return _percentile(np.concatenate(out), level)
