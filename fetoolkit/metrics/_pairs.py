"""The shared core of the verification metrics: input checks, the sorted view of the pairs and
the cumulative counts (``_Rows``) every ROC figure is read from, for the data or for a bootstrap
resample given as integer weights. Private to ``fetoolkit.metrics``; see
:mod:`fetoolkit.metrics.verification` for the conventions."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from fetoolkit.metrics.verification_types import EerResult, TarAtFar

# Slack for ``n_impostor * far`` so that 1000 * 1e-3 (or 1e6 * 1e-6) counts as one impostor.
_FAR_EPS = 1e-9


# --------------------------------------------------------------------------------------------
# Validation and the shared sorted view
# --------------------------------------------------------------------------------------------


def _check_scores_labels(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert: float64 ``[P]`` scores, bool ``[P]`` labels (True = genuine)."""
    s = np.asarray(scores)
    if s.ndim != 1:
        raise ValueError(f"scores must be 1-D [P], got shape {s.shape}")
    if s.size == 0:
        raise ValueError("scores is empty: need at least one pair")
    if not (np.issubdtype(s.dtype, np.number) or s.dtype == np.bool_) or np.iscomplexobj(s):
        raise ValueError(f"scores must be real numbers, got dtype {s.dtype}")
    s = s.astype(np.float64, copy=False)
    if not np.isfinite(s).all():
        n_nan = int(np.isnan(s).sum())
        n_inf = int(np.isinf(s).sum())
        raise ValueError(
            f"scores must be finite: {n_nan} NaN and {n_inf} infinite of {s.size} (drop or fix those pairs first)"
        )
    lab = np.asarray(labels)
    if lab.ndim != 1:
        raise ValueError(f"labels must be 1-D [P], got shape {lab.shape}")
    if lab.shape[0] != s.shape[0]:
        raise ValueError(f"scores and labels differ in length: {s.shape[0]} vs {lab.shape[0]}")
    if lab.dtype == np.bool_:
        y = lab
    elif np.issubdtype(lab.dtype, np.number) and not np.iscomplexobj(lab):
        is1 = lab == 1
        ok = is1 | (lab == 0)
        if not ok.all():
            bad = np.unique(lab[~ok])[:5]
            raise ValueError(f"labels must be 0/1 or bool (1 = genuine); found other values, e.g. {bad.tolist()}")
        y = is1
    else:
        raise ValueError(f"labels must be bool or 0/1 numbers, got dtype {lab.dtype}")
    return s, y


def _require_both(n_genuine: int, n_impostor: int, what: str) -> None:
    if n_genuine == 0 or n_impostor == 0:
        raise ValueError(
            f"{what} needs both genuine and impostor pairs; got {n_genuine} genuine and {n_impostor} impostor"
        )


def _check_folds(folds: Any, n: int) -> tuple[np.ndarray, int]:
    """Validate fold ids; return (fold index 0..K-1, int32 ``[P]``; K)."""
    f = np.asarray(folds)
    if f.ndim != 1:
        raise ValueError(f"folds must be 1-D [P], got shape {f.shape}")
    if f.shape[0] != n:
        raise ValueError(f"folds and scores differ in length: {f.shape[0]} vs {n}")
    if f.dtype == np.bool_ or not np.issubdtype(f.dtype, np.number) or np.iscomplexobj(f):
        raise ValueError(f"folds must be integer fold ids, got dtype {f.dtype}")
    if not np.issubdtype(f.dtype, np.integer):
        if not np.isfinite(f).all() or (f != np.round(f)).any():
            raise ValueError("folds must be integer fold ids (found non-integer values)")
    lo, hi = int(f.min()), int(f.max())
    if hi - lo + 1 > n:
        raise ValueError(
            f"fold ids span {lo}..{hi} but there are only {n} pairs: some folds have "
            "no pairs (fold ids must be consecutive integers)"
        )
    idx = (f - lo).astype(np.int32)
    counts = np.bincount(idx, minlength=hi - lo + 1)
    if counts.size < 2:
        raise ValueError(f"k-fold accuracy needs at least 2 folds, got 1 (fold id {lo})")
    empty = np.flatnonzero(counts == 0)
    if empty.size:
        raise ValueError(
            f"fold ids must be consecutive integers {lo}..{hi}; folds {(empty + lo).tolist()[:10]} have no pairs"
        )
    return idx, int(counts.size)


