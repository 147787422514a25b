"""bob.measure's threshold search, transcribed line by line from its C++ (``minimizingThreshold``):
the published reference the operating-point tests compare against."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def bob_minimizing_threshold(neg: np.ndarray, pos: np.ndarray, cost: Callable[[float, float], float]) -> float:
    """bob.measure's C++ ``minimizingThreshold``, line by line (the published reference): walk the
    merged sorted scores from "accept all", midpoints between distinct scores, ``<=`` in the walk
    and ``<`` for the last state."""
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
            far -= 1 / len(neg)
        else:
            cur = pos[j]
            j += 1
            frr += 1 / len(pos)
        while i < len(neg) and neg[i] == cur:
            i += 1
            far -= 1 / len(neg)
        while j < len(pos) and pos[j] == cur:
            j += 1
            frr += 1 / len(pos)
        if i < len(neg) or j < len(pos):
            nxt = min(pos[j], neg[i]) if (i < len(neg) and j < len(pos)) else (neg[i] if i < len(neg) else pos[j])
            cur = (cur + nxt) / 2
    if cost(far, frr) < best_cost:
        best_thr = cur
    return float(best_thr)
