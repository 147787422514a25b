"""Paired significance tests for two systems scored on the same pairs. Pure numpy."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class McNemarResult:
    """Exact McNemar test on paired decisions.

    Attributes:
        n_worse: pairs the baseline decided correctly and the candidate did not (b).
        n_better: pairs the candidate decided correctly and the baseline did not (c).
        p_value: two-sided exact binomial p-value of b vs c under H0 (b ~ Bin(b + c, 1/2)).
    """

    n_worse: int
    n_better: int
    p_value: float


def binom_two_sided_half(k: int, n: int) -> float:
    """Two-sided exact p-value of observing ``min(k, n-k)`` or fewer successes in Bin(n, 1/2).

    Computed in log space, so it stays exact for n in the hundreds of thousands.
    """
    if n == 0:
        return 1.0
    k = min(k, n - k)
    i = np.arange(k + 1, dtype=np.float64)
    log_terms = (
        math.lgamma(n + 1) - np.array([math.lgamma(x + 1) + math.lgamma(n - x + 1) for x in i]) - n * math.log(2.0)
    )
    m = log_terms.max()
    tail = math.exp(m) * float(np.exp(log_terms - m).sum())
    return min(1.0, 2.0 * tail)


def mcnemar(baseline_correct: np.ndarray, candidate_correct: np.ndarray) -> McNemarResult:
    """Exact McNemar test.

    Args:
        baseline_correct: bool ``[P]``, the baseline's decision on pair i was right.
        candidate_correct: bool ``[P]``, the candidate's decision on pair i was right.
    """
    a = np.asarray(baseline_correct, dtype=bool)
    b = np.asarray(candidate_correct, dtype=bool)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"need two 1-D decision arrays of one length, got {a.shape} and {b.shape}")
    worse = int((a & ~b).sum())
    better = int((~a & b).sum())
    return McNemarResult(worse, better, binom_two_sided_half(worse, worse + better))
