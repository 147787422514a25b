"""Open-set 1:N identification: CMC, rank-k rates, TPIR at FPIR, the DIR curve, distractor curves.

Pure functions on numpy arrays (and faiss for the exact search). No torch, no I/O, no printing.

Terms (ISO/IEC 19795-1 open-set identification; the IJB-B/C 1:N protocols use the same):

* ``gallery``: float32 ``[G, D]``, one row per **enrolled subject** (e.g. one IJB gallery
  template); ``gallery_subjects`` ``[G]`` (integers or strings) must be **unique**: a repeated
  subject is refused with ``ValueError``. ``probes``: float32 ``[Q, D]``, ``probe_subjects``
  ``[Q]`` (may repeat). Features are L2-normalised by the caller, so scores are cosines; higher
  = more similar. Every value must be finite.
* A search (one probe against the whole gallery) is **mated** when the probe's subject is in the
  gallery (its *mate* is that gallery row), **non-mated** otherwise.
* **Rank** of a mated search: ``1 + (number of other gallery rows scoring >= the mate's score)``.
  Ties are pessimistic: the mate is ranked after every row with an equal score, as in
  bob.measure's ``cmc`` / ``recognition_rate`` (``index = numpy.sum(neg >= max_pos)``, checked in
  bob.measure's ``_library`` source).
* **CMC** ``[R]``: ``cmc[r]`` = fraction of mated searches whose rank is ``<= r + 1``; the
  rank-``k`` rate is ``cmc[k - 1]`` (for ``k > G`` the rate at ``G``, which is 1).
* **FPIR** at threshold ``t``: fraction of non-mated searches whose top-1 score is ``>= t``.
  **TPIR** (detection and identification rate, bob.measure's ``detection_identification_rate``)
  at ``t``: fraction of mated searches whose mate is at rank 1 **and** scores ``>= t``.
  bob.measure compares ``max_pos >= threshold`` (and ``numpy.max(neg) >= threshold`` in
  ``false_alarm_rate``), so a score equal to the threshold is accepted here too.
* **TPIR at FPIR f**: the threshold is the non-mated top-1 scores sorted descending, taken at
  index ``floor(n_nonmated * f) - 1`` (the insightface IJB 1:N evaluation reads its threshold off
  the descending non-mate scores the same way; a 1e-9 slack makes ``1000 * 1e-3`` count as 1).
  With ``>=`` that threshold accepts ``floor(n_nonmated * f)`` non-mated searches (more only when
  the top-1 scores tie at the threshold; ``achieved_fpir`` reports what it accepts). Where
  ``n_nonmated * f < 1`` the figure is not measurable: NaN with a reason, never the
  ``max(..., 0)`` clamp, which would report the FPIR of one non-mated search as a finer one.
  Default FPIRs: the decades ``1e-1, 1e-2, ...`` while ``n_nonmated * f >= 1``.
* **DIR curve**: (FPIR, TPIR) at ``+inf`` (0, 0) and then at every distinct non-mated top-1
  score, descending.

Figures the data cannot support (no mated searches: ranks and TPIR; no non-mated searches:
TPIR at FPIR) are NaN or absent together with a reason string, never a silent 0.0.

Search: exact inner product with ``faiss.IndexFlatIP`` (:func:`search`); the report keeps only
the top ``max_rank + 1`` rows of each search (enough to rank every mate up to ``max_rank``
exactly under the tie rule), never a ``[Q, G]`` score matrix.

References: bob.measure (``cmc``, ``recognition_rate``, ``detection_identification_rate``,
``false_alarm_rate``); ISO/IEC 19795-1:2021 (open-set identification, FPIR / FNIR); insightface
``recognition/_evaluation_/ijb`` 1:N evaluation; MegaFace (rank-1 against the number of
distractors) for :func:`distractor_curve`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fetoolkit.jsonutil import json_float
from fetoolkit.metrics._pairs import _far_quota, far_key
from fetoolkit.metrics.subjects import interval_dropping

log = logging.getLogger(__name__)

__all__ = [
    "IdentificationReport",
    "TpirAtFpir",
    "distractor_curve",
    "identification_report",
    "mean_report",
    "search",
]

_FINITE_CHUNK_ROWS = 65_536  # rows per finiteness check (a bool array of 32 MB at D = 512)
_DISTRACTOR_BLOCK = 65_536  # distractor rows gathered and searched at a time


# --------------------------------------------------------------------------------------------
# Result types
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TpirAtFpir:
    """TPIR at a target FPIR.

    Attributes:
        fpir: the target FPIR.
        tpir: fraction of mated searches with the mate at rank 1 scoring ``>= threshold``; NaN
            when not measurable (see ``reason``).
        threshold: the non-mated top-1 score at descending index ``floor(n_nonmated * fpir) - 1``;
            NaN when not measurable.
        reason: why ``tpir`` is NaN; None when it was measured.
        achieved_fpir: the FPIR actually obtained at ``threshold`` (``floor(n_nonmated * fpir) /
            n_nonmated`` unless top-1 scores tie at the threshold); NaN when not measurable.
    """

    fpir: float
    tpir: float
    threshold: float
    reason: str | None = None
    achieved_fpir: float = math.nan


@dataclass(frozen=True, eq=False)
class IdentificationReport:
    """All open-set identification figures of one gallery and its probes.

    Attributes:
        n_gallery: gallery rows (enrolled subjects).
        n_mated: mated searches (probe subject in the gallery).
        n_nonmated: non-mated searches.
        cmc: float64 ``[R]``, ``R = min(max_rank, n_gallery)``: fraction of mated searches whose
            mate is within rank ``r + 1``; NaN without mated searches.
        ranks: rank ``k`` -> rate (``cmc[min(k, R) - 1]``), for each asked rank.
        tpir_at_fpir: ``far_key(fpir)`` (e.g. ``"1e-2"``) -> :class:`TpirAtFpir`, coarsest
            first; empty without non-mated searches.
        dir_fpir: float64 ``[M + 1]``, FPIR of the DIR curve, non-decreasing from 0.
        dir_tpir: float64 ``[M + 1]``, TPIR at the same thresholds (NaN without mated searches).
        dir_thresholds: float64 ``[M + 1]``: ``+inf`` then the ``M`` distinct non-mated top-1
            scores, descending (``M = 0`` without non-mated searches).
        reasons: figure -> why it could not be measured (``"ranks"``, ``"tpir_at_fpir"``, or a
            ``far_key``); empty when everything was measured.
        timing_s: seconds spent in the search and in the figures.
        intervals: figure (``"rank1"``, ..., ``"tpir_at_fpir/1e-2"``) -> ``(low, high)`` percentile
            interval of the probe-subject bootstrap (see :func:`identification_report`'s
            ``n_boot``); empty without it.
        n_boot: resamples of ``intervals`` (0: none).
    """

    n_gallery: int
    n_mated: int
    n_nonmated: int
    cmc: np.ndarray
    ranks: dict[int, float]
    tpir_at_fpir: dict[str, TpirAtFpir]
    dir_fpir: np.ndarray
    dir_tpir: np.ndarray
    dir_thresholds: np.ndarray = field(default_factory=lambda: np.array([np.inf]))
    reasons: dict[str, str] = field(default_factory=dict)
    timing_s: dict[str, float] = field(default_factory=dict)
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)
    n_boot: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The identification keys of ``results.json``: non-finite floats become None.

        Keys: ``rank<k>`` for each asked rank, ``tpir_at_fpir``, ``threshold_at_fpir`` and
        ``achieved_fpir`` (``far_key`` -> value; None where not measurable), ``n_gallery``,
        ``n_mated``, ``n_nonmated`` and ``reasons`` (only the figures that are not measurable).
        """
        t = self.tpir_at_fpir
        d: dict[str, Any] = {f"rank{k}": json_float(v) for k, v in self.ranks.items()}
        d.update(
            {
                "tpir_at_fpir": {k: json_float(v.tpir) for k, v in t.items()},
                "threshold_at_fpir": {k: json_float(v.threshold) for k, v in t.items()},
                "achieved_fpir": {k: json_float(v.achieved_fpir) for k, v in t.items()},
                "n_gallery": int(self.n_gallery),
                "n_mated": int(self.n_mated),
                "n_nonmated": int(self.n_nonmated),
                "reasons": dict(self.reasons),
            }
        )
        if self.n_boot:
            iv = self.intervals
            d.update({f"rank{k}_ci": _json_ci(iv.get(f"rank{k}")) for k in self.ranks})
            d["tpir_at_fpir_ci"] = {k: _json_ci(iv.get(f"tpir_at_fpir/{k}")) for k in t}
            d["ci_method"] = (
                f"{self.n_boot} resamples of the probes' subjects (with replacement; every search of a drawn "
                "subject counts once per draw; the gallery is fixed), percentile interval"
            )
        return d


