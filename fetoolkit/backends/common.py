"""Pieces shared by the embedders."""

from __future__ import annotations

import numpy as np


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Row-wise L2 normalisation of float ``[N, D]``; returns float32 ``[N, D]``."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), eps)


def batches(n: int, size: int) -> list[slice]:
    """Slices covering ``range(n)`` in chunks of ``size``."""
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]