@dataclass(frozen=True, eq=False)
class _Sorted:
    """The pairs sorted by ascending score, grouped by distinct score.

    "Boundary ``j``" (0..M) means the threshold that accepts the groups ``j..M-1``: threshold
    ``u[j]`` for ``j < M``, ``+inf`` for ``j = M``.

    Attributes:
        s: float64 ``[P]`` ascending scores.
        y: bool ``[P]`` labels in the same order.
        order: intp ``[P]`` the argsort (``s = scores[order]``).
        starts_ext: int64 ``[M + 1]``: index of the first pair of each of the ``M`` distinct
            scores, then ``P`` (= pairs below boundary ``j``).
        gbelow: int64 ``[M + 1]``: genuine pairs below boundary ``j``.
        u: float64 ``[M]`` the distinct scores, ascending.
        n_genuine, n_impostor: class counts.
    """

    s: np.ndarray
    y: np.ndarray
    order: np.ndarray
    starts_ext: np.ndarray
    gbelow: np.ndarray
    u: np.ndarray
    n_genuine: int
    n_impostor: int

    @property
    def n(self) -> int:
        return int(self.s.shape[0])

    @property
    def m(self) -> int:
        return int(self.u.shape[0])

    def threshold(self, j: np.ndarray) -> np.ndarray:
        """Threshold of boundaries ``j`` (``+inf`` for ``j = M``)."""
        j = np.asarray(j)
        return np.where(j < self.m, self.u[np.minimum(j, self.m - 1)], np.inf)


def _prepare(scores: Any, labels: Any) -> _Sorted:
    s, y = _check_scores_labels(scores, labels)
    order = np.argsort(s)
    ss = s[order]
    ys = y[order]
    brk = np.flatnonzero(ss[1:] != ss[:-1]) + 1
    starts_ext = np.empty(brk.size + 2, np.int64)
    starts_ext[0] = 0
    starts_ext[1:-1] = brk
    starts_ext[-1] = ss.size
    gbelow = _padcumsum(ys, np.int64)[starts_ext]
    n_gen = int(gbelow[-1])
    return _Sorted(ss, ys, order, starts_ext, gbelow, ss[starts_ext[:-1]], n_gen, int(s.size) - n_gen)


def _int_dtype(n: int) -> type:
    """Integer type for counts and signed sums over ``n`` pairs, with room for a sentinel."""
    return np.int32 if n < 2**29 else np.int64


def _padcumsum(a: np.ndarray, dtype: type) -> np.ndarray:
    """Cumulative sum along the last axis with a leading 0: ``[..., L]`` -> ``[..., L + 1]``."""
    out = np.empty(a.shape[:-1] + (a.shape[-1] + 1,), dtype)
    out[..., 0] = 0
    np.cumsum(a, axis=-1, dtype=dtype, out=out[..., 1:])
    return out


# --------------------------------------------------------------------------------------------
# ROC-based figures. A "row" is one weighting of the pairs: the data itself, or a bootstrap
# resample given as cumulative draw counts per class.
# --------------------------------------------------------------------------------------------