def _json_ci(ci: tuple[float, float] | None) -> list[float | None] | None:
    return None if ci is None else [json_float(ci[0]), json_float(ci[1])]


# --------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------


def _check_features(x: Any, name: str, dim: int | None = None) -> np.ndarray:
    """Validate a feature matrix; return it as C-contiguous float32 ``[N, D]`` (no copy if it is)."""
    a = np.asarray(x)
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-D [N, D], got shape {a.shape}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {a.shape}): need at least one row of at least one value")
    if not np.issubdtype(a.dtype, np.floating):
        raise ValueError(f"{name} must be floating point (float32 features), got dtype {a.dtype}")
    if dim is not None and a.shape[1] != dim:
        raise ValueError(f"{name} has {a.shape[1]} dimensions but the gallery has {dim}")
    if a.dtype != np.float32:
        log.debug("%s: casting %s to float32", name, a.dtype)
    a = np.ascontiguousarray(a, dtype=np.float32)
    for start in range(0, a.shape[0], _FINITE_CHUNK_ROWS):
        block = a[start : start + _FINITE_CHUNK_ROWS]
        ok = np.isfinite(block).all(axis=1)
        if not ok.all():
            bad = np.flatnonzero(~ok)[:5] + start
            raise ValueError(
                f"{name} must be finite: row(s) {bad.tolist()} hold NaN or infinite values "
                "(drop or fix those rows first)"
            )
    return a


