"""The verification figures of one set of scored comparisons, as ``results.json`` holds them.

Shared by the model evaluation (:mod:`fetoolkit.evaluate`) and the score-file evaluation
(:mod:`fetoolkit.score_eval`), so ``dataset=scores`` on a run's own pair table reproduces that run's
figures exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fetoolkit.metrics import verification as vm

#: The FARs whose TAR results.json always lists (None with a reason when not measurable).
FARS = (1e-1, 1e-2, 1e-3)

PAIR_METHOD = (
    "percentile bootstrap; genuine and impostor pairs resampled separately "
    "(accuracy: within each fold); pairs treated as independent, so intervals "
    "are optimistic when pairs share images"
)

SUBJECT_METHOD = (
    "percentile bootstrap by subject (Bolle, Ratha and Pankanti's subsets bootstrap, two-way): each "
    "resample draws the subjects with replacement (accuracy: within each fold when the folds are "
    "subject-disjoint); a genuine pair of subject s weighs how often s was drawn, an impostor pair "
    "of subjects a and b the product of theirs; every figure (EER, TAR@FAR with its threshold, "
    "k-fold accuracy) is recomputed on the weighted pairs. Pairs that share a subject move "
    "together, so the intervals reflect the number of subjects, not of pairs. Resamples where a "
    "figure is undefined (a class or a fold with zero weight) are left out and counted in "
    "dropped_resamples; more than 5% left out gives no interval"
)

ZERO_ERRORS = (
    "zero-error estimates (EER 0, TAR 1, accuracy 1) get the rule-of-three bound "
    "-ln(1 - level) / n (3/n at 95%) instead of the collapsed bootstrap interval; n = comparisons "
    "(pair) or subjects (subject); see interval_rule"
)

METHODS = ("subject", "pair")


@dataclass(frozen=True)
class StatsCfg:
    """Bootstrap settings (``stats`` in ``configs/eval.yaml``).

    Attributes:
        n_boot: resamples for the 95% intervals; 0 = no intervals.
        level: interval coverage.
        seed: bootstrap seed.
        method: ``subject`` (resample subjects; where the pairs' subjects are unknown the run
            falls back to ``pair`` and says so in ``results.json`` ``stats``) or ``pair``
            (resample pairs as independent).
    """

    n_boot: int = 1000
    level: float = 0.95
    seed: int = 0
    method: str = "subject"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"stats.method must be one of {', '.join(METHODS)}, got {self.method!r}")


@dataclass(frozen=True)
class Figures:
    """The verification figures of one evaluation and how they were measured.

    Attributes:
        report: every figure, from one :func:`~fetoolkit.metrics.verification.verification_report`
            call (ROC pairs, and the k-fold pairs when folds are known).
        stats: the ``stats`` block (bootstrap settings and method).
    """

    report: vm.VerificationReport
    stats: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """The verification keys of ``results.json``: the report's, then ``stats``."""
        return {**self.report.to_dict(), "stats": self.stats}


Pair = tuple[np.ndarray, np.ndarray]


def verification_figures(
    rs: np.ndarray,
    rl: np.ndarray,
    ks: np.ndarray | None,
    kl: np.ndarray | None,
    kf: np.ndarray | None,
    stats: StatsCfg,
    subjects: Pair | None = None,
    kfold_subjects: Pair | None = None,
) -> Figures:
    """Figures of ROC scores ``rs`` float64 ``[P]`` / labels ``rl`` bool ``[P]`` and of k-fold scores
    ``ks`` / labels ``kl`` / consecutive fold ids ``kf`` int64 ``[Q]`` (all three None: no k-fold).

    TAR is reported at :data:`FARS` (None with a reason where not measurable) and at every
    measurable decade, each with its threshold, achieved FAR and (with ``stats.n_boot > 0``) interval.

    ``subjects`` / ``kfold_subjects``: ``(subject_a, subject_b)`` of the ROC / k-fold pairs (any ids),
    None where unknown. ``stats.method == "subject"`` resamples subjects where they are known for
    every pair set scored; otherwise the intervals fall back to ``pair`` and ``stats`` says why
    (``requested``, ``method``, ``reason``).
    """
    kfold = (ks, kl, kf) if ks is not None and kl is not None and kf is not None else None
    method, reason = stats.method, None
    if method == "subject":  # (also without intervals: the report is asked for one method or the other)
        if subjects is None:
            reason = "the pairs' subjects are unknown (no identities: .bin, CSV pairs, score files without subjects)"
        elif kfold is not None and kfold_subjects is None:
            reason = "the k-fold pairs' subjects are unknown"
        if reason is not None:
            method = "pair"
    report = vm.verification_report(
        rs,
        rl,
        fars=FARS,
        kfold=kfold,
        n_boot=stats.n_boot,
        seed=stats.seed,
        level=stats.level,
        subjects=subjects,
        kfold_subjects=kfold_subjects,
        method=method,
    )
    block: dict[str, Any] = {
        "n_boot": stats.n_boot,
        "level": stats.level,
        "seed": stats.seed,
        "requested": stats.method,
        "method": method,
        "method_note": SUBJECT_METHOD if method == "subject" else PAIR_METHOD,
    }
    if reason is not None:
        block["reason"] = f"subject bootstrap requested, pair bootstrap ran: {reason}"
    if method == "subject":
        block["n_subjects"] = {"roc": report.n_subjects}
        if report.kfold_n_subjects is not None:
            block["n_subjects"]["kfold"] = report.kfold_n_subjects
        block["dropped_resamples"] = dict(report.ci_dropped)
    if stats.n_boot > 0:
        block["zero_errors"] = ZERO_ERRORS
    return Figures(report, block)
