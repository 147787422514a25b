"""Strict-JSON helpers: the one sanitiser every JSON writer of fetoolkit uses (NaN/inf -> null)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def jsonable(x: Any) -> Any:
    """``x`` with NaN/inf floats as None and numpy scalars as Python ones (for strict JSON)."""
    if isinstance(x, dict):
        return {k: jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, np.generic):
        return jsonable(x.item())
    return x


def json_float(x: float | None) -> float | None:
    """A float for strict JSON: None for None, NaN and inf."""
    return None if x is None or not math.isfinite(x) else float(x)


def json_pair(p: tuple[float, float] | None) -> list[float | None] | None:
    """An interval ``(low, high)`` for strict JSON (``[low, high]``, non-finite ends as None)."""
    return None if p is None else [json_float(p[0]), json_float(p[1])]
