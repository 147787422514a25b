"""Operating points: a threshold chosen on one set by a named criterion, its rates on another.

Conventions (bob.measure's): a comparison is accepted when ``score >= threshold``; FMR (FAR) is
the fraction of impostor comparisons accepted, FNMR (FRR) the fraction of genuine ones rejected,
HTER their mean. Between two distinct scores the rates do not change.

Criteria (``threshold.criterion``):

* ``far``: the lowest score whose FAR is at most ``far`` (the ROC's TAR@FAR threshold); refused
  (:class:`UnmeasurableTarget`) when ``far < 1 / n_impostor``;
* ``frr``: the highest score whose FRR is at most ``frr``; refused when ``frr < 1 / n_genuine``;
* ``eer``: smallest ``|FAR - FRR|``, ``min_hter``: smallest ``(FAR + FRR) / 2``, and the EPC's
  ``alpha * FAR + (1 - alpha) * FRR``: bob.measure's ``minimizingThreshold``, exactly: the
  candidates are the lowest score (accept all) and the midpoints between consecutive distinct
  scores, walked upwards until one class has no score left; among equal costs the highest
  threshold wins (the last one walked, and then "reject everything" just above the top score,
  must beat the others strictly). Rates are counted exactly: bob accumulates FAR by subtracting
  ``1/n`` and can be left at ``1e-16`` instead of 0, so its EPC at ``alpha = 1`` may jump to
  "reject everything" where this one keeps the threshold just above the top impostor.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from fetoolkit.metrics._pairs import _FAR_EPS, _check_scores_labels, _require_both

CRITERIA = ("eer", "far", "frr", "min_hter")


class UnmeasurableTarget(ValueError):
    """A FAR (FRR) target finer than one impostor (genuine) comparison of the set can measure."""


@dataclass(frozen=True)
class Rates:
    """Error rates at one threshold (accept ``score >= threshold``).

    Attributes:
        threshold: the threshold.
        fmr: false match rate (impostors accepted / impostors); NaN without impostors.
        fnmr: false non-match rate (genuine rejected / genuine); NaN without genuine pairs.
        hter: ``(fmr + fnmr) / 2``.
        n_genuine / n_impostor: comparisons of each kind.
        n_false_match / n_false_non_match: the error counts.
    """

    threshold: float
    fmr: float
    fnmr: float
    hter: float
    n_genuine: int
    n_impostor: int
    n_false_match: int
    n_false_non_match: int

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def rates_at(scores: np.ndarray, labels: np.ndarray, threshold: float) -> Rates:
    """FMR, FNMR and HTER of ``scores`` float ``[P]`` / ``labels`` bool ``[P]`` at ``threshold``."""
    s, y = _check_scores_labels(scores, labels)
    acc = s >= threshold
    ng, ni = int(y.sum()), int((~y).sum())
    fm, fnm = int((acc & ~y).sum()), int((~acc & y).sum())
    fmr = fm / ni if ni else math.nan
    fnmr = fnm / ng if ng else math.nan
    return Rates(float(threshold), fmr, fnmr, (fmr + fnmr) / 2, ng, ni, fm, fnm)


@dataclass(frozen=True)
class Candidates:
    """Every candidate threshold with its rates, ascending.

    Attributes:
        thresholds: float64 ``[K + 1]``: the ``K`` distinct scores ascending, then ``+inf``.
        n_fa: int64 ``[K + 1]`` impostors accepted (``score >= t``).
        n_fr: int64 ``[K + 1]`` genuine comparisons rejected (``score < t``).
        n_genuine / n_impostor: class sizes.
    """

    thresholds: np.ndarray
    n_fa: np.ndarray
    n_fr: np.ndarray
    n_genuine: int
    n_impostor: int

    @property
    def far(self) -> np.ndarray:
        return self.n_fa / self.n_impostor

    @property
    def frr(self) -> np.ndarray:
        return self.n_fr / self.n_genuine


def candidates(scores: np.ndarray, labels: np.ndarray) -> Candidates:
    """All candidate thresholds of a set of comparisons (one sort)."""
    s, y = _check_scores_labels(scores, labels)
    ng, ni = int(y.sum()), int((~y).sum())
    _require_both(ng, ni, "a threshold criterion")
    u, inv = np.unique(s, return_inverse=True)
    gen = np.bincount(inv[y], minlength=len(u))
    imp = np.bincount(inv[~y], minlength=len(u))
    # rejected genuine at t = u[k]: genuine strictly below u[k]; accepted impostors: at or above.
    n_fr = np.concatenate([[0], np.cumsum(gen)]).astype(np.int64)
    n_fa = np.concatenate([ni - np.concatenate([[0], np.cumsum(imp)[:-1]]), [0]]).astype(np.int64)
    return Candidates(np.concatenate([u, [np.inf]]), n_fa, n_fr, ng, ni)


def minimizing_threshold(c: Candidates, cost: np.ndarray) -> float:
    """bob.measure's ``minimizingThreshold`` over the candidates' rates (see the module docstring).

    Args:
        c: the candidates (state ``m`` = accept scores ``>= c.thresholds[m]``).
        cost: float64 ``[K + 1]`` the criterion's cost of each state.
    """
    u = c.thresholds
    both_left = (c.n_fa > 0) & (c.n_fr < c.n_genuine)  # a score of each class at or above u[m]
    last = int(np.argmin(both_left))  # the first state without both: walked last, compared strictly
    walked = cost[:last]
    m = int(len(walked) - 1 - np.argmin(walked[::-1]))  # ties: the highest threshold
    if cost[last] < cost[m]:
        m = last
    if last < len(u) - 1 and cost[-1] < cost[m]:  # bob 6's last check: rejecting everything, strictly better
        return float(np.nextafter(u[-2], np.inf))
    if m == 0:
        return float(u[0])
    if m == len(u) - 1:  # both classes ran out together: bob keeps the last score
        return float(u[-2])
    return float((u[m - 1] + u[m]) / 2)


def _quota(n: int, target: float, what: str, kind: str) -> int:
    quota = math.floor(n * target + _FAR_EPS)
    if quota < 1:
        raise UnmeasurableTarget(
            f"threshold.{what}={target:g} is finer than one of the {n} {kind} comparisons can measure "
            f"(1/{n} = {1 / n:.3g}); give more {kind} comparisons or a coarser threshold.{what}"
        )
    return quota


def _pick(c: Candidates, criterion: str, far: float, frr: float, alpha: float) -> float:
    if criterion == "far":
        quota = _quota(c.n_impostor, far, "far", "impostor")
        return float(c.thresholds[int(np.argmax(c.n_fa <= quota))])  # n_fa falls: the first that fits
    if criterion == "frr":
        quota = _quota(c.n_genuine, frr, "frr", "genuine")
        return float(c.thresholds[int(np.flatnonzero(c.n_fr <= quota)[-1])])  # n_fr rises: the last that fits
    if criterion == "eer":
        return minimizing_threshold(c, np.abs(c.far - c.frr))
    if criterion == "min_hter":
        return minimizing_threshold(c, (c.far + c.frr) / 2)
    if criterion == "weighted":
        return minimizing_threshold(c, alpha * c.far + (1.0 - alpha) * c.frr)
    raise ValueError(f"threshold.criterion must be one of {', '.join(CRITERIA)}, got {criterion!r}")


def choose_threshold(
    scores: np.ndarray, labels: np.ndarray, criterion: str, *, far: float = 1e-3, frr: float = 1e-2
) -> float:
    """The threshold ``criterion`` picks on these comparisons (see the module docstring).

    Raises:
        UnmeasurableTarget: ``criterion`` ``far`` (``frr``) with a target finer than one comparison.
        ValueError: an unknown criterion, a target outside (0, 1], or one class missing.
    """
    for name, v in (("far", far), ("frr", frr)):
        if not 0.0 < float(v) <= 1.0:
            raise ValueError(f"threshold.{name} must be in (0, 1], got {v}")
    c = candidates(scores, labels)
    return _pick(c, criterion, float(far), float(frr), 0.5)


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval of a binomial rate ``k / n``; ``(nan, nan)`` when ``n == 0``.

    With ``k == 0`` the upper end is ``1 - ((1 - level) / 2) ** (1 / n)`` (about ``3.7 / n`` at 95%).
    """
    from scipy.stats import beta

    if n <= 0:
        return (math.nan, math.nan)
    a = (1.0 - level) / 2.0
    lo = 0.0 if k == 0 else float(beta.ppf(a, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1.0 - a, k + 1, n - k))
    return (lo, hi)


