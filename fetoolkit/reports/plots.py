"""Plots of verification results. The only module that imports matplotlib."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_roc(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: str | Path, *,
             title: str = "ROC", min_far: float | None = None) -> Path:
    """ROC curves on a log-FAR axis, one line per label.

    Args:
        curves: label -> (far ``[K]``, tar ``[K]``) arrays of fractions.
        path: PNG to write.
        title: plot title.
        min_far: left end of the FAR axis (default: the finest non-zero FAR among the curves).
    """
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=120)
    finest = 1.0
    for label, (far, tar) in curves.items():
        far, tar = np.asarray(far), np.asarray(tar)
        pos = far > 0
        if pos.any():
            finest = min(finest, float(far[pos].min()))
        ax.step(np.where(pos, far, np.nan), tar, where="post", label=label, lw=1.5)
    ax.set_xscale("log")
    ax.set_xlim(min_far or finest, 1.0)
    ax.set_ylim(min(0.9, ax.get_ylim()[0]), 1.001)
    ax.set_xlabel("false accept rate (log)")
    ax.set_ylabel("true accept rate")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