def _check_subjects(x: Any, name: str, n: int, rows: str) -> np.ndarray:
    """Validate subject ids: 1-D ``[n]``, integers or strings."""
    s = np.asarray(x)
    if s.ndim != 1:
        raise ValueError(f"{name} must be 1-D [{rows}], got shape {s.shape}")
    if s.shape[0] != n:
        raise ValueError(f"{name} has {s.shape[0]} entries but there are {n} {rows} rows")
    if s.dtype.kind not in "iuUSO":
        raise ValueError(f"{name} must be integer or string subject ids, got dtype {s.dtype}")
    return s


def _mates(gallery_subjects: np.ndarray, probe_subjects: np.ndarray) -> np.ndarray:
    """Gallery row of each probe's mate: int64 ``[Q]``, -1 for non-mated probes.

    Raises ``ValueError`` on repeated gallery subjects or on id kinds that cannot match
    (numbers against strings)."""
    gk, pk = gallery_subjects.dtype.kind, probe_subjects.dtype.kind
    numeric = {"i", "u"}
    if (gk in numeric) != (pk in numeric) and "O" not in (gk, pk):
        raise ValueError(
            f"gallery_subjects ({gallery_subjects.dtype}) and probe_subjects ({probe_subjects.dtype}) "
            "are of different kinds (numbers vs strings): no probe could be mated"
        )
    try:
        order = np.argsort(gallery_subjects, kind="stable")
        sg = gallery_subjects[order]
        dup = sg[1:] == sg[:-1]
        if np.any(dup):
            first = np.unique(sg[1:][dup])
            raise ValueError(
                f"gallery_subjects must be unique (one gallery row per enrolled subject); "
                f"{first.size} subject(s) repeat, e.g. {first[:5].tolist()}"
            )
        pos = np.searchsorted(sg, probe_subjects)
    except TypeError as e:
        raise ValueError(f"subject ids must be comparable with each other: {e}") from None
    pos_c = np.minimum(pos, sg.size - 1)
    found = np.asarray(sg[pos_c] == probe_subjects, dtype=bool)
    return np.where(found, order[pos_c], -1).astype(np.int64)


