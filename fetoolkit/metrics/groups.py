"""Demographic differentials at one global threshold (ISO/IEC 19795-10, NIST FRTE practice).

For one attribute (a column of the group file) each comparison has a group on each side. At the
global threshold (accept ``score >= threshold``):

* a group's FNMR counts its genuine comparisons (both sides in the group);
* a group's FMR counts the impostor comparisons with **both sides in that group**; comparisons
  across two groups are reported apart, in the cross-group FMR matrix (NIST's heatmap);
* a group's TAR@FAR uses its own within-group pairs (its own threshold at that FAR);
* ``fmr_max_min`` / ``fnmr_max_min``: the largest rate over the smallest among the groups whose
  rate is measured (None when the smallest is 0);
* ``fdr``: the fairness discrepancy rate of de Freitas Pereira and Marcel (2021):
  ``1 - (alpha * max|FMR_i - FMR_j| + (1 - alpha) * max|FNMR_i - FNMR_j|)``; 1 = no differential.

A group with fewer than ``min_pairs`` genuine (or impostor) comparisons gets no FNMR (FMR): the
count and the reason are reported instead of a rate that would mean little. Intervals are
Clopper-Pearson (exact binomial, comparisons treated as independent).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from fetoolkit.jsonutil import json_float, json_pair
from fetoolkit.metrics import verification as vm
from fetoolkit.metrics.operating import clopper_pearson


@dataclass(frozen=True)
class GroupCurves:
    """What the plots need for one attribute.

    Attributes:
        values: the group names, in table order.
        cross_fmr: float64 ``[G, G]`` cross-group FMR (NaN where no impostor comparison).
        cross_n: int64 ``[G, G]`` impostor comparisons of each cell.
        det: group -> (FAR ``[K]``, FRR ``[K]``) of its within-group comparisons.
    """

    values: list[str]
    cross_fmr: np.ndarray
    cross_n: np.ndarray
    det: dict[str, tuple[np.ndarray, np.ndarray]]


def _rate(k: int, n: int, min_pairs: int, what: str, level: float) -> dict[str, Any]:
    if n < max(min_pairs, 1):
        return {what: None, f"{what}_ci": None, f"{what}_reason": f"{n} comparisons (< min_pairs={min_pairs})"}
    return {what: k / n, f"{what}_ci": json_pair(clopper_pearson(k, n, level))}


def _spread(rates: dict[str, float]) -> tuple[float | None, float | None, str | None]:
    """(max/min ratio, max - min, reason when the ratio is undefined) over measured rates."""
    if len(rates) < 2:
        return None, None, "fewer than two groups with a measured rate"
    lo, hi = min(rates.values()), max(rates.values())
    if lo == 0:
        zero = sorted(k for k, v in rates.items() if v == 0)
        return None, hi - lo, f"the smallest rate is 0 (groups {', '.join(zero)})"
    return hi / lo, hi - lo, None


def group_differentials(
    scores: np.ndarray,
    labels: np.ndarray,
    group_a: np.ndarray,
    group_b: np.ndarray,
    threshold: float,
    *,
    far: float = 1e-3,
    min_pairs: int = 30,
    alpha: float = 0.5,
    level: float = 0.95,
) -> tuple[dict[str, Any], GroupCurves]:
    """Per-group rates of one attribute at ``threshold``.

    Args:
        scores: float64 ``[P]``.
        labels: bool ``[P]``, True = genuine.
        group_a / group_b: object ``[P]`` group of each side (None: unknown, left out and counted).
        threshold: the global threshold.
        far: the FAR of each group's own TAR@FAR.
        min_pairs: smallest count for which a rate is reported.
        alpha: FDR weight of the FMR differences.
        level: interval coverage.

    Returns:
        (JSON-ready dict: ``groups`` value -> figures, ``cross_fmr``, spreads, ``fdr``; the curves).
    """
    s = np.asarray(scores, np.float64)
    y = np.asarray(labels, bool)
    known = np.array([a is not None and b is not None for a, b in zip(group_a, group_b)], bool)
    ga = np.where(known, group_a, "").astype(str)
    gb = np.where(known, group_b, "").astype(str)
    accept = s >= threshold
    values = sorted(set(ga[known]) | set(gb[known]))
    out: dict[str, Any] = {}
    det: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    fmrs: dict[str, float] = {}
    fnmrs: dict[str, float] = {}
    for v in values:
        within = known & (ga == v) & (gb == v)
        gen, imp = within & y, within & ~y
        ng, ni = int(gen.sum()), int(imp.sum())
        fm, fnm = int((accept & imp).sum()), int((~accept & gen).sum())
        row: dict[str, Any] = {
            "n_genuine": ng,
            "n_impostor": ni,
            "n_false_match": fm,
            "n_false_non_match": fnm,
            **_rate(fm, ni, min_pairs, "fmr", level),
            **_rate(fnm, ng, min_pairs, "fnmr", level),
        }
        if row["fmr"] is not None:
            fmrs[v] = row["fmr"]
        if row["fnmr"] is not None:
            fnmrs[v] = row["fnmr"]
        if ng and ni:
            t = vm.tar_at_far(s[within], y[within], far)
            row["tar_at_far"] = json_float(t.tar)
            row["tar_at_far_threshold"] = json_float(t.threshold)
            if t.reason:
                row["tar_at_far_reason"] = t.reason
            if ng >= min_pairs and ni >= min_pairs:
                d = vm.det_curve(s[within], y[within])
                det[v] = (d.far, d.frr)
        else:
            row["tar_at_far"] = None
            row["tar_at_far_reason"] = "needs genuine and impostor comparisons within the group"
        out[v] = row
    n = len(values)
    imp_known = known & ~y
    pos = {v: k for k, v in enumerate(values)}
    ia = np.array([pos.get(v, -1) for v in ga], np.int64)
    ib = np.array([pos.get(v, -1) for v in gb], np.int64)
    lo, hi = np.minimum(ia, ib), np.maximum(ia, ib)
    cell = lo * n + hi
    tot = np.bincount(cell[imp_known], minlength=n * n).reshape(n, n)
    err = np.bincount(cell[imp_known & accept], minlength=n * n).reshape(n, n)
    tot = tot + np.triu(tot, 1).T
    err = err + np.triu(err, 1).T
    with np.errstate(invalid="ignore", divide="ignore"):
        cross = np.where(tot > 0, err / np.maximum(tot, 1), np.nan)
    cross_n = tot.astype(np.int64)
    fmr_ratio, fmr_gap, fmr_why = _spread(fmrs)
    fnmr_ratio, fnmr_gap, fnmr_why = _spread(fnmrs)
    fdr = None if fmr_gap is None or fnmr_gap is None else 1.0 - (alpha * fmr_gap + (1.0 - alpha) * fnmr_gap)
    if not math.isfinite(threshold):  # every comparison rejected: equal rates that say nothing
        fmr_ratio = fnmr_ratio = fdr = None
        fmr_why = fnmr_why = "the threshold is not finite: every comparison is rejected"
    gen_cross = int((known & y & (ga != gb)).sum())
    summary: dict[str, Any] = {
        "groups": out,
        "cross_fmr": {
            values[i]: {
                values[j]: {
                    "fmr": json_float(float(cross[i, j])),
                    "n_impostor": int(cross_n[i, j]),
                    "n_false_match": int(err[i, j]),
                }
                for j in range(n)
            }
            for i in range(n)
        },
        "fmr_max_min": json_float(fmr_ratio) if fmr_ratio is not None else None,
        "fnmr_max_min": json_float(fnmr_ratio) if fnmr_ratio is not None else None,
        "fmr_max_min_reason": fmr_why,
        "fnmr_max_min_reason": fnmr_why,
        "fdr": json_float(fdr) if fdr is not None else None,
        "fdr_alpha": alpha,
        "n_unknown": int((~known).sum()),
        "n_genuine_across_groups": gen_cross,
        "n_impostor_across_groups": int((imp_known & (ga != gb)).sum()),
    }
    if not math.isfinite(threshold):
        summary["note"] = "the threshold is not finite: every comparison is rejected"
    return summary, GroupCurves(values, cross, cross_n, det)
