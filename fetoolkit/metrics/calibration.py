"""Score calibration: similarity scores -> natural-log likelihood ratios of "same identity".

A cosine of 0.41 says nothing by itself; a log-likelihood ratio (LLR) says how much more likely the
score is under "same person" than under "different people", and with a prior it becomes the
probability ``p_same``. Pure functions of numpy arrays (no I/O, no plotting):

* **maps** (:class:`Calibration`, fitted by :func:`fit_calibration`): ``logistic`` (Platt scaling,
  one slope and an offset), ``isotonic`` (the pool-adjacent-violators map, monotone and stepwise,
  linear between its steps) and ``beta`` (Kull, Silva Filho and Flach 2017: a logistic regression
  on ``ln s'`` and ``-ln(1 - s')`` of the score mapped to ``s' = (s + 1) / 2``, both slopes kept
  non-negative). Every map is fitted *prior-weighted*: each class weighs one half whatever its
  count (Bruemmer's recipe), so the fitted log-odds is the LLR itself, not shifted by the
  genuine/impostor ratio of the fitting pairs;
* **measures**: ``cllr`` (Bruemmer and du Preez's cost of the LLRs, in bits: 0 perfect, 1 an
  uninformative system that always says LLR 0), ``cllr_min`` (the cost after the optimal monotone
  map, PAV: what is lost to discrimination; ``cllr - cllr_min`` is lost to calibration), ``ece``
  (expected calibration error of ``p_same``, equal-width bins), ``brier`` and ``log_loss`` of
  ``p_same``; the reliability diagram's bins and the Tippett curves.

Weights: every measure takes optional non-negative pair weights (the subject bootstrap's integer
weights, :mod:`fetoolkit.metrics.subjects`); None weighs every pair 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import isotonic_regression

__all__ = [
    "METHODS",
    "Calibration",
    "Reliability",
    "brier",
    "cllr",
    "cllr_min",
    "cllr_min_runs",
    "ece",
    "fit_calibration",
    "llr_to_p",
    "log_loss",
    "pav_llr",
    "reliability",
    "score_runs",
    "tippett",
]

METHODS = ("logistic", "isotonic", "beta")
#: Scores of the beta map are cosines mapped to ``(s + 1) / 2`` and kept this far inside (0, 1).
BETA_EPS = 1e-6
#: Ridge on the standardised slopes of the logistic and beta fits: negligible on real scores, it
#: keeps the fit finite when the fitting pairs are perfectly separated.
RIDGE = 1e-9
_LOG2 = math.log(2.0)


def _arrays(
    values: np.ndarray, labels: np.ndarray, weights: np.ndarray | None, what: str, *, both_classes: bool
) -> tuple[np.ndarray, ...]:
    """(float64 values, bool labels, float64 weights) checked to be 1-D of one length, with weight on
    both classes (``both_classes``) or on some pair."""
    v = np.asarray(values, np.float64)
    y = np.asarray(labels, bool)
    w = np.ones_like(v) if weights is None else np.asarray(weights, np.float64)
    if v.shape != y.shape or w.shape != y.shape or v.ndim != 1:
        raise ValueError(f"{what}, labels and weights must be 1-D of one length, got {v.shape}, {y.shape}, {w.shape}")
    if both_classes and (w[y].sum() <= 0 or w[~y].sum() <= 0):
        raise ValueError("the measure needs genuine and impostor pairs (both classes with positive weight)")
    if w.sum() <= 0:
        raise ValueError("no pair with positive weight")
    return v, y, w


def _check(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    """:func:`_arrays` of scores, which must be finite."""
    s, y, w = _arrays(scores, labels, weights, "scores", both_classes=False)
    if not np.isfinite(s).all():
        raise ValueError(f"{int((~np.isfinite(s)).sum())} non-finite scores: calibration needs finite scores")
    return s, y, w


def _class_weights(y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Each class's weights scaled to sum to one half (the prior-weighted fit and cost)."""
    wg, wi = w[y].sum(), w[~y].sum()
    if wg <= 0 or wi <= 0:
        raise ValueError("calibration needs genuine and impostor pairs (both classes with positive weight)")
    return np.where(y, 0.5 * w / wg, 0.5 * w / wi)