def _check_positive_int(v: Any, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"{name} must be a positive integer, got {v!r}")
    return int(v)


def _check_fpir(f: float) -> float:
    f = float(f)
    if not (0.0 < f <= 1.0):
        raise ValueError(f"fpir must be in (0, 1], got {f}")
    return f


# --------------------------------------------------------------------------------------------
# Search
# --------------------------------------------------------------------------------------------


def _search_checked(g: np.ndarray, p: np.ndarray, k: int, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`search` on already validated float32 C-contiguous arrays, ``1 <= k <= G``."""
    import faiss  # here, not at import time: the rest of the module (to_dict, mean_report) needs no faiss

    index = faiss.IndexFlatIP(g.shape[1])
    index.add(g)
    q = p.shape[0]
    scores = np.empty((q, k), np.float32)
    idx = np.empty((q, k), np.int64)
    for start in range(0, q, batch):
        s, i = index.search(p[start : start + batch], k)
        scores[start : start + batch] = s
        idx[start : start + batch] = i
    return scores, idx


def search(gallery: np.ndarray, probes: np.ndarray, k: int, *, batch: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-``k`` of each probe over the gallery (``faiss.IndexFlatIP``).

    Args:
        gallery: float32 ``[G, D]`` (other float dtypes are cast), L2-normalised by the caller
            so that scores are cosines.
        probes: float32 ``[Q, D]``, same ``D``.
        k: rows to return per probe; clipped to ``G``.
        batch: probes searched per faiss call (bounds faiss's working memory).

    Returns:
        ``(scores, indices)``: float32 ``[Q, k]`` scores in descending order per row and the
        int64 ``[Q, k]`` gallery rows they belong to. The order within equal scores is faiss's.

    Raises:
        ValueError: non-2-D or empty inputs, non-float dtypes, differing ``D``, non-finite
            values, ``k`` or ``batch`` not a positive integer.
    """
    g = _check_features(gallery, "gallery")
    p = _check_features(probes, "probes", dim=g.shape[1])
    k = min(_check_positive_int(k, "k"), g.shape[0])
    batch = _check_positive_int(batch, "batch")
    return _search_checked(g, p, k, batch)


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------


def _mate_ranks(scores: np.ndarray, idx: np.ndarray, mate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rank and score of each mate from a top-``K`` search (``K = min(R + 1, G)``).

    Returns ``(rank, mate_score)``: int64 ``[M]`` (``K + 1`` where the mate is not listed) and
    float32 ``[M]`` (NaN where the mate is not listed). The rank counts the listed rows scoring
    ``>=`` the mate (itself included). It is exact whenever it is below ``K`` (a listed row then
    scores below the mate, so no unlisted row can tie it) or when ``K = G``; a rank of ``K`` with
    ``K < G`` is only a lower bound (the tie group may go on past the list), which the callers
    never read as more than "beyond rank ``K - 1``"."""
    k = scores.shape[1]
    hit = idx == mate[:, None]
    found = hit.any(axis=1)
    col = np.argmax(hit, axis=1)
    s_mate = np.where(found, scores[np.arange(scores.shape[0]), col], np.float32(np.nan)).astype(np.float32)
    with np.errstate(invalid="ignore"):
        listed_ge = (scores >= s_mate[:, None]).sum(axis=1)
    return np.where(found, listed_ge, k + 1).astype(np.int64), s_mate


def _no_decade_reason(n_nonmated: int) -> str:
    return (
        f"no FPIR decade is measurable with {n_nonmated} non-mated searches: 1e-1 needs at least 10 "
        "(n_nonmated * fpir >= 1)"
    )


def _fpir_reason(n_nonmated: int, fpir: float) -> str:
    need = math.ceil(1.0 / fpir - 1e-9)
    return (
        f"FPIR {fpir:g} is finer than 1/n_nonmated = 1/{n_nonmated} = {1.0 / n_nonmated:.3g}: "
        f"at least {need} non-mated searches are needed to measure it, there are {n_nonmated}"
    )


def _default_fpirs(n_nonmated: int) -> list[float]:
    out: list[float] = []
    e = 1
    while _far_quota(n_nonmated, 10.0**-e) >= 1:
        out.append(10.0**-e)
        e += 1
    return out


def identification_report(
    gallery: np.ndarray,
    gallery_subjects: np.ndarray,
    probes: np.ndarray,
    probe_subjects: np.ndarray,
    *,
    ranks: Sequence[int] = (1, 5, 10),
    fpirs: Sequence[float] | None = None,
    max_rank: int = 100,
    batch: int = 4096,
    n_boot: int = 0,
    seed: int = 0,
    level: float = 0.95,
) -> IdentificationReport:
    """Open-set identification figures of one gallery (see the module docstring for the terms).

    Args:
        gallery: float32 ``[G, D]``, one L2-normalised row per enrolled subject.
        gallery_subjects: ``[G]`` unique subject ids (integers or strings).
        probes: float32 ``[Q, D]``, L2-normalised.
        probe_subjects: ``[Q]`` subject ids; probes whose subject is not in the gallery are the
            non-mated searches.
        ranks: the rank-``k`` rates to report.
        fpirs: the FPIRs of ``tpir_at_fpir``; None: every decade ``1e-1, 1e-2, ...`` the
            non-mated count supports. An asked FPIR finer than ``1 / n_nonmated`` is NaN with a
            reason.
        max_rank: length of the CMC (at least ``max(ranks)``; clipped to ``G``).
        batch: probes per faiss call.
        n_boot: resamples of the probe-subject bootstrap for the intervals (0: none). Each
            resample draws the probes' subjects with replacement; a search weighs how often its
            subject was drawn; every rate (rank-k, and TPIR at FPIR with the threshold re-chosen
            on the weighted non-mated searches) is recomputed with those weights. Searches of one
            subject move together (the subjects, not the searches, are the independent units).
        seed, level: the bootstrap's seed and coverage.

    Returns:
        An :class:`IdentificationReport`.

    Raises:
        ValueError: invalid features (see :func:`search`), subject ids of the wrong length,
            repeated gallery subjects, ranks / ``max_rank`` not positive integers, an FPIR
            outside ``(0, 1]``.
    """
    t0 = time.perf_counter()
    g = _check_features(gallery, "gallery")
    p = _check_features(probes, "probes", dim=g.shape[1])
    n_g, n_q = g.shape[0], p.shape[0]
    gs = _check_subjects(gallery_subjects, "gallery_subjects", n_g, "gallery")
    ps = _check_subjects(probe_subjects, "probe_subjects", n_q, "probes")
    rank_list = [_check_positive_int(r, "each rank") for r in ranks]
    max_rank = max([_check_positive_int(max_rank, "max_rank"), *rank_list])
    fpir_list = None if fpirs is None else [_check_fpir(f) for f in fpirs]
    batch = _check_positive_int(batch, "batch")
    mate = _mates(gs, ps)
    mated = mate >= 0
    n_m, n_n = int(mated.sum()), int(n_q - mated.sum())

    r_len = min(max_rank, n_g)
    k = min(r_len + 1, n_g)
    t1 = time.perf_counter()
    scores, idx = _search_checked(g, p, k, batch)
    t2 = time.perf_counter()

    reasons: dict[str, str] = {}
    rank, s_mate = _mate_ranks(scores[mated], idx[mated], mate[mated])
    if n_m:
        counts = np.bincount(np.minimum(rank, r_len + 1), minlength=r_len + 2)[1 : r_len + 1]
        cmc = np.cumsum(counts, dtype=np.float64) / n_m
    else:
        cmc = np.full(r_len, np.nan)
        reasons["ranks"] = "no mated searches (no probe subject is in the gallery): ranks and TPIR are undefined"
    rank_rates = {r: float(cmc[min(r, r_len) - 1]) for r in rank_list}

    # Mated searches detected at rank 1, their mate scores ascending; non-mated top-1 scores ascending.
    det = np.sort(s_mate[rank == 1])
    top_nm = np.sort(scores[~mated, 0])

    def tpir_at(t: np.ndarray) -> np.ndarray:
        if n_m == 0:
            return np.full(np.shape(t), np.nan)
        return (det.size - np.searchsorted(det, t, side="left")) / n_m

    def fpir_at(t: np.ndarray) -> np.ndarray:
        return (n_n - np.searchsorted(top_nm, t, side="left")) / n_n

    tpirs: dict[str, TpirAtFpir] = {}
    if n_n == 0:
        reasons["tpir_at_fpir"] = "no non-mated searches (every probe subject is in the gallery): FPIR is undefined"
    else:
        asked = _default_fpirs(n_n) if fpir_list is None else fpir_list
        if fpir_list is None and not asked:
            reasons["tpir_at_fpir"] = _no_decade_reason(n_n)
        desc = top_nm[::-1]
        for f in asked:
            key = far_key(f)
            quota = _far_quota(n_n, f)
            if quota < 1:
                reasons[key] = _fpir_reason(n_n, f)
                tpirs[key] = TpirAtFpir(f, math.nan, math.nan, reasons[key])
                continue
            th = desc[quota - 1]
            why = None
            if n_m == 0:
                why = reasons[key] = "no mated searches: TPIR is undefined"
            tp = float(tpir_at(np.asarray(th)))
            tpirs[key] = TpirAtFpir(f, tp, float(th), why, float(fpir_at(np.asarray(th))))

    intervals: dict[str, tuple[float, float]] = {}
    if n_boot and n_m:
        nm_scores = scores[~mated, 0]
        intervals = _subject_intervals(
            ps, mated, rank, s_mate, nm_scores, rank_list, tpirs, n_boot=n_boot, seed=seed, level=level
        )

    u = np.unique(top_nm)[::-1]
    dir_th = np.concatenate([[np.inf], u.astype(np.float64)])
    if n_n:
        dir_fpir = np.concatenate([[0.0], fpir_at(u)])
        dir_tpir = np.concatenate([[0.0 if n_m else np.nan], tpir_at(u)])
    else:
        dir_fpir = np.zeros(1)
        dir_tpir = np.array([0.0 if n_m else np.nan])
    t3 = time.perf_counter()
    log.debug(
        "identification: G=%d, %d mated + %d non-mated searches, top-%d search %.2f s, figures %.3f s",
        n_g,
        n_m,
        n_n,
        k,
        t2 - t1,
        t3 - t2,
    )
    return IdentificationReport(
        n_gallery=n_g,
        n_mated=n_m,
        n_nonmated=n_n,
        cmc=cmc,
        ranks=rank_rates,
        tpir_at_fpir=tpirs,
        dir_fpir=dir_fpir.astype(np.float64),
        dir_tpir=dir_tpir.astype(np.float64),
        dir_thresholds=dir_th,
        reasons=reasons,
        timing_s={"checks": t1 - t0, "search": t2 - t1, "figures": t3 - t2},
        intervals=intervals,
        n_boot=int(n_boot) if n_m else 0,
    )


def _subject_intervals(
    probe_subjects: np.ndarray,
    mated: np.ndarray,
    rank: np.ndarray,
    s_mate: np.ndarray,
    nm_scores: np.ndarray,
    ranks: Sequence[int],
    tpirs: Mapping[str, TpirAtFpir],
    *,
    n_boot: int,
    seed: int,
    level: float,
) -> dict[str, tuple[float, float]]:
    """Probe-subject bootstrap intervals of the rank-k rates and of TPIR at each measured FPIR.

    Args:
        probe_subjects: ``[Q]`` subject of each search.
        mated: bool ``[Q]``.
        rank: int ``[n_mated]`` rank of each mated search's mate; ``s_mate`` float ``[n_mated]`` its score.
        nm_scores: float ``[n_nonmated]`` top-1 score of each non-mated search.
        ranks, tpirs: the figures to give intervals.

    The weighted TPIR threshold follows the unweighted rule: with the non-mated top scores sorted
    descending and ``W`` their total weight, the threshold is the score at which the cumulative
    weight first reaches ``floor(W * f)`` (a resample with a quota below one is left out).
    """
    _, codes = np.unique(probe_subjects.astype(str), return_inverse=True)
    n_s = int(codes.max()) + 1
    cm, cn = codes[mated], codes[~mated]
    order = np.argsort(-nm_scores, kind="stable")
    desc, cn_desc = nm_scores[order], cn[order]
    rng = np.random.default_rng(seed)
    out: dict[str, list[np.ndarray]] = {f"rank{k}": [] for k in ranks}
    measured = {k: v for k, v in tpirs.items() if v.reason is None and math.isfinite(v.tpir)}
    out.update({f"tpir_at_fpir/{k}": [] for k in measured})
    step = max(1, min(n_boot, (1 << 22) // max(len(probe_subjects), 1)))
    for start in range(0, n_boot, step):
        b = min(step, n_boot - start)
        draws = rng.integers(0, n_s, size=(b, n_s))
        counts = np.zeros((b, n_s), np.int64)
        np.add.at(counts, (np.arange(b)[:, None], draws), 1)
        wm = counts[:, cm]  # [b, n_mated]
        total = wm.sum(axis=1).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            for k in ranks:
                out[f"rank{k}"].append((wm * (rank <= k)).sum(axis=1) / np.where(total > 0, total, np.nan))
            if measured:
                wn = counts[:, cn_desc]  # [b, n_nonmated], descending scores
                cum = np.cumsum(wn, axis=1)
                hit = rank == 1
                for key, v in measured.items():
                    quota = np.floor(cum[:, -1] * v.fpir + 1e-9).astype(np.int64)
                    j = np.array([np.searchsorted(c, q, side="left") for c, q in zip(cum, quota)])
                    th = desc[np.minimum(j, len(desc) - 1)]
                    tp = (wm * (hit & (s_mate[None, :] >= th[:, None]))).sum(axis=1) / total
                    out[f"tpir_at_fpir/{key}"].append(np.where((quota >= 1) & (total > 0), tp, np.nan))
    return {key: interval_dropping(np.concatenate(parts), level)[0] for key, parts in out.items()}


def mean_report(reports: Mapping[str, IdentificationReport]) -> dict[str, Any]:
    """Mean figures over several galleries (e.g. IJB-C's G1 and G2), for ``results.json``'s ``mean``.

    Args:
        reports: gallery name -> its report.

    Returns:
        ``{"rank<k>": mean, ..., "tpir_at_fpir": {far_key: mean}, "n_reports": int,
        "tpir_at_fpir_n_reports": {far_key: int}}``: each figure is the mean over the reports
        that measure it (None when none does); ``tpir_at_fpir_n_reports`` says how many that
        was. Keys are ordered coarsest FPIR first.

    Raises:
        ValueError: no reports.
    """
    if not reports:
        raise ValueError("mean_report needs at least one report")
    rank_keys: list[int] = []
    for rep in reports.values():
        rank_keys += [k for k in rep.ranks if k not in rank_keys]
    out: dict[str, Any] = {}
    for k in rank_keys:
        vals = [r.ranks[k] for r in reports.values() if k in r.ranks and math.isfinite(r.ranks[k])]
        out[f"rank{k}"] = json_float(float(np.mean(vals))) if vals else None
    keys: dict[str, float] = {}
    for rep in reports.values():
        for key, v in rep.tpir_at_fpir.items():
            keys.setdefault(key, v.fpir)
    tp: dict[str, float | None] = {}
    n_rep: dict[str, int] = {}
    for key in sorted(keys, key=lambda s: -keys[s]):
        vals = [
            r.tpir_at_fpir[key].tpir
            for r in reports.values()
            if key in r.tpir_at_fpir and math.isfinite(r.tpir_at_fpir[key].tpir)
        ]
        tp[key] = json_float(float(np.mean(vals))) if vals else None
        n_rep[key] = len(vals)
    out["tpir_at_fpir"] = tp
    out["n_reports"] = len(reports)
    out["tpir_at_fpir_n_reports"] = n_rep
    return out


# --------------------------------------------------------------------------------------------
# Distractors (MegaFace-style)
# --------------------------------------------------------------------------------------------


def _default_sizes(n: int) -> list[int]:
    sizes = []
    s = 10
    while s < n:
        sizes.append(s)
        s *= 10
    sizes.append(n)
    return sizes


def distractor_curve(
    gallery: np.ndarray,
    gallery_subjects: np.ndarray,
    probes: np.ndarray,
    probe_subjects: np.ndarray,
    distractors: np.ndarray,
    sizes: Sequence[int] | None = None,
    seed: int = 0,
    *,
    batch: int = 4096,
) -> dict[int, float]:
    """Rank-1 rate of the mated probes as distractors are added to the gallery (MegaFace-style).

    The distractors are put in one seeded random order (``np.random.default_rng(seed)
    .permutation(N)``); for each ``n`` in ``sizes`` the gallery is the subject gallery plus the
    first ``n`` of them, so the galleries are nested. A mated probe is identified at rank 1
    when its mate scores strictly above every other subject and every one of those ``n``
    distractors (the pessimistic tie rule of the module). Non-mated probes are ignored.

    One top-2 search of the subject gallery gives each probe's mate score and whether it beats
    the other subjects; the distractors are then searched in blocks (top-1 of the probes still
    at rank 1 against each block) with a running maximum, so the cost is one pass over the
    distractors and the memory is one block, never a ``[Q, N]`` matrix.

    Args:
        gallery, gallery_subjects, probes, probe_subjects: as in :func:`identification_report`.
        distractors: float32 ``[N, D]``, L2-normalised features of subjects in neither set.
        sizes: the distractor counts (each in ``0..N``); None: ``10, 100, 1000, ...`` below
            ``N``, and ``N``.
        seed: seed of the distractor order.
        batch: probes per faiss call.

    Returns:
        ``n -> rank-1 rate``, ``n`` ascending.

    Raises:
        ValueError: invalid inputs (see :func:`identification_report`), no mated probe, a size
            outside ``0..N``.
    """
    g = _check_features(gallery, "gallery")
    p = _check_features(probes, "probes", dim=g.shape[1])
    dis = np.asarray(distractors)
    if dis.ndim != 2 or dis.shape[0] == 0:
        raise ValueError(f"distractors must be 2-D [N, D] with N >= 1, got shape {dis.shape}")
    dis = _check_features(dis, "distractors", dim=g.shape[1])
    gs = _check_subjects(gallery_subjects, "gallery_subjects", g.shape[0], "gallery")
    ps = _check_subjects(probe_subjects, "probe_subjects", p.shape[0], "probes")
    batch = _check_positive_int(batch, "batch")
    n_dis = dis.shape[0]
    if sizes is None:
        size_list = _default_sizes(n_dis)
    else:
        size_list = sorted({int(s) for s in sizes})
        bad = [s for s in size_list if not 0 <= s <= n_dis]
        if bad:
            raise ValueError(f"sizes must be in 0..{n_dis} (the number of distractors), got {bad}")
    mate = _mates(gs, ps)
    mated = mate >= 0
    n_m = int(mated.sum())
    if n_m == 0:
        raise ValueError("no mated probes (no probe subject is in the gallery): the rank-1 rate is undefined")

    pm = np.ascontiguousarray(p[mated])
    k = min(2, g.shape[0])
    scores, idx = _search_checked(g, pm, k, batch)
    rank, s_mate = _mate_ranks(scores, idx, mate[mated])
    cand = np.flatnonzero(rank == 1)
    pc = np.ascontiguousarray(pm[cand])
    s_c = s_mate[cand]
    best = np.full(cand.size, -np.inf, np.float32)
    order = np.random.default_rng(seed).permutation(n_dis)
    out: dict[int, float] = {}
    done = 0
    for n in size_list:
        while done < n and cand.size:
            stop = min(done + _DISTRACTOR_BLOCK, n)
            block = np.ascontiguousarray(dis[order[done:stop]])
            s, _ = _search_checked(block, pc, 1, batch)
            np.maximum(best, s[:, 0], out=best)
            done = stop
        done = max(done, n)
        out[n] = float(np.count_nonzero(s_c > best)) / n_m
    return out
