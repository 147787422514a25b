"""The calibration's files in a run folder: ``reliability.png``, ``tippett.png``, and the ``llr`` and
``p_same`` columns of the pair table."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from fetoolkit.decision.calibrate import Calibrated
from fetoolkit.metrics.calibration import tippett

log = logging.getLogger(__name__)


def with_llr(frame: pd.DataFrame, cal: Calibrated, roc_protocols: Sequence[str]) -> pd.DataFrame:
    """``frame`` (a run's pair table) with ``llr`` and ``p_same`` on its scored ROC rows, NaN elsewhere.

    The scored ROC rows are those of a protocol in ``roc_protocols`` (and ``enrolled`` where the
    table has that column), in the order the calibration saw them. Their LLRs come from a map that
    did not see them (out-of-fold or dev).
    """
    rows = frame["protocol"].astype(str).isin(list(roc_protocols)).to_numpy().copy()
    if "enrolled" in frame:
        rows &= frame["enrolled"].to_numpy(bool)
    out = frame.copy()
    llr = np.full(len(frame), np.nan)
    p = np.full(len(frame), np.nan)
    if rows.sum() != cal.llr.size:  # a table that does not line up is left without the columns' values
        log.warning("pair table: %d ROC rows, %d calibrated pairs: llr / p_same left empty", rows.sum(), cal.llr.size)
    else:
        llr[rows], p[rows] = cal.llr, cal.p_same
    out["llr"], out["p_same"] = llr, p
    return out


def write_plots(cal: Calibrated, labels: np.ndarray, out_dir: Path, title: str) -> None:
    """``reliability.png`` (with bin counts) and ``tippett.png`` of the out-of-fold (or dev) LLRs;
    ``labels``: bool ``[P]`` of the calibrated pairs."""
    from fetoolkit.reports import plots

    r = cal.reliability
    plots.plot_reliability(
        r.mean_p,
        r.frac_genuine,
        r.count,
        r.n_bins,
        out_dir / "reliability.png",
        title=f"{title}: p_same at prior {cal.prior:.3g} (ECE {cal.figures['ece']:.4f})",
    )
    t, gen, imp = tippett(cal.llr, labels)
    plots.plot_tippett(
        t,
        gen,
        imp,
        out_dir / "tippett.png",
        title=f"{title}: {cal.calibration.method} LLRs (Cllr {cal.figures['cllr']:.4f})",
    )