class _Rows:
    """Accepted genuine / impostor counts at any boundary, for ``B`` weightings of the pairs.

    Args:
        p: the sorted pairs.
        cg, ci: None (every pair once, ``B = 1``) or int ``[B, G + 1]`` / ``[B, I + 1]``
            cumulative bootstrap counts of the genuine / impostor pairs in ascending-score order
            (leading 0).
    """

    def __init__(self, p: _Sorted, cg: np.ndarray | None = None, ci: np.ndarray | None = None):
        self.p = p
        self.cg, self.ci = cg, ci
        self.b = 1 if cg is None else cg.shape[0]
        self.rows = np.arange(self.b)
        self.g = p.n_genuine if cg is None else cg[:, -1].astype(np.int64)
        self.i = p.n_impostor if ci is None else ci[:, -1].astype(np.int64)

    def at(self, j: np.ndarray, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(tps, fps), int64 shaped like ``j``: accepted genuine / impostors at boundary ``j``."""
        p = self.p
        gb = p.gbelow[j]
        ib = p.starts_ext[j] - gb
        if self.cg is None:
            return self.g - gb, self.i - ib
        r = self.rows if rows is None else rows
        if gb.ndim == 2 and r.ndim == 1:
            r = r[:, None]
        g = self.g if np.ndim(self.g) == 0 else self.g[r]
        i = self.i if np.ndim(self.i) == 0 else self.i[r]
        return g - self.cg[r, gb], i - self.ci[r, ib]

    def all(self) -> tuple[np.ndarray, np.ndarray]:
        """(tps, fps): int64 ``[B, M + 1]`` over boundaries ``j = 0..M`` (thresholds ascending)."""
        j = np.broadcast_to(np.arange(self.p.m + 1), (self.b, self.p.m + 1))
        return self.at(j)

    def _d(self, j: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(FAR - FRR) * G * I`` in integers at boundary ``j`` (one per row), with tps, fps."""
        tps, fps = self.at(j)
        return fps * self.g - (self.g - tps) * self.i, tps, fps

    def eer(self) -> tuple[np.ndarray, np.ndarray]:
        """EER of each row and its interpolated threshold: float64 ``[B]`` each.

        ``FAR - FRR`` decreases with the boundary, from ``+1`` (``j = 0``, accept all) to
        ``-1`` (``j = M``, accept nothing). A bisection finds the last boundary ``lo`` with
        ``FAR >= FRR`` and ``hi = lo + 1``; the EER is interpolated linearly between these two
        ROC points (exactly at ``lo`` when FAR = FRR there). Differences are exact integers.
        """
        m = self.p.m
        lo = np.zeros(self.b, np.int64)
        hi = np.full(self.b, m, np.int64)
        while True:
            open_ = hi - lo > 1
            if not open_.any():
                break
            mid = (lo + hi) // 2
            ge = self._d(mid)[0] >= 0
            lo = np.where(open_ & ge, mid, lo)
            hi = np.where(open_ & ~ge, mid, hi)
        d1, _, f1 = self._d(lo)
        d0, _, f0 = self._d(hi)
        d1 = d1.astype(np.float64)
        d0 = d0.astype(np.float64)
        exact = d1 == 0
        t = np.where(exact, 1.0, -d0 / (d1 - d0))
        far0, far1 = f0 / self.i, f1 / self.i
        e = far0 + t * (far1 - far0)
        th1 = self.p.threshold(lo)
        th0 = self.p.threshold(hi)
        with np.errstate(invalid="ignore"):
            th = np.where(exact | (hi == m), th1, th0 + t * (th1 - th0))
        return e, th

    def tar_at_far(self, far: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(tar, threshold, achieved_far) per row at the lowest threshold with FAR <= far.

        That is the smallest boundary ``j`` with accepted impostors <= ``floor(I * far)``
        (accepted impostors decrease with ``j``). The caller checks that the quota is >= 1.
        """
        quota = np.floor(self.i * far + _FAR_EPS).astype(np.int64)
        m = self.p.m
        lo = np.full(self.b, -1, np.int64)  # fps(lo) > quota (virtual at -1)
        hi = np.full(self.b, m, np.int64)  # fps(hi) <= quota
        while True:
            open_ = hi - lo > 1
            if not open_.any():
                break
            mid = (lo + hi) // 2
            ok = self.at(np.maximum(mid, 0))[1] <= quota
            hi = np.where(open_ & ok, mid, hi)
            lo = np.where(open_ & ~ok, mid, lo)
        tps, fps = self.at(hi)
        return tps / self.g, self.p.threshold(hi), fps / self.i

    def auc(self) -> np.ndarray:
        """Trapezoid AUC per row: float64 ``[B]``.

        Summed in integers (``sum dFP * (TP_left + TP_right)``, at most ``2 G I``) and divided
        once, so it equals ``roc_auc_score`` (ties count one half) up to one rounding.
        """
        tps, fps = self.all()
        twice = ((fps[:, :-1] - fps[:, 1:]) * (tps[:, :-1] + tps[:, 1:])).sum(axis=1)
        return twice / (2.0 * self.g * self.i)


def _far_quota(n_impostor: int, far: float) -> int:
    """Most impostors that may be accepted at FAR <= far."""
    return int(math.floor(n_impostor * far + _FAR_EPS))


def _check_far(far: float) -> float:
    far = float(far)
    if not (0.0 < far <= 1.0):
        raise ValueError(f"far must be in (0, 1], got {far}")
    return far


def _nan_reason(n_genuine: int, n_impostor: int, far: float) -> str | None:
    if n_impostor == 0:
        return f"no impostor pairs: FAR {far:g} cannot be measured"
    if _far_quota(n_impostor, far) < 1:
        need = math.ceil(1.0 / far - _FAR_EPS)
        return (
            f"FAR {far:g} is finer than 1/n_impostor = 1/{n_impostor} = {1.0 / n_impostor:.3g}: "
            f"at least {need} impostor pairs are needed to measure it, there are {n_impostor}"
        )
    if n_genuine == 0:
        return "no genuine pairs: TAR is undefined"
    return None


def _tar_at_far_sorted(p: _Sorted, far: float) -> TarAtFar:
    far = _check_far(far)
    reason = _nan_reason(p.n_genuine, p.n_impostor, far)
    if reason is not None:
        return TarAtFar(far, math.nan, math.nan, math.nan, reason)
    tar, th, achieved = _Rows(p).tar_at_far(far)
    return TarAtFar(far, float(tar[0]), float(th[0]), float(achieved[0]), None)


def _eer_sorted(p: _Sorted) -> EerResult:
    e, th = _Rows(p).eer()
    return EerResult(float(e[0]), float(th[0]))


def far_key(far: float) -> str:
    """Dict key of a FAR: ``1e-3 -> "1e-3"``, ``2.5e-4 -> "2.5e-4"``, ``1.0 -> "1e0"``."""
    mant, exp = f"{float(far):.12e}".split("e")
    mant = mant.rstrip("0").rstrip(".")
    return f"{mant}e{int(exp)}"
