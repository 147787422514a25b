"""Resampling by subject: Bolle, Ratha and Pankanti's subsets bootstrap, two-way.

Comparisons that share a subject are not independent: one hard subject moves every genuine
comparison it takes part in, and every impostor comparison it makes with the others. The
subsets bootstrap resamples the units that are independent, the subjects: each resample draws
the ``S`` subjects with replacement (``c_s`` = how often subject ``s`` was drawn, the counts
sum to ``S``), and

* a genuine comparison of subject ``s`` weighs ``c_s``;
* an impostor comparison of subjects ``a`` and ``b`` weighs ``c_a * c_b`` (two-way: both sides
  are resampled, so a pair of subjects drawn twice each counts four times).

This is exactly the comparison list one gets by materialising the drawn subjects (every copy of
a subject against every copy of another), but as integer weights over the already sorted pairs,
so every verification figure is recomputed by the weighted machinery of
:mod:`fetoolkit.metrics._pairs` and :mod:`fetoolkit.metrics.kfold` without re-sorting.

Subject ids: any hashable values (ints, names), mapped to codes ``0..S-1`` in their *natural*
order (integers numerically; text with its digit runs compared as numbers, ``"s2" < "s10"``, the
order in which an identity folder numbers its subjects). The draw of resample ``r`` gives code
``k`` the count ``c[r, k]``, so the same subjects under integer ids and under their folder names
get the same counts: a run and its exported score file give the same intervals.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Above this fraction of resamples whose statistic is undefined (a class or a fold with zero
#: weight, a FAR finer than one impostor of the resample) the interval is NaN: the rest would be
#: a sample conditioned on "the statistic exists", no longer the bootstrap distribution.
MAX_DROPPED_FRACTION = 0.05


@dataclass(frozen=True, eq=False)
class Subjects:
    """The subjects of both sides of each comparison, as codes.

    Attributes:
        a, b: int64 ``[P]`` subject code of each side, ``0..n - 1``.
        n: number of distinct subjects ``S``.
    """

    a: np.ndarray
    b: np.ndarray
    n: int

    def take(self, order: np.ndarray) -> Subjects:
        """The same subjects in another pair order (e.g. the ascending-score order)."""
        return Subjects(self.a[order], self.b[order], self.n)

    def n_with(self, mask: np.ndarray) -> int:
        """Number of distinct subjects in the comparisons selected by ``mask`` (bool ``[P]``)."""
        if not mask.any():
            return 0
        return int(np.unique(np.concatenate([self.a[mask], self.b[mask]])).size)


def _natural_key(v: Any) -> tuple[tuple[int, Any], ...]:
    parts = re.split(r"(\d+)", str(v))
    return tuple((0, int(t)) if t.isdigit() else (1, t) for t in parts if t != "")


def subject_codes(subject_a: Any, subject_b: Any) -> Subjects:
    """Map the subjects of both sides (``[P]`` each, any hashable ids) to codes ``0..S-1``.

    Integer ids keep their numeric order; any other ids (names) are ordered naturally (digit
    runs as numbers). ``S`` counts the subjects that appear in at least one comparison.

    Raises:
        ValueError: the two sides differ in length, are not 1-D, or hold missing ids.
    """
    sa, sb = np.asarray(subject_a), np.asarray(subject_b)
    if sa.ndim != 1 or sb.ndim != 1 or sa.shape != sb.shape:
        raise ValueError(f"subjects must be two 1-D arrays of one length, got shapes {sa.shape} and {sb.shape}")
    both = np.concatenate([sa, sb])
    if both.dtype.kind in "iu":
        names, inv = np.unique(both, return_inverse=True)
    else:
        if any(v is None or (isinstance(v, float) and v != v) for v in both.tolist()):
            raise ValueError("subjects hold missing ids (None/NaN): every comparison needs both subjects")
        distinct = sorted({str(v) for v in both.tolist()}, key=_natural_key)
        index = {name: k for k, name in enumerate(distinct)}
        inv = np.fromiter((index[str(v)] for v in both.tolist()), np.int64, both.size)
        names = distinct
    n = sa.size
    return Subjects(inv[:n].astype(np.int64), inv[n:].astype(np.int64), len(names))


def draw_counts(
    rng: np.random.Generator, b: int, n_subjects: int, strata: Sequence[np.ndarray] | None = None
) -> np.ndarray:
    """Subject counts of ``b`` resamples: int64 ``[b, S]``.

    Without ``strata``: ``rng.integers(0, S, size=(b, S))`` drawn subjects, counted per row (a
    multinomial of ``S`` draws over ``S`` subjects). With ``strata`` (disjoint arrays of subject
    codes, e.g. the subjects of each subject-disjoint fold): for each stratum in turn,
    ``rng.integers(0, k, size=(b, k))`` draws among its ``k`` subjects, so every stratum keeps its
    number of subjects. The 64-bit draws do not depend on how the resamples are batched.
    """
    groups = [np.arange(n_subjects)] if strata is None else list(strata)
    c = np.zeros((b, n_subjects), np.int64)
    rows = np.arange(b, dtype=np.int64)[:, None]
    for g in groups:
        k = g.size
        d = rng.integers(0, k, size=(b, k))
        c[:, g] = np.bincount((d + rows * k).ravel(), minlength=b * k).reshape(b, k)
    return c


def pair_weights(counts: np.ndarray, subjects: Subjects, genuine: np.ndarray) -> np.ndarray:
    """Integer weight of every comparison in each resample: int64 ``[b, P]``.

    Genuine comparison of ``s``: ``c_s``; impostor comparison of ``a`` and ``b``: ``c_a * c_b``.
    int64 throughout: summed over millions of impostor comparisons the weights exceed int32.
    """
    w = counts[:, subjects.a]
    imp = ~np.asarray(genuine, bool)
    w[:, imp] *= counts[:, subjects.b[imp]]
    return w


def fold_strata(subjects: Subjects, folds: np.ndarray, n_folds: int) -> list[np.ndarray] | None:
    """Subject codes of each fold when the folds are subject-disjoint (LFW's sets, the identity
    data sets' k-fold protocol), else None.

    With subject-disjoint folds the subjects are drawn within each fold, so every fold keeps its
    number of subjects (the pair bootstrap keeps each fold's size the same way); drawn over all
    subjects at once, a fold of 4 of 40 subjects would be empty in about one resample in seven.
    """
    groups = []
    seen = 0
    for k in range(n_folds):
        m = folds == k
        g = np.unique(np.concatenate([subjects.a[m], subjects.b[m]]))
        groups.append(g)
        seen += g.size
    if seen != np.unique(np.concatenate(groups)).size:
        return None
    return groups


def interval_dropping(stats: np.ndarray, level: float) -> tuple[tuple[float, float], int]:
    """Percentile interval of the resamples whose statistic is defined, and how many were not.

    NaN marks an undefined resample. The interval is ``(nan, nan)`` when more than
    :data:`MAX_DROPPED_FRACTION` of the resamples are undefined (or none is defined).
    """
    ok = np.isfinite(stats)
    dropped = int(stats.size - ok.sum())
    if not ok.any() or dropped > MAX_DROPPED_FRACTION * stats.size:
        return (float("nan"), float("nan")), dropped
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(stats[ok], [alpha, 1.0 - alpha])
    return (float(lo), float(hi)), dropped
