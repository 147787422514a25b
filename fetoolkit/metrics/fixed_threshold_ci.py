"""Bootstrap intervals of the error rates at a fixed threshold: by subject where subjects are known.

``subject`` (Bolle et al.'s subsets bootstrap, two-way): each resample draws the subjects with
replacement, giving subject ``s`` the weight ``w_s`` = how often it was drawn; a genuine comparison
of ``s`` weighs ``w_s``, an impostor comparison of ``a`` against ``b`` weighs ``w_a * w_b``, and
FMR / FNMR are the weighted fractions of errors. Comparisons that share a subject move together,
so the interval reflects how few subjects there are, not how many pairs they make.

``pair``: genuine and impostor comparisons resampled independently (each class keeps its size):
at a fixed threshold the resampled error count is binomial, so it is drawn as one. This is the
interval of a population of independent comparisons, and is optimistic when pairs share subjects.

The threshold is held fixed (it was chosen elsewhere, e.g. on a dev set).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Resamples x unique subject pairs held in memory at once (float64 cells).
_CELLS = 4_000_000


@dataclass(frozen=True)
class RateIntervals:
    """Percentile intervals of FMR, FNMR and HTER at one threshold.

    Attributes:
        fmr / fnmr / hter: ``(low, high)``; NaN ends when the rate is undefined.
        method: ``subject`` or ``pair``.
        n_boot: resamples.
        level: coverage.
        n_subjects: subjects resampled (``subject`` only, else 0).
    """

    fmr: tuple[float, float]
    fnmr: tuple[float, float]
    hter: tuple[float, float]
    method: str
    n_boot: int
    level: float
    n_subjects: int = 0


def subject_codes(subject_a: np.ndarray, subject_b: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Both sides' subjects as int64 codes ``[P]`` into one list of ``S`` subjects."""
    names, inv = np.unique(np.concatenate([subject_a.astype(str), subject_b.astype(str)]), return_inverse=True)
    n = len(subject_a)
    return inv[:n].astype(np.int64), inv[n:].astype(np.int64), len(names)


def _quantiles(x: np.ndarray, level: float) -> tuple[float, float]:
    x = x[np.isfinite(x)]
    if x.size == 0:
        return (math.nan, math.nan)
    a = (1.0 - level) / 2.0
    lo, hi = np.quantile(x, [a, 1.0 - a])
    return (float(lo), float(hi))


def _subject_draws(
    errors: np.ndarray,
    labels: np.ndarray,
    ca: np.ndarray,
    cb: np.ndarray,
    n_subjects: int,
    n_boot: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted FMR and FNMR of each resample: two float64 ``[n_boot]``."""
    g = labels
    g_tot = np.bincount(ca[g], minlength=n_subjects).astype(np.float64)
    g_err = np.bincount(ca[g], weights=errors[g].astype(np.float64), minlength=n_subjects)
    key = ca[~g] * n_subjects + cb[~g]
    uk, inv = np.unique(key, return_inverse=True)
    ua, ub = uk // n_subjects, uk % n_subjects
    i_tot = np.bincount(inv, minlength=len(uk)).astype(np.float64)
    i_err = np.bincount(inv, weights=errors[~g].astype(np.float64), minlength=len(uk))
    fmr = np.empty(n_boot)
    fnmr = np.empty(n_boot)
    step = max(1, _CELLS // max(len(uk), n_subjects, 1))
    for start in range(0, n_boot, step):
        b = min(step, n_boot - start)
        draws = rng.integers(0, n_subjects, size=(b, n_subjects))
        w = np.stack([np.bincount(d, minlength=n_subjects) for d in draws]).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            fnmr[start : start + b] = (w @ g_err) / (w @ g_tot)
            wi = w[:, ua] * w[:, ub]
            fmr[start : start + b] = (wi @ i_err) / (wi @ i_tot)
    return fmr, fnmr


def rate_intervals(
    scores: np.ndarray,
    labels: np.ndarray,
    threshold: float,
    *,
    subject_a: np.ndarray | None = None,
    subject_b: np.ndarray | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> RateIntervals:
    """Intervals of FMR, FNMR, HTER at ``threshold`` (accept ``score >= threshold``).

    Args:
        scores: float ``[P]``.
        labels: bool ``[P]``, True = genuine.
        threshold: the fixed threshold.
        subject_a / subject_b: object ``[P]`` subjects of both sides; with them the subject
            bootstrap, without them the pair bootstrap.
        n_boot: resamples (>= 1).
        level: coverage in (0, 1).
        seed: generator seed.
    """
    if n_boot < 1 or not 0.0 < level < 1.0:
        raise ValueError(f"need n_boot >= 1 and 0 < level < 1, got {n_boot}, {level}")
    s = np.asarray(scores, np.float64)
    y = np.asarray(labels, bool)
    errors = np.where(y, s < threshold, s >= threshold)
    rng = np.random.default_rng(seed)
    if subject_a is not None and subject_b is not None:
        ca, cb, n_subjects = subject_codes(subject_a, subject_b)
        fmr, fnmr = _subject_draws(errors, y, ca, cb, n_subjects, n_boot, rng)
        method = "subject"
    else:
        ng, ni = int(y.sum()), int((~y).sum())
        n_subjects = 0
        p_fnmr = errors[y].mean() if ng else math.nan
        p_fmr = errors[~y].mean() if ni else math.nan
        fnmr = rng.binomial(ng, p_fnmr, n_boot) / ng if ng else np.full(n_boot, math.nan)
        fmr = rng.binomial(ni, p_fmr, n_boot) / ni if ni else np.full(n_boot, math.nan)
        method = "pair"
    return RateIntervals(
        _quantiles(fmr, level),
        _quantiles(fnmr, level),
        _quantiles((fmr + fnmr) / 2, level),
        method,
        int(n_boot),
        float(level),
        n_subjects,
    )