@dataclass(frozen=True)
class EpcCurve:
    """bob.measure's expected performance curve.

    For each weight ``alpha`` the threshold minimising ``alpha * FAR + (1 - alpha) * FRR`` on the
    dev set (bob's ``min_weighted_error_rate_threshold``) is applied to the eval set; the curve is
    the eval HTER (bob's ``epc``).

    Attributes:
        alpha: float64 ``[K]`` weights 0..1.
        thresholds: float64 ``[K]`` chosen on dev.
        hter: float64 ``[K]`` eval HTER at each threshold.
        fmr: float64 ``[K]`` eval FMR.
        fnmr: float64 ``[K]`` eval FNMR.
    """

    alpha: np.ndarray
    thresholds: np.ndarray
    hter: np.ndarray
    fmr: np.ndarray
    fnmr: np.ndarray


def epc(
    dev_scores: np.ndarray,
    dev_labels: np.ndarray,
    eval_scores: np.ndarray,
    eval_labels: np.ndarray,
    n_points: int = 51,
) -> EpcCurve:
    """The EPC over ``n_points`` weights evenly spaced in [0, 1]."""
    if n_points < 2:
        raise ValueError(f"an EPC needs at least 2 points, got {n_points}")
    dev = candidates(dev_scores, dev_labels)
    ev = candidates(eval_scores, eval_labels)
    alpha = np.linspace(0.0, 1.0, int(n_points))
    thr = np.array([_pick(dev, "weighted", 0, 0, float(a)) for a in alpha])
    # Rates on eval at each threshold: the eval candidate at or just above it has the same rates.
    k = np.searchsorted(ev.thresholds, thr, side="left")
    fmr, fnmr = ev.far[k], ev.frr[k]
    if not np.isfinite(thr).all():
        raise ValueError("an EPC threshold is not finite")
    return EpcCurve(alpha, thr, (fmr + fnmr) / 2, fmr, fnmr)
