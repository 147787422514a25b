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


@dataclass(frozen=True)
class StatsCfg:
    """Bootstrap settings (``stats`` in ``configs/eval.yaml``).

    Attributes:
        n_boot: resamples for the 95% intervals; 0 = no intervals.
        level: interval coverage.
        seed: bootstrap seed.
    """

    n_boot: int = 1000
    level: float = 0.95
    seed: int = 0


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


def verification_figures(
    rs: np.ndarray,
    rl: np.ndarray,
    ks: np.ndarray | None,
    kl: np.ndarray | None,
    kf: np.ndarray | None,
    stats: StatsCfg,
) -> Figures:
    """Figures of ROC scores ``rs`` float64 ``[P]`` / labels ``rl`` bool ``[P]`` and of k-fold scores
    ``ks`` / labels ``kl`` / consecutive fold ids ``kf`` int64 ``[Q]`` (all three None: no k-fold).

    TAR is reported at :data:`FARS` (None with a reason where not measurable) and at every
    measurable decade, each with its threshold, achieved FAR and (with ``stats.n_boot > 0``) interval.
    """
    kfold = (ks, kl, kf) if ks is not None and kl is not None and kf is not None else None
    report = vm.verification_report(
        rs, rl, fars=FARS, kfold=kfold, n_boot=stats.n_boot, seed=stats.seed, level=stats.level
    )
    block = {"n_boot": stats.n_boot, "level": stats.level, "seed": stats.seed, "method": PAIR_METHOD}
    return Figures(report, block)
