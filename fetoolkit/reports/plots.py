"""Plots of verification results. The only module that imports matplotlib.

Figures are built with ``matplotlib.figure.Figure`` (no pyplot): writing a report never changes
the caller's matplotlib backend, so a notebook that runs an evaluation keeps its inline plots.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure


def _finish(fig: Figure, ax: Any, path: str | Path, title: str, *, legend: str | None, which: str = "major") -> Path:
    """Title, grid, legend (at ``legend``; None: none), tight layout, and the PNG written to ``path``."""
    ax.set_title(title)
    ax.grid(True, which=which, alpha=0.3)
    if legend is not None:
        ax.legend(loc=legend, fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path


def plot_roc(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    path: str | Path,
    *,
    title: str = "ROC",
    min_far: float | None = None,
) -> Path:
    """ROC curves on a log-FAR axis, one line per label.

    Args:
        curves: label -> (far ``[K]``, tar ``[K]``) arrays of fractions.
        path: PNG to write.
        title: plot title.
        min_far: left end of the FAR axis (default: the finest non-zero FAR among the curves).
    """
    fig = Figure(figsize=(6, 4.5), dpi=120)
    ax = fig.subplots()
    finest = 1.0
    styles = ("-", "--", "-.", ":")  # overlaid curves that coincide (torch vs onnx) stay visible
    for k, (label, (far, tar)) in enumerate(curves.items()):
        far, tar = np.asarray(far), np.asarray(tar)
        pos = far > 0
        if pos.any():
            finest = min(finest, float(far[pos].min()))
        ax.step(
            np.where(pos, far, np.nan),
            tar,
            where="post",
            label=label,
            lw=1.5 + 0.8 * (k % 2 == 0),
            ls=styles[(k // 2) % len(styles)] if len(curves) > 1 else "-",
            alpha=0.9,
        )
    ax.set_xscale("log")
    ax.set_xlim(min_far or finest, 1.0)
    ax.set_ylim(min(0.9, ax.get_ylim()[0]), 1.001)
    ax.set_xlabel("false accept rate (log)")
    ax.set_ylabel("true accept rate")
    return _finish(fig, ax, path, title, legend="lower right", which="both")


def _probit(p: np.ndarray) -> np.ndarray:
    """Inverse standard normal CDF, elementwise (NaN outside (0, 1))."""
    from statistics import NormalDist

    inv = np.frompyfunc(NormalDist().inv_cdf, 1, 1)
    p = np.asarray(p, np.float64)
    out = np.full(p.shape, np.nan)
    ok = (p > 0) & (p < 1)
    out[ok] = inv(p[ok]).astype(np.float64)
    return out


_DET_TICKS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.05, 0.2, 0.5, 0.8, 0.95)


def _tick_label(p: float) -> str:
    return f"{p * 100:g}%"


def plot_det(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: str | Path, *, title: str = "DET") -> Path:
    """DET curves (FRR against FAR) on normal-deviate axes, one line per label.

    Args:
        curves: label -> (far ``[K]``, frr ``[K]``) fractions; points with a rate of exactly 0
            or 1 cannot be drawn on these axes and are left out.
        path: PNG to write.
        title: plot title.
    """
    fig = Figure(figsize=(5.5, 5), dpi=120)
    ax = fig.subplots()
    lo = 0.5
    for label, (far, frr) in curves.items():
        far, frr = np.asarray(far, np.float64), np.asarray(frr, np.float64)
        ok = (far > 0) & (far < 1) & (frr > 0) & (frr < 1)
        if not ok.any():
            continue
        lo = min(lo, float(far[ok].min()), float(frr[ok].min()))
        ax.plot(_probit(far[ok]), _probit(frr[ok]), label=label, lw=1.5)
    ticks = [t for t in _DET_TICKS if t >= lo / 2]
    lim = (float(_probit(np.array([max(lo / 2, 1e-7)]))[0]), float(_probit(np.array([0.6]))[0]))
    for setter, lim_setter in ((ax.set_xticks, ax.set_xlim), (ax.set_yticks, ax.set_ylim)):
        setter(_probit(np.array(ticks)), [_tick_label(t) for t in ticks])
        lim_setter(*lim)
    ax.plot(lim, lim, ls=":", color="grey", lw=1, label="FAR = FRR")
    ax.set_xlabel("false accept rate (FAR)")
    ax.set_ylabel("false reject rate (FRR)")
    return _finish(fig, ax, path, title, legend="upper right")


def plot_score_hist(
    genuine: np.ndarray,
    impostor: np.ndarray,
    path: str | Path,
    *,
    thresholds: Mapping[str, float] | None = None,
    title: str = "scores",
) -> Path:
    """Genuine and impostor score histograms (densities, log count axis) with threshold lines.

    Args:
        genuine: float ``[G]`` genuine-pair scores.
        impostor: float ``[I]`` impostor-pair scores.
        path: PNG to write.
        thresholds: label -> score threshold, drawn as vertical lines.
        title: plot title.
    """
    genuine, impostor = np.asarray(genuine, np.float64), np.asarray(impostor, np.float64)
    allv = np.concatenate([genuine, impostor])
    bins = np.linspace(float(allv.min()), float(allv.max()), 101)
    fig = Figure(figsize=(6.5, 4.2), dpi=120)
    ax = fig.subplots()
    ax.hist(impostor, bins=bins, color="tab:red", alpha=0.55, label=f"impostor ({impostor.size})")
    ax.hist(genuine, bins=bins, color="tab:green", alpha=0.55, label=f"genuine ({genuine.size})")
    ax.set_yscale("log")
    styles = ("--", "-.", ":", (0, (5, 1)))
    for k, (label, thr) in enumerate((thresholds or {}).items()):
        if np.isfinite(thr):
            ax.axvline(thr, color="black", ls=styles[k % len(styles)], lw=1.2, label=f"{label} = {thr:.3f}")
    ax.set_xlabel("cosine similarity")
    ax.set_ylabel("pairs (log)")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path


def plot_erc(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    path: str | Path,
    *,
    baseline: float | None = None,
    title: str = "error versus reject",
) -> Path:
    """Error-versus-reject curves: FNMR against the fraction of images rejected.

    Args:
        curves: quality-score name -> (reject fractions ``[K]``, FNMR ``[K]``).
        path: PNG to write.
        baseline: FNMR without rejection (what a random quality score keeps), drawn dashed.
        title: plot title.
    """
    fig = Figure(figsize=(6.5, 4.2), dpi=120)
    ax = fig.subplots()
    for label, (rej, fnmr) in curves.items():
        ax.plot(np.asarray(rej) * 100, np.asarray(fnmr) * 100, marker=".", ms=3, lw=1.4, label=label)
    if baseline is not None and np.isfinite(baseline):
        ax.axhline(baseline * 100, color="grey", ls="--", lw=1, label="no rejection (random score)")
    ax.set_xlabel("images rejected, lowest quality first (%)")
    ax.set_ylabel("FNMR at fixed threshold (%)")
    ax.set_ylim(bottom=0)
    return _finish(fig, ax, path, title, legend="best")


def plot_epc(alpha: np.ndarray, hter: np.ndarray, path: str | Path, *, title: str = "EPC") -> Path:
    """bob.measure's expected performance curve: eval HTER against the dev weight ``alpha`` ``[K]``."""
    fig = Figure(figsize=(6, 4), dpi=120)
    ax = fig.subplots()
    ax.plot(np.asarray(alpha), 100 * np.asarray(hter), lw=1.5, marker=".")
    ax.set_xlabel("alpha (dev threshold minimises alpha*FAR + (1-alpha)*FRR)")
    ax.set_ylabel("HTER on eval (%)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path


def plot_fmr_heatmap(
    values: list[str], fmr: np.ndarray, counts: np.ndarray, path: str | Path, *, title: str = "FMR"
) -> Path:
    """Cross-group FMR ``[G, G]`` on a log colour scale (NIST's form); each cell shows rate and count.

    Cells without impostor comparisons are blank; cells with no false match are drawn in the
    lowest colour and labelled ``0``.
    """
    import matplotlib
    from matplotlib.colors import LogNorm

    fmr = np.asarray(fmr, np.float64)
    n = len(values)
    pos = fmr[np.isfinite(fmr) & (fmr > 0)]
    lo = float(pos.min()) if pos.size else 1e-6
    hi = float(pos.max()) if pos.size else 1e-5
    hi = max(hi, lo * 10)
    shown = np.where(np.isfinite(fmr), np.where(fmr > 0, fmr, lo / 10), np.nan)  # zeros: below the scale
    size = max(3.5, 1.2 + 0.9 * n)
    fig = Figure(figsize=(size + 1.8, size), dpi=120)
    ax = fig.subplots()
    cmap = matplotlib.colormaps["viridis"].with_extremes(under="lightgrey", bad="white")
    im = ax.imshow(np.ma.masked_invalid(shown), norm=LogNorm(vmin=lo, vmax=hi), cmap=cmap)
    fig.colorbar(im, ax=ax, label="false match rate (log; grey: no false match)", extend="min")
    for i in range(n):
        for j in range(n):
            if np.isfinite(fmr[i, j]):
                text = "0" if fmr[i, j] == 0 else f"{fmr[i, j]:.1e}"
                colour = "black" if fmr[i, j] == 0 else "white"
                ax.text(j, i, f"{text}\nn={int(counts[i, j])}", ha="center", va="center", fontsize=7, color=colour)
    ax.set_xticks(range(n), values, rotation=45, ha="right")
    ax.set_yticks(range(n), values)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path


def plot_cmc(curves: Mapping[str, np.ndarray], path: str | Path, *, title: str = "CMC") -> Path:
    """Cumulative match characteristic curves: identification rate against rank, one line per label.

    Args:
        curves: label -> float ``[R]`` rates, entry ``r`` being the rate within rank ``r + 1``
            (:attr:`fetoolkit.metrics.identification.IdentificationReport.cmc`); NaN entries are
            not drawn.
        path: PNG to write.
        title: plot title.

    The rank axis is logarithmic when a curve is longer than 20 ranks.
    """
    fig = Figure(figsize=(6, 4.5), dpi=120)
    ax = fig.subplots()
    longest = 1
    for label, cmc in curves.items():
        cmc = np.asarray(cmc, np.float64)
        longest = max(longest, cmc.size)
        ax.step(
            np.arange(1, cmc.size + 1), cmc, where="post", label=label, lw=1.5, marker="." if cmc.size <= 20 else None
        )
    if longest > 20:
        ax.set_xscale("log")
        ax.set_xlabel("rank (log)")
    else:
        ax.set_xlabel("rank")
    ax.set_xlim(1, longest)
    ax.set_ylabel("identification rate (mate within rank)")
    ax.set_ylim(top=1.001)
    return _finish(fig, ax, path, title, legend="lower right", which="both")


def plot_dir(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    path: str | Path,
    *,
    title: str = "DIR",
    min_fpir: float | None = None,
) -> Path:
    """Detection-and-identification-rate curves: TPIR against FPIR on a log-FPIR axis.

    Args:
        curves: label -> (fpir ``[K]``, tpir ``[K]``) fractions
            (:attr:`~fetoolkit.metrics.identification.IdentificationReport.dir_fpir` and
            ``dir_tpir``); points at FPIR 0 cannot be drawn on a log axis and are left out.
        path: PNG to write.
        title: plot title.
        min_fpir: left end of the FPIR axis (default: the finest non-zero FPIR among the curves).
    """
    fig = Figure(figsize=(6, 4.5), dpi=120)
    ax = fig.subplots()
    finest = 1.0
    for label, (fpir, tpir) in curves.items():
        fpir, tpir = np.asarray(fpir, np.float64), np.asarray(tpir, np.float64)
        pos = fpir > 0
        if pos.any():
            finest = min(finest, float(fpir[pos].min()))
        ax.step(np.where(pos, fpir, np.nan), tpir, where="post", label=label, lw=1.5)
    ax.set_xscale("log")
    ax.set_xlim(min_fpir or finest, 1.0)
    ax.set_ylim(bottom=0, top=1.001)
    ax.set_xlabel("false positive identification rate (log)")
    ax.set_ylabel("true positive identification rate (rank 1)")
    return _finish(fig, ax, path, title, legend="lower right", which="both")


def plot_reliability(
    mean_p: np.ndarray, frac_genuine: np.ndarray, count: np.ndarray, n_bins: int, path: str | Path, *, title: str
) -> Path:
    """Reliability diagram of ``p_same``: per non-empty bin, the fraction of genuine pairs against the
    mean predicted probability (the diagonal is perfect calibration), with each bin's pair count.

    Args:
        mean_p, frac_genuine, count: float ``[K]`` per non-empty bin (see
            :class:`fetoolkit.metrics.calibration.Reliability`).
        n_bins: equal-width bins over [0, 1].
        path: PNG to write.
    """
    fig = Figure(figsize=(6, 6), dpi=120)
    ax, hist = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1, label="perfectly calibrated")
    ax.plot(mean_p, frac_genuine, "o-", label="p_same")
    for x, y, n in zip(mean_p, frac_genuine, count):
        ax.annotate(f"{n:.0f}", (x, y), textcoords="offset points", xytext=(4, -10), fontsize=7)
    ax.set_ylabel("fraction of genuine pairs")
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.02, 1.02)
    hist.bar(np.asarray(mean_p), np.asarray(count), width=0.8 / n_bins, log=True)
    hist.set_xlabel("predicted p_same (bin mean)")
    hist.set_ylabel("pairs")
    hist.grid(True, alpha=0.3)
    return _finish(fig, ax, path, title, legend="upper left")


def plot_tippett(t: np.ndarray, genuine: np.ndarray, impostor: np.ndarray, path: str | Path, *, title: str) -> Path:
    """Tippett plot: the fraction of genuine and of impostor pairs whose LLR exceeds each value.

    Args:
        t: float ``[T]`` LLR grid (natural log); genuine, impostor: float ``[T]`` fractions above it.
        path: PNG to write.
    """
    fig = Figure(figsize=(6, 4.5), dpi=120)
    ax = fig.subplots()
    ax.plot(t, genuine, label="genuine pairs: LLR > x")
    ax.plot(t, impostor, label="impostor pairs: LLR > x")
    ax.axvline(0.0, color="grey", ls=":", lw=1)
    ax.set_xlabel("log-likelihood ratio x (natural log)")
    ax.set_ylabel("fraction of pairs")
    ax.set_ylim(-0.02, 1.02)
    return _finish(fig, ax, path, title, legend="center left")
