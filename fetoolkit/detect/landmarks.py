"""How far two detectors' landmarks lie apart: the normalised mean error of the five points."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def landmark_nme(reference: np.ndarray, other: np.ndarray) -> float:
    """Mean distance of the five points divided by the reference's inter-ocular distance.

    Args:
        reference: float ``[5, 2]`` (x, y) in the template's order (eyes first).
        other: float ``[5, 2]`` of the same face from another detector.
    """
    ref, oth = np.asarray(reference, np.float64), np.asarray(other, np.float64)
    iod = float(np.linalg.norm(ref[0] - ref[1]))
    if iod <= 0:
        raise ValueError("the reference's eyes coincide: no inter-ocular distance")
    return float(np.linalg.norm(ref - oth, axis=1).mean() / iod)


def agreement_summary(nmes: Sequence[float], n_missing: int = 0) -> dict[str, Any]:
    """``{"mean", "p95", "max", "n", "n_missing"}`` of per-image NMEs (missing: a face one side lacks)."""
    x = np.asarray(nmes, np.float64)
    if x.size == 0:
        return {"mean": None, "p95": None, "max": None, "n": 0, "n_missing": n_missing}
    return {
        "mean": float(x.mean()),
        "p95": float(np.quantile(x, 0.95)),
        "max": float(x.max()),
        "n": int(x.size),
        "n_missing": int(n_missing),
    }
