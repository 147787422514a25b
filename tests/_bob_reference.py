"""bob.measure's threshold search (``minimizingThreshold`` of its C++ and of bob.measure 6's Python
``_minimizing_threshold``), written out step by step: the published reference the operating-point
tests compare against."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np


def bob_minimizing_threshold(neg: np.ndarray, pos: np.ndarray, cost: Callable[[float, float], float]) -> float:
    """bob.measure's ``minimizingThreshold``, step by step (the published reference): walk the merged
    sorted scores from "accept all", midpoints between distinct scores, ``<=`` in the walk, ``<`` for
    the last state and for "reject all". The rates are taken from the counts (bob subtracts ``1/n``
    per score, which leaves ``1e-16`` where the count says 0)."""
    neg, pos = np.sort(neg), np.sort(pos)
    i = j = 0
    far, frr = 1.0, 0.0
    best_cost, best_thr = 1e8, 1e8
    cur = min(pos[0], neg[0])
    while j < len(pos) and i < len(neg):
        c = cost(far, frr)
        if c <= best_cost:
            best_cost, best_thr = c, cur
        if pos[j] >= neg[i]:
            cur = neg[i]
            i += 1
            far = (len(neg) - i) / len(neg)
        else:
            cur = pos[j]
            j += 1
            frr = j / len(pos)
        while i < len(neg) and neg[i] == cur:
            i += 1
            far = (len(neg) - i) / len(neg)
        while j < len(pos) and pos[j] == cur:
            j += 1
            frr = j / len(pos)
        if i < len(neg) or j < len(pos):
            nxt = min(pos[j], neg[i]) if (i < len(neg) and j < len(pos)) else (neg[i] if i < len(neg) else pos[j])
            cur = (cur + nxt) / 2
    if cost(far, frr) < best_cost:
        best_cost, best_thr = cost(far, frr), cur
    # bob.measure 6's last check: a threshold just above every score (reject all), strictly better
    if (i < len(neg) or j < len(pos)) and cost(0.0, 1.0) < best_cost:
        top = neg[-1] if i < len(neg) else pos[-1]
        best_thr = np.nextafter(top, top + 1)
    return float(best_thr)


def bob_cllr(neg: np.ndarray, pos: np.ndarray) -> float:
    """bob.measure's ``calibration.cllr`` as published: a loop of ``log2(1 + exp(-pos))`` and
    ``log2(1 + exp(neg))``, each class averaged, the two halves averaged."""
    sum_pos = sum(math.log(1.0 + math.exp(-float(p)), 2.0) for p in pos)
    sum_neg = sum(math.log(1.0 + math.exp(float(n)), 2.0) for n in neg)
    return (sum_pos / len(pos) + sum_neg / len(neg)) / 2.0


def bob_min_cllr(neg: np.ndarray, pos: np.ndarray) -> float:
    """bob.measure's ``calibration.min_cllr`` as published, step by step: the merged sorted scores
    as an "ideal" 0/1 sequence (a negative before a positive of the same score), PAV of it
    (unweighted), the posterior log odds less the log prior odds ``log(P / N)``, then :func:`bob_cllr`.
    bob.measure 6's Python lost its ``pavx``; scikit-learn's ``IsotonicRegression`` stands in for it
    (an independent PAV)."""
    from sklearn.isotonic import IsotonicRegression

    neg, pos = sorted(neg), sorted(pos)
    n_neg, n_pos = len(neg), len(pos)
    ideal = np.zeros(n_neg + n_pos)
    neg_idx, pos_idx = [], []
    n = p = 0
    for i in range(n_neg + n_pos):
        if p < n_pos and (n == n_neg or neg[n] > pos[p]):
            pos_idx.append(i)
            p += 1
            ideal[i] = 1
        else:
            neg_idx.append(i)
            n += 1
    ghat = IsotonicRegression().fit_transform(np.arange(ideal.size), ideal)
    with np.errstate(divide="ignore"):
        llrs = np.log(ghat) - np.log(1.0 - ghat) - math.log(n_pos / n_neg)
    return bob_cllr(llrs[neg_idx], llrs[pos_idx])