# --------------------------------------------------------------------------------------------
# Maps
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Calibration:
    """A fitted map from scores to natural-log likelihood ratios.

    Attributes:
        method: ``logistic``, ``isotonic`` or ``beta``.
        params: ``logistic``: ``a``, ``b`` (``llr = a * s + b``); ``beta``: ``a``, ``b``, ``c``
            (``llr = a ln s' - b ln(1 - s') + c``, ``s' = (s + 1) / 2``); ``isotonic``: ``x`` and
            ``llr``, the knots (ascending scores and their LLRs; flat outside, linear between).
    """

    method: str
    params: dict[str, Any] = field(default_factory=dict)

    def llr(self, scores: np.ndarray | float) -> np.ndarray:
        """float64 LLRs shaped like ``scores`` (natural log; > 0 favours "same identity")."""
        s = np.asarray(scores, np.float64)
        p = self.params
        if self.method == "logistic":
            return p["a"] * s + p["b"]
        if self.method == "beta":
            x1, x2 = _beta_features(s)
            return p["a"] * x1 + p["b"] * x2 + p["c"]
        if self.method == "isotonic":
            return np.interp(s, np.asarray(p["x"], np.float64), np.asarray(p["llr"], np.float64))
        raise ValueError(f"unknown calibration method {self.method!r}; one of {', '.join(METHODS)}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"method": ..., "params": {...}}`` (floats and lists of floats)."""
        return {
            "method": self.method,
            "params": {
                k: ([float(x) for x in v] if isinstance(v, list | np.ndarray) else float(v))
                for k, v in self.params.items()
            },
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Calibration:
        """The map written by :meth:`to_dict` (checked: a known method and its parameters)."""
        method, params = d.get("method"), dict(d.get("params") or {})
        need = {"logistic": {"a", "b"}, "beta": {"a", "b", "c"}, "isotonic": {"x", "llr"}}.get(str(method))
        if need is None:
            raise ValueError(f"unknown calibration method {method!r}; one of {', '.join(METHODS)}")
        if missing := need - set(params):
            raise ValueError(f"calibration {method}: missing parameters {sorted(missing)}")
        if method == "isotonic" and (len(params["x"]) != len(params["llr"]) or len(params["x"]) < 1):
            raise ValueError("calibration isotonic: x and llr must be non-empty lists of one length")
        return cls(str(method), params)


def _beta_features(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    u = np.clip((s + 1.0) / 2.0, BETA_EPS, 1.0 - BETA_EPS)
    return np.log(u), -np.log1p(-u)


def _logistic_fit(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted logistic regression with an intercept by Newton's method: ``[coef..., intercept]``.

    ``x``: float64 ``[P, F]``; ``w``: weights summing to one (the prior-weighted fit). The features
    are standardised for the solve and the ridge :data:`RIDGE` acts on the standardised slopes.
    """
    mu = (w[:, None] * x).sum(0)
    sd = np.sqrt((w[:, None] * (x - mu) ** 2).sum(0))
    sd = np.where(sd > 0, sd, 1.0)
    z = np.column_stack([(x - mu) / sd, np.ones(len(x))])
    t = y.astype(np.float64)
    ridge = np.full(z.shape[1], RIDGE)
    ridge[-1] = 0.0
    theta = np.zeros(z.shape[1])

    def loss(th: np.ndarray) -> float:
        m = z @ th
        return float((w * (np.logaddexp(0.0, m) - t * m)).sum() + 0.5 * (ridge * th**2).sum())

    cur = loss(theta)
    for _ in range(100):
        m = z @ theta
        p = 0.5 * (1.0 + np.tanh(0.5 * m))  # the logistic function, without overflow
        grad = z.T @ (w * (p - t)) + ridge * theta
        hess = (z * (w * p * (1.0 - p))[:, None]).T @ z + np.diag(ridge + 1e-12)
        step = np.linalg.solve(hess, grad)
        lam = 1.0
        while lam > 1e-8:  # backtracking: Newton steps overshoot on nearly separated pairs
            new = loss(theta - lam * step)
            if new <= cur:
                break
            lam *= 0.5
        theta = theta - lam * step
        done = cur - new < 1e-13
        cur = new
        if done or np.abs(lam * step).max() < 1e-10:
            break
    coef = theta[:-1] / sd
    return np.append(coef, theta[-1] - (coef * mu).sum())


def pav_llr(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The pool-adjacent-violators map, prior-weighted: (ascending distinct scores ``[U]``, their
    LLRs ``[U]``).

    Equal scores are pooled first (one score, one LLR). A block of only genuine pairs gets LLR +inf,
    one of only impostor pairs -inf: the optimal map of these pairs, as ``cllr_min`` needs it.
    Scores whose pairs all weigh 0 are left out.
    """
    s, y, w = _check(scores, labels, weights)
    ux, inv = np.unique(s, return_inverse=True)
    llr = _pav_groups(inv, ux.size, y, w)
    keep = ~np.isnan(llr)
    return ux[keep], llr[keep]


def _pav_groups(inv: np.ndarray, n_groups: int, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """PAV LLR of each group of pairs (``inv``: int ``[P]`` group of each pair, groups in ascending
    score order): float64 ``[G]``, NaN for a group of weight 0."""
    gw = np.bincount(inv, weights=w * y, minlength=n_groups)
    return _pav_weights(gw, np.bincount(inv, weights=w, minlength=n_groups) - gw)


def _pav_weights(gw: np.ndarray, iw: np.ndarray) -> np.ndarray:
    """PAV LLR of groups in ascending score order from their genuine and impostor weights ``[G]``:
    float64 ``[G]``, NaN for a group of weight 0, +-inf for a block of one class only."""
    sg, si = gw.sum(), iw.sum()
    if sg <= 0 or si <= 0:
        raise ValueError("calibration needs genuine and impostor pairs (both classes with positive weight)")
    g, i = 0.5 * gw / sg, 0.5 * iw / si  # prior-weighted: each class weighs one half
    tot = g + i
    keep = tot > 0
    p = np.clip(isotonic_regression(g[keep] / tot[keep], weights=tot[keep], increasing=True).x, 0.0, 1.0)
    out = np.full(gw.size, np.nan)
    with np.errstate(divide="ignore"):
        out[keep] = np.log(p) - np.log1p(-p)
    return out


def _isotonic_fit(s: np.ndarray, y: np.ndarray, w: np.ndarray) -> dict[str, Any]:
    """Knots of the isotonic map: the PAV blocks' ends, LLRs finite.

    A block without impostors (genuines) would say +inf (-inf); the map gives it the LLR it would
    have with half an impostor (genuine) pair in it, so no new score is called certain.
    """
    x, llr = pav_llr(s, y, w)
    wg, wi = w[y].sum(), w[~y].sum()
    if not np.isfinite(llr).all():
        # the extreme blocks: their genuine / impostor weight, from the pairs they hold
        lo, hi = np.isneginf(llr), np.isposinf(llr)
        if hi.any():
            g = w[y & (s >= x[hi][0])].sum()
            llr[hi] = math.log(g / wg) - math.log(0.5 / (wi + 0.5))
        if lo.any():
            i = w[~y & (s <= x[lo][-1])].sum()
            llr[lo] = math.log(0.5 / (wg + 0.5)) - math.log(i / wi)
        llr = np.maximum.accumulate(llr)
    # only the blocks' ends are needed: interior points of a flat block add nothing to np.interp
    keep = np.ones(x.size, bool)
    keep[1:-1] = (llr[1:-1] != llr[:-2]) | (llr[1:-1] != llr[2:])
    return {"x": x[keep].tolist(), "llr": llr[keep].tolist()}


def fit_calibration(
    scores: np.ndarray, labels: np.ndarray, method: str, weights: np.ndarray | None = None
) -> Calibration:
    """Fit ``method`` (``logistic``, ``isotonic`` or ``beta``) on scored pairs, prior-weighted.

    Args:
        scores: float64 ``[P]`` similarity scores (the beta map expects cosines in [-1, 1]).
        labels: bool ``[P]``, True for a genuine pair.
        method: the map.
        weights: optional non-negative ``[P]`` pair weights.

    Raises:
        ValueError: an unknown method, one class missing, or non-finite scores.
    """
    s, y, w = _check(scores, labels, weights)
    cw = _class_weights(y, w)
    if method == "logistic":
        a, b = _logistic_fit(s[:, None], y, cw)
        return Calibration("logistic", {"a": float(a), "b": float(b)})
    if method == "beta":
        x1, x2 = _beta_features(s)
        feats = np.column_stack([x1, x2])
        coef = _logistic_fit(feats, y, cw)
        if coef[0] < 0 or coef[1] < 0:  # Kull et al.: refit without the feature whose slope went negative
            j = 1 if coef[0] < 0 else 0
            one = _logistic_fit(feats[:, [j]], y, cw)
            coef = np.zeros(3)
            coef[j], coef[2] = max(one[0], 0.0), one[1]
        return Calibration("beta", {"a": float(coef[0]), "b": float(coef[1]), "c": float(coef[2])})
    if method == "isotonic":
        return Calibration("isotonic", _isotonic_fit(s, y, w))
    raise ValueError(f"unknown calibration method {method!r}; one of {', '.join(METHODS)}")


# --------------------------------------------------------------------------------------------
# Measures
# --------------------------------------------------------------------------------------------


def llr_to_p(llr: np.ndarray | float, prior: float) -> np.ndarray:
    """``p_same`` at a prior probability of "same identity": ``sigmoid(llr + logit(prior))``."""
    if not 0.0 < prior < 1.0:
        raise ValueError(f"the prior is a probability strictly between 0 and 1, got {prior}")
    m = np.asarray(llr, np.float64) + math.log(prior / (1.0 - prior))
    return 0.5 * (1.0 + np.tanh(0.5 * m))


def cllr(llr: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Bruemmer and du Preez's Cllr in bits: ``(mean_gen log2(1 + e^-llr) + mean_imp log2(1 + e^llr)) / 2``."""
    v, y, w = _arrays(llr, labels, weights, "llr", both_classes=True)
    cost = np.where(y, np.logaddexp(0.0, -v), np.logaddexp(0.0, v)) / _LOG2
    wc = np.zeros_like(cost)
    np.multiply(w, cost, out=wc, where=w > 0)  # a pair of weight 0 costs nothing, even at an infinite LLR
    return float(0.5 * (wc[y].sum() / w[y].sum() + wc[~y].sum() / w[~y].sum()))


def cllr_min(
    scores: np.ndarray,
    labels: np.ndarray,
    weights: np.ndarray | None = None,
) -> float:
    """Cllr after the optimal monotone map of the scores (PAV, :func:`pav_llr`): the discrimination
    part of Cllr (``cllr_min <= cllr`` of any monotone map of the same scores)."""
    s, y, w = _check(scores, labels, weights)
    inv, n = score_runs(s, y)
    gw = np.bincount(inv, weights=w * y, minlength=n)
    return cllr_min_runs(gw, np.bincount(inv, weights=w, minlength=n) - gw)


def cllr_min_runs(gen_weight: np.ndarray, imp_weight: np.ndarray) -> float:
    """:func:`cllr_min` from the genuine and impostor weight of each of :func:`score_runs`' runs
    (float ``[R]`` each, runs in ascending score order): one sort serves many weightings."""
    gw, iw = np.asarray(gen_weight, np.float64), np.asarray(imp_weight, np.float64)
    llr = _pav_weights(gw, iw)
    # Cllr summed per run (one LLR each); a weight of 0 costs nothing, even at +-inf
    cg, ci = np.zeros(gw.size), np.zeros(gw.size)
    with np.errstate(invalid="ignore"):  # NaN LLRs of runs of weight 0 are left out by ``where``
        np.multiply(gw, np.logaddexp(0.0, -llr), out=cg, where=gw > 0)
        np.multiply(iw, np.logaddexp(0.0, llr), out=ci, where=iw > 0)
    return float(0.5 * (cg.sum() / gw.sum() + ci.sum() / iw.sum()) / _LOG2)


def score_runs(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Runs of the sorted scores that PAV can pool up front: (int64 run of each pair ``[P]``, runs).

    Equal scores form one group; consecutive groups of only genuine (or only impostor) pairs form
    one run; a group holding both stays a run of its own. PAV's blocks only end where the label
    changes (its map is the ROC convex hull, whose corners are ROC corners), so PAV over the runs
    gives every pair the LLR it gets pair by pair, under any pair weights: hundreds of runs
    instead of tens of thousands of scores.
    """
    s, y = np.asarray(scores, np.float64), np.asarray(labels, bool)
    ux, inv = np.unique(s, return_inverse=True)
    n_gen = np.bincount(inv, weights=y, minlength=ux.size)
    n_all = np.bincount(inv, minlength=ux.size)
    kind = np.where(n_gen == n_all, 1, np.where(n_gen == 0, 0, 2))  # pure genuine, pure impostor, both
    start = np.ones(ux.size, bool)
    start[1:] = (kind[1:] != kind[:-1]) | (kind[1:] == 2)
    run = np.cumsum(start) - 1
    return run[inv], int(run[-1]) + 1 if ux.size else 0


def brier(p: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Mean squared difference between ``p_same`` and the label (0 perfect)."""
    q, y, w = _arrays(p, labels, weights, "p", both_classes=False)
    return float((w * (q - y) ** 2).sum() / w.sum())


def log_loss(p: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None, eps: float = 1e-15) -> float:
    """Mean negative natural log of the probability given to the true label (``p`` clipped to
    ``[eps, 1 - eps]``, as scikit-learn does)."""
    q, y, w = _arrays(p, labels, weights, "p", both_classes=False)
    q = np.clip(q, eps, 1.0 - eps)
    return float(-(w * np.where(y, np.log(q), np.log1p(-q))).sum() / w.sum())


@dataclass(frozen=True)
class Reliability:
    """The reliability diagram of ``p_same`` (equal-width bins over [0, 1], empty bins left out).

    Attributes:
        bin: int64 ``[K]`` bin index ``0..n_bins-1``.
        mean_p: float64 ``[K]`` mean predicted probability in the bin.
        frac_genuine: float64 ``[K]`` fraction of genuine pairs in the bin.
        count: float64 ``[K]`` pairs (weight) in the bin.
        n_bins: bins over [0, 1].
    """

    bin: np.ndarray
    mean_p: np.ndarray
    frac_genuine: np.ndarray
    count: np.ndarray
    n_bins: int


def reliability(p: np.ndarray, labels: np.ndarray, n_bins: int = 10, weights: np.ndarray | None = None) -> Reliability:
    """Bin ``p_same`` into ``n_bins`` equal-width bins (the last one closed: p = 1 falls in it)."""
    q, y, w = _arrays(p, labels, weights, "p", both_classes=False)
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    k = np.clip((q * n_bins).astype(np.int64), 0, n_bins - 1)
    cnt = np.bincount(k, weights=w, minlength=n_bins)
    sp = np.bincount(k, weights=w * q, minlength=n_bins)
    sy = np.bincount(k, weights=w * y, minlength=n_bins)
    nz = np.flatnonzero(cnt > 0)
    return Reliability(nz, sp[nz] / cnt[nz], sy[nz] / cnt[nz], cnt[nz], n_bins)


def ece(p: np.ndarray, labels: np.ndarray, n_bins: int = 10, weights: np.ndarray | None = None) -> float:
    """Expected calibration error: ``sum_k (n_k / n) |frac_genuine_k - mean_p_k|`` over equal-width bins."""
    r = reliability(p, labels, n_bins, weights)
    return float((r.count * np.abs(r.frac_genuine - r.mean_p)).sum() / r.count.sum())


def tippett(llr: np.ndarray, labels: np.ndarray, n_points: int = 201) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tippett curves: (LLR grid ``[T]``, fraction of genuine pairs with LLR > t ``[T]``, fraction of
    impostor pairs with LLR > t ``[T]``), the grid spanning the finite LLRs."""
    v, y, _ = _arrays(llr, labels, None, "llr", both_classes=True)
    fin = v[np.isfinite(v)]
    lo, hi = (float(fin.min()), float(fin.max())) if fin.size else (-1.0, 1.0)
    t = np.linspace(lo - 0.5, hi + 0.5, n_points)
    g, i = np.sort(v[y]), np.sort(v[~y])
    above = lambda a: 1.0 - np.searchsorted(a, t, side="right") / a.size  # noqa: E731
    return t, above(g), above(i)
