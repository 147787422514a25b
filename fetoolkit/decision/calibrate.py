"""Calibrate a run's scores: which map, fitted on what, and how good it is, with intervals.

Never fitted and scored on the same pairs:

* with a dev set (``threshold.dev`` / ``dataset.dev``) the map is fitted on every dev pair and
  applied to this set's pairs;
* on a single set, out-of-fold: the subjects are dealt into ``folds`` subject-disjoint folds; the
  pairs between folds ``i`` and ``j`` get the LLRs of a map fitted on the pairs whose two subjects
  are in neither ``i`` nor ``j``, so no subject of a scored pair was seen by its map. Where the
  pairs' subjects are unknown the folds deal pairs (stratified by label) and the block says so.

The method is chosen by the out-of-fold Cllr on the fitting pairs (Cllr is the log loss with each
class weighing one half, in bits) unless ``calibration.method`` names one. The map written into
the decision profile is the chosen method refitted on every fitting pair.

The intervals resample this set's subjects (or pairs, where subjects are unknown) with the LLRs
held fixed: they say how much the figures move with the people measured, not with the fit.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import sparse

from fetoolkit.data.scores import PairScores, ScoreSet
from fetoolkit.figures import StatsCfg
from fetoolkit.jsonutil import json_float, json_pair
from fetoolkit.metrics import calibration as cm
from fetoolkit.metrics.subjects import Subjects, draw_counts, interval_dropping, pair_weights, subject_codes

log = logging.getLogger(__name__)

__all__ = ["CALIBRATION_METHODS", "Calibrated", "CalibrationCfg", "calibrate", "calibrate_pairs", "fold_plan"]

CALIBRATION_METHODS = ("auto", *cm.METHODS, "none")
#: Resamples per batch of the bootstrap (a [batch, P] weight matrix): at most 16, and at most
#: ``_BATCH_CELLS / P`` (about 400 MB of float64 weights whatever the pair count: IJB-C has 15 million).
_BATCH = 16
_BATCH_CELLS = 50_000_000


@dataclass(frozen=True)
class CalibrationCfg:
    """Calibration settings (``calibration`` in ``configs/eval.yaml``).

    Attributes:
        method: ``auto`` (the lowest out-of-fold Cllr of ``logistic``, ``isotonic`` and ``beta``),
            one of those three, or ``none`` (no calibration block, no profile map).
        folds: subject-disjoint folds of the out-of-fold fit (at least 3: the pairs between two
            folds are scored by a map of the others).
        prior: probability of "same identity" for ``p_same`` and its measures; None: the genuine
            fraction of the pairs scored (then ``p_same`` is calibrated for this set's mix).
        bins: equal-width bins of the ECE and the reliability diagram.
        seed: the deal of subjects into folds.
    """

    method: str = "auto"
    folds: int = 5
    prior: float | None = None
    bins: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in CALIBRATION_METHODS:
            raise ValueError(f"calibration.method must be one of {', '.join(CALIBRATION_METHODS)}, got {self.method!r}")
        if self.folds < 3:
            raise ValueError(f"calibration.folds must be >= 3, got {self.folds}")
        if self.prior is not None and not 0.0 < self.prior < 1.0:
            raise ValueError(f"calibration.prior is a probability strictly between 0 and 1, got {self.prior}")
        if self.bins < 1:
            raise ValueError(f"calibration.bins must be >= 1, got {self.bins}")


@dataclass
class Calibrated:
    """The calibration of one set of scored pairs.

    Attributes:
        calibration: the chosen map, fitted on every fitting pair (the profile's map).
        fit_on: where the LLRs of ``llr`` came from, in words.
        method_rule: why this method.
        prior: the prior of ``p_same``; ``prior_source`` says where it came from.
        llr: float64 ``[P]`` LLR of each pair, from a map that never saw it (out-of-fold or dev).
        p_same: float64 ``[P]`` ``sigmoid(llr + logit(prior))``.
        candidates: method -> out-of-fold Cllr on the fitting pairs.
        figures: ``cllr``, ``cllr_min``, ``ece``, ``brier``, ``log_loss`` of ``llr`` / ``p_same``.
        intervals: the same keys + ``_ci`` -> ``(low, high)`` (empty without resamples).
        ci_method: ``subject`` or ``pair``; ``ci_dropped`` resamples left out per figure.
        reliability: the reliability diagram of ``p_same``.
        bins: bins of the ECE.
    """

    calibration: cm.Calibration
    fit_on: str
    method_rule: str
    prior: float
    prior_source: str
    llr: np.ndarray
    p_same: np.ndarray
    candidates: dict[str, float]
    figures: dict[str, float]
    reliability: cm.Reliability
    bins: int
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)
    ci_method: str | None = None
    ci_dropped: dict[str, int] = field(default_factory=dict)
    n_boot: int = 0

    def summary(self) -> dict[str, Any]:
        """``results.json`` ``calibration``."""
        out: dict[str, Any] = {
            "method": self.calibration.method,
            "method_rule": self.method_rule,
            "fit_on": self.fit_on,
            "prior": self.prior,
            "prior_source": self.prior_source,
            **{k: json_float(v) for k, v in self.figures.items()},
        }
        if self.n_boot:
            out.update({f"{k}_ci": json_pair(self.intervals[k]) for k in self.figures})
            out["ci_method"] = self.ci_method
            out["ci_note"] = (
                f"percentile bootstrap ({self.n_boot} resamples) by {self.ci_method}, the LLRs held fixed: "
                "how the figures move with the subjects measured, not with the fit. ECE is biased upwards in "
                "resamples (repeated subjects leave bins purer or emptier), so its interval can sit above the estimate"
            )
            if self.ci_dropped:
                out["dropped_resamples"] = dict(self.ci_dropped)
        out.update(
            {
                "candidates": {k: json_float(v) for k, v in self.candidates.items()},
                "ece_bins": self.bins,
                "n_pairs": int(self.llr.size),
                "map": self.calibration.to_dict(),
                "note": "llr: natural log of P(score | same) / P(score | different); p_same = 1 / (1 + exp(-(llr + "
                "ln(prior / (1 - prior))))); cllr and cllr_min in bits (0 perfect, 1 uninformative), cllr_min after "
                "the optimal monotone map (PAV): cllr - cllr_min is the cost of miscalibration; ece over equal-width "
                "bins of p_same; brier and log_loss (natural) of p_same",
            }
        )
        return out


def fold_plan(
    labels: np.ndarray, subjects: Subjects | None, n_folds: int, seed: int
) -> tuple[list[tuple[np.ndarray, np.ndarray]], str]:
    """(train mask, test mask) pairs covering every pair once as test, and a description.

    With subjects: subject-disjoint (see the module docstring); without: stratified pair folds.

    Raises:
        ValueError: fewer subjects than folds.
    """
    rng = np.random.default_rng(seed)
    y = np.asarray(labels, bool)
    plan: list[tuple[np.ndarray, np.ndarray]] = []
    if subjects is not None:
        if subjects.n < n_folds:
            raise ValueError(
                f"{subjects.n} subjects cannot be dealt into {n_folds} subject-disjoint calibration folds; "
                "set calibration.folds lower (>= 3) or fit on a dev set (threshold.dev=...)"
            )
        fold_of = np.empty(subjects.n, np.int64)
        fold_of[rng.permutation(subjects.n)] = np.arange(subjects.n) % n_folds
        fa, fb = fold_of[subjects.a], fold_of[subjects.b]
        lo, hi = np.minimum(fa, fb), np.maximum(fa, fb)
        for i in range(n_folds):
            for j in range(i, n_folds):
                test = (lo == i) & (hi == j)
                if test.any():
                    plan.append(((fa != i) & (fa != j) & (fb != i) & (fb != j), test))
        return plan, (
            f"out-of-fold: {subjects.n} subjects dealt into {n_folds} subject-disjoint folds; the pairs between "
            "folds i and j scored by a map fitted on the pairs of the other folds' subjects"
        )
    fold = np.empty(y.size, np.int64)
    for cls in (True, False):
        idx = np.flatnonzero(y == cls)
        fold[idx[rng.permutation(idx.size)]] = np.arange(idx.size) % n_folds
    plan = [(fold != k, fold == k) for k in range(n_folds)]
    return plan, (
        f"out-of-fold: {n_folds} pair folds (stratified by label; the pairs' subjects are unknown, so a subject "
        "can be in the fitting and the scored pairs)"
    )


def _out_of_fold(s: np.ndarray, y: np.ndarray, plan: list[tuple[np.ndarray, np.ndarray]], method: str) -> np.ndarray:
    llr = np.full(s.size, np.nan)
    for train, test in plan:
        if not (y[train].any() and (~y[train]).any()):
            raise ValueError(
                "a calibration fold left no genuine or no impostor pair to fit on; use fewer calibration.folds "
                "or a dev set (threshold.dev=...)"
            )
        llr[test] = cm.fit_calibration(s[train], y[train], method).llr(s[test])
    return llr


def _choose(
    s: np.ndarray, y: np.ndarray, subj: Subjects | None, cfg: CalibrationCfg
) -> tuple[str, str, dict[str, float], dict[str, np.ndarray], str]:
    """(method, rule, out-of-fold Cllr per candidate, out-of-fold LLRs per candidate, fold description)."""
    plan, described = fold_plan(y, subj, cfg.folds, cfg.seed)
    methods = cm.METHODS if cfg.method == "auto" else (cfg.method,)
    oof = {m: _out_of_fold(s, y, plan, m) for m in methods}
    cands = {m: cm.cllr(v, y) for m, v in oof.items()}
    if cfg.method == "auto":
        best = min(cands, key=lambda m: cands[m])
        rule = "auto: the lowest out-of-fold Cllr (class-balanced log loss) on the fitting pairs"
    else:
        best, rule = cfg.method, "set by calibration.method"
    return best, rule, cands, oof, described


def _measures(s: np.ndarray, y: np.ndarray, llr: np.ndarray, p: np.ndarray, bins: int) -> dict[str, float]:
    """Every measure of LLRs ``llr`` and their ``p_same`` ``p``."""
    return {
        "cllr": cm.cllr(llr, y),
        "cllr_min": cm.cllr_min(s, y),
        "ece": cm.ece(p, y, bins),
        "brier": cm.brier(p, y),
        "log_loss": cm.log_loss(p, y),
    }


@dataclass(frozen=True)
class _Design:
    """What every resample's measures are weighted sums of, built once per bootstrap.

    Attributes:
        columns: float64 ``[P, 6 + 2 * bins]``: genuine, 1, Cllr cost of a genuine pair, of an
            impostor pair, squared error, log loss, then per ECE bin the genuine indicator and ``p``.
        gen_by_run, by_run: sparse ``[P, R]``: each pair's run of :func:`~fetoolkit.metrics.calibration.score_runs`
            (genuine pairs only, all pairs), for Cllr_min.
        bins: ECE bins.
    """

    columns: np.ndarray
    gen_by_run: sparse.csr_matrix
    by_run: sparse.csr_matrix
    bins: int

    @classmethod
    def of(cls, s: np.ndarray, y: np.ndarray, llr: np.ndarray, p: np.ndarray, bins: int) -> _Design:
        yf = y.astype(np.float64)
        n = y.size
        cost = np.where(y, np.logaddexp(0.0, -llr), np.logaddexp(0.0, llr)) / math.log(2.0)
        q = np.clip(p, 1e-15, 1.0 - 1e-15)
        nll = -np.where(y, np.log(q), np.log1p(-q))
        k = np.clip((p * bins).astype(np.int64), 0, bins - 1)
        per_bin = np.zeros((n, 2 * bins))  # per bin, count * |frac - mean p| = |sum y - sum p|
        per_bin[np.arange(n), k] = yf
        per_bin[np.arange(n), bins + k] = p
        columns = np.column_stack([yf, np.ones(n), cost * yf, cost * (1.0 - yf), (p - yf) ** 2, nll, per_bin])
        runs, n_runs = cm.score_runs(s, y)
        by_run = sparse.csr_matrix((np.ones(n), (np.arange(n), runs)), shape=(n, n_runs))
        return cls(columns, by_run.multiply(yf[:, None]).tocsr(), by_run, bins)


def _batch_measures(w: np.ndarray, d: _Design) -> Iterator[dict[str, float]]:
    """Every measure under each row of pair weights ``w`` (float64 ``[B, P]``), NaN where a class
    has no weight: the definitions of :mod:`fetoolkit.metrics.calibration` as weighted sums, so that
    a batch of resamples is one dense and two sparse matrix products."""
    sums = w @ d.columns
    gen_run, all_run = w @ d.gen_by_run, w @ d.by_run
    b = d.bins
    for r in range(w.shape[0]):
        wg, tot = sums[r, 0], sums[r, 1]
        if wg <= 0 or tot - wg <= 0:
            yield dict.fromkeys(("cllr", "cllr_min", "ece", "brier", "log_loss"), math.nan)
            continue
        yield {
            "cllr": 0.5 * (sums[r, 2] / wg + sums[r, 3] / (tot - wg)),
            "cllr_min": cm.cllr_min_runs(gen_run[r], all_run[r] - gen_run[r]),
            "ece": float(np.abs(sums[r, 6 : 6 + b] - sums[r, 6 + b :]).sum() / tot),
            "brier": sums[r, 4] / tot,
            "log_loss": sums[r, 5] / tot,
        }


def _bootstrap(
    s: np.ndarray, y: np.ndarray, llr: np.ndarray, p: np.ndarray, bins: int, subj: Subjects | None, stats: StatsCfg
) -> tuple[dict[str, tuple[float, float]], dict[str, int], str]:
    """Percentile intervals of every measure, resampling subjects (two-way weights) or pairs (per class)."""
    rng = np.random.default_rng(stats.seed)
    rows: list[dict[str, float]] = []
    gen, imp = np.flatnonzero(y), np.flatnonzero(~y)
    design = _Design.of(s, y, llr, p, bins)
    done = 0
    while done < stats.n_boot:
        b = min(_BATCH, max(1, _BATCH_CELLS // s.size), stats.n_boot - done)
        if subj is not None:
            weights = pair_weights(draw_counts(rng, b, subj.n), subj, y)
        else:
            weights = np.zeros((b, s.size), np.int64)
            for r in range(b):
                for idx in (gen, imp):
                    weights[r, idx] = np.bincount(rng.integers(0, idx.size, idx.size), minlength=idx.size)
        rows.extend(_batch_measures(weights.astype(np.float64), design))
        done += b
    intervals, dropped = {}, {}
    for key in rows[0]:
        intervals[key], n_drop = interval_dropping(np.asarray([r[key] for r in rows]), stats.level)
        if n_drop:
            dropped[key] = n_drop
    return intervals, dropped, "subject" if subj is not None else "pair"


def calibrate(
    scores: np.ndarray,
    labels: np.ndarray,
    cfg: CalibrationCfg,
    stats: StatsCfg,
    *,
    subjects: tuple[np.ndarray, np.ndarray] | None = None,
    dev: tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray] | None] | None = None,
    dev_name: str = "dev",
) -> Calibrated | None:
    """Calibrate ``scores`` (float64 ``[P]``, finite) with ``labels`` (bool ``[P]``); None for ``method=none``.

    Args:
        subjects: ``(subject_a, subject_b)`` ``[P]`` each (any ids), None when unknown.
        dev: ``(scores, labels, subjects or None)`` of a dev set: the map is fitted there.
        dev_name: how to name the dev set in ``fit_on``.
        stats: the bootstrap (``n_boot``, ``level``, ``seed``; ``method=pair`` resamples pairs even
            where subjects are known).

    Raises:
        ValueError: a class is missing, or too few subjects for the folds.
    """
    if cfg.method == "none":
        return None
    s, y = np.asarray(scores, np.float64), np.asarray(labels, bool)
    subj = subject_codes(*subjects) if subjects is not None else None
    if dev is not None:
        ds, dy = np.asarray(dev[0], np.float64), np.asarray(dev[1], bool)
        dsubj = subject_codes(*dev[2]) if dev[2] is not None else None
        method, rule, cands, _, described = _choose(ds, dy, dsubj, cfg)
        final = cm.fit_calibration(ds, dy, method)
        llr = final.llr(s)
        fit_on = f"dev: the map fitted on every pair of {dev_name} ({len(ds)} pairs), applied to these pairs"
        rule += f" ({described.replace('out-of-fold: ', 'out-of-fold on the dev pairs: ')})"
    else:
        method, rule, cands, oof, fit_on = _choose(s, y, subj, cfg)
        llr = oof[method]
        final = cm.fit_calibration(s, y, method)
    if cfg.prior is not None:
        prior, prior_source = float(cfg.prior), "calibration.prior"
    else:
        prior, prior_source = float(y.mean()), "the genuine fraction of the pairs scored (calibration.prior=null)"
    p = cm.llr_to_p(llr, prior)
    figures = _measures(s, y, llr, p, cfg.bins)
    out = Calibrated(
        calibration=final,
        fit_on=fit_on,
        method_rule=rule,
        prior=prior,
        prior_source=prior_source,
        llr=llr,
        p_same=p,
        candidates=cands,
        figures=figures,
        reliability=cm.reliability(p, y, cfg.bins),
        bins=cfg.bins,
    )
    if stats.n_boot > 0:
        boot_subj = subj if stats.method == "subject" else None
        out.intervals, out.ci_dropped, out.ci_method = _bootstrap(s, y, llr, p, cfg.bins, boot_subj, stats)
        out.n_boot = stats.n_boot
    log.info(
        "calibration %s (%s): Cllr %.4f, Cllr_min %.4f, ECE %.4f at prior %.4g",
        final.method,
        "dev" if dev is not None else "out-of-fold",
        figures["cllr"],
        figures["cllr_min"],
        figures["ece"],
        prior,
    )
    return out


def calibrate_pairs(
    pairs: PairScores, cfg: CalibrationCfg, stats: StatsCfg, dev: ScoreSet | None = None
) -> tuple[Calibrated | None, str | None]:
    """:func:`calibrate` on a run's scored comparisons, with its dev score set (``threshold.dev`` /
    ``dataset.dev``) when it has one: (the calibration, None), or (None, why not) for
    ``calibration.method=none`` and for data that cannot be calibrated (too few subjects for the
    folds, a fold without one class): the run's other figures stand, ``results.json`` says why."""
    if cfg.method == "none":
        return None, "calibration.method=none"
    both = (pairs.subject_a, pairs.subject_b) if pairs.has_subjects else None
    dev_arg, name = None, "the dev set"
    if dev is not None:
        d = dev.roc
        dev_arg = (d.scores, d.labels, (d.subject_a, d.subject_b) if d.has_subjects else None)
        name = str(dev.meta.get("path") or name)
    try:
        cal = calibrate(pairs.scores, pairs.labels, cfg, stats, subjects=both, dev=dev_arg, dev_name=name)  # type: ignore[arg-type]
    except ValueError as e:
        log.warning("no calibration: %s", e)
        return None, str(e)
    return cal, None
