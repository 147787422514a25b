"""Paired comparison of the runs of one data set against a reference run (for ``comparison.md``).

Two runs are compared pairwise only when they scored the same comparisons: their pair tables must
hold the same ROC pair list (same pairs, same labels, same order: a digest of the pair columns).
The figures are then recomputed on the pairs both runs enrolled:

* the paired bootstrap interval of the EER and TAR@1e-3 differences (run minus reference), the same
  resample for both runs in every round -- by subject where the pair table names the subjects
  (:func:`fetoolkit.metrics.paired.paired_differences`);
* the exact McNemar test of the accept/reject decisions, at each run's own EER threshold and at each
  run's own FAR=1e-3 threshold (:func:`fetoolkit.metrics.significance.mcnemar`).
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fetoolkit.data import nonfinite
from fetoolkit.metrics import verification as vm
from fetoolkit.metrics.paired import paired_differences
from fetoolkit.metrics.significance import mcnemar
from fetoolkit.reports import tables

log = logging.getLogger(__name__)

#: The FAR of the paired TAR difference and of the second McNemar threshold.
PAIRED_FAR = 1e-3

#: Columns that name the two sides of a pair, by pair-table kind (eval run, score file).
_ID_COLUMNS = (
    ("path_a", "path_b"),
    ("template1", "template2"),
    ("item1", "item2"),
    ("subject_a", "subject_b"),
    ("subject1", "subject2"),
)
_SUBJECT_COLUMNS = (("subject_a", "subject_b"), ("subject1", "subject2"))

PAIRED_COLUMNS = (
    "dataset",
    "reference",
    "run",
    "paired",
    "note",
    "n_pairs",
    "method",
    "n_boot",
    "eer_diff",
    "eer_diff_low",
    "eer_diff_high",
    "tar@1e-3_diff",
    "tar@1e-3_diff_low",
    "tar@1e-3_diff_high",
    "mcnemar_eer_worse",
    "mcnemar_eer_better",
    "mcnemar_eer_p",
    "mcnemar_far_worse",
    "mcnemar_far_better",
    "mcnemar_far_p",
)


@dataclass(frozen=True, eq=False)
class RunPairs:
    """A run's ROC comparisons, in its pair table's order.

    Attributes:
        scores: float64 ``[P]`` (NaN where the pair was not scored).
        labels: bool ``[P]``.
        usable: bool ``[P]``: enrolled with a finite score.
        subjects: ``(subject_a, subject_b)`` object ``[P]``, or None when the table has none.
        digest: sha256 of the pair list (id columns and labels), or None when it has no id columns.
    """

    scores: np.ndarray
    labels: np.ndarray
    usable: np.ndarray
    subjects: tuple[np.ndarray, np.ndarray] | None
    digest: str | None


def run_pairs(run: Path, s: dict[str, Any]) -> RunPairs | None:
    """The ROC comparisons of the run in folder ``run`` (``s`` its results.json), None without a pair table."""
    path = run / s.get("pairs_file", "pairs.parquet")
    if not path.is_file():
        return None
    df = tables.read_pairs(path)
    if "protocol" in df:
        df = df[df["protocol"].astype(str).str.startswith("roc")]
    df = df.reset_index(drop=True)
    usable = df["enrolled"].to_numpy(bool) if "enrolled" in df else np.ones(len(df), bool)
    scores = df["score"].to_numpy(np.float64).copy()
    # a non-finite score of a compared pair counts as an error (fetoolkit.data.nonfinite.RULE), as in
    # the run's own figures; pairs that did not enrol stay out (usable)
    scores[usable], _ = nonfinite.as_errors(scores[usable], df["label"].to_numpy(bool)[usable])
    ids = next((c for c in _ID_COLUMNS if set(c) <= set(df.columns)), None)
    digest = None
    if ids is not None:
        h = pd.util.hash_pandas_object(df[[*ids, "label"]].astype(str), index=False).to_numpy()
        digest = hashlib.sha256(h.tobytes()).hexdigest()
    sub = next((c for c in _SUBJECT_COLUMNS if set(c) <= set(df.columns)), None)
    subjects = None if sub is None else (df[sub[0]].to_numpy(object), df[sub[1]].to_numpy(object))
    return RunPairs(scores, df["label"].to_numpy(bool), usable, subjects, digest)


def _correct(scores: np.ndarray, labels: np.ndarray, threshold: float) -> np.ndarray:
    return (scores >= threshold) == labels


def _mcnemar_at(s0: np.ndarray, s1: np.ndarray, y: np.ndarray, t0: float, t1: float) -> tuple[int, int, float] | None:
    if not (math.isfinite(t0) and math.isfinite(t1)):
        return None
    r = mcnemar(_correct(s0, y, t0), _correct(s1, y, t1))
    return r.n_worse, r.n_better, r.p_value


def _row(dataset: str, ref: str, name: str, note: str, paired: bool = False, **kw: Any) -> dict[str, Any]:
    row = dict.fromkeys(PAIRED_COLUMNS)
    row.update(dataset=dataset, reference=ref, run=name, paired=paired, note=note, **kw)
    return row


def paired_against_reference(runs: list[tuple[str, Path, dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row (:data:`PAIRED_COLUMNS`) per run after the first, compared with the first (the
    reference); the runs must be of one data set. A row that could not be paired says why (``note``)."""
    (ref_name, ref_dir, ref_s), rest = runs[0], runs[1:]
    dataset = str(ref_s.get("dataset"))
    ref = run_pairs(ref_dir, ref_s)
    st = ref_s.get("stats") or {}
    n_boot, seed, level = int(st.get("n_boot", 1000) or 0), int(st.get("seed", 0)), float(st.get("level", 0.95))
    by_subject = st.get("requested", "subject") != "pair"
    out = []
    for name, run_dir, s in rest:
        if str(s.get("dataset")) != dataset:
            raise ValueError(f"{name} is of data set {s.get('dataset')!r}, the reference of {dataset!r}")
        cand = run_pairs(run_dir, s)
        if ref is None or cand is None:
            out.append(_row(dataset, ref_name, name, "not paired: a run has no pair table"))
            continue
        if ref.digest is None or cand.digest is None:
            out.append(_row(dataset, ref_name, name, "not paired: a pair table does not name its pairs"))
            continue
        if ref.digest != cand.digest:
            out.append(
                _row(
                    dataset, ref_name, name, "not paired: its ROC pair list differs from the reference's (other pairs)"
                )
            )
            continue
        both = ref.usable & cand.usable
        y = ref.labels[both]
        if y.all() or not y.any():
            out.append(_row(dataset, ref_name, name, "not paired: the pairs both runs scored lack a class"))
            continue
        s0, s1 = ref.scores[both], cand.scores[both]
        subj = ref.subjects if by_subject else None
        sa, sb = (None, None) if subj is None else (subj[0][both], subj[1][both])
        kw: dict[str, Any] = {"n_pairs": int(both.sum()), "n_boot": n_boot}
        if n_boot > 0:
            d_eer, d_tar = paired_differences(
                s0, s1, y, sa, sb, [("eer", None), ("tar_at_far", PAIRED_FAR)], n_boot=n_boot, seed=seed, level=level
            )
            kw.update(method=d_eer.method)
            for key, d in (("eer", d_eer), ("tar@1e-3", d_tar)):
                kw[f"{key}_diff"], (kw[f"{key}_diff_low"], kw[f"{key}_diff_high"]) = d.difference, d.ci
        else:
            kw.update(eer_diff=vm.eer(s1, y).eer - vm.eer(s0, y).eer)
            kw["tar@1e-3_diff"] = vm.tar_at_far(s1, y, PAIRED_FAR).tar - vm.tar_at_far(s0, y, PAIRED_FAR).tar
        thresholds = {
            "eer": (vm.eer(s0, y).threshold, vm.eer(s1, y).threshold),
            "far": (vm.threshold_at_far(s0, y, PAIRED_FAR), vm.threshold_at_far(s1, y, PAIRED_FAR)),
        }
        for key, (t0, t1) in thresholds.items():
            m = _mcnemar_at(s0, s1, y, t0, t1)
            if m is not None:
                kw[f"mcnemar_{key}_worse"], kw[f"mcnemar_{key}_better"], kw[f"mcnemar_{key}_p"] = m
        dropped = int((~both).sum())
        note = f"same pairs; {dropped} pair(s) not scored by both left out" if dropped else "same pairs"
        out.append(_row(dataset, ref_name, name, note, paired=True, **kw))
    return out


def _diff(v: Any, lo: Any, hi: Any) -> str:
    if v is None or not math.isfinite(v):
        return "n/a"
    if lo is None or not math.isfinite(lo):
        return f"{v:+.4f}"
    return f"{v:+.4f} [{lo:+.4f}, {hi:+.4f}]"


def _mc(worse: Any, better: Any, p: Any) -> str:
    return "n/a" if worse is None else f"{worse}/{better}, p={p:.3g}"


def paired_markdown(rows: list[dict[str, Any]]) -> list[str]:
    """The Markdown lines of the paired comparison of one data set's runs (:func:`paired_against_reference`)."""
    if not rows:
        return []
    r0 = rows[0]
    methods = {r["method"] for r in rows if r["method"]}
    how = (
        "subject bootstrap (the same subject resamples for both runs)"
        if methods == {"subject"}
        else "pair bootstrap (the same pair resamples for both runs)"
        if methods == {"pair"}
        else "paired bootstrap"
    )
    lines = [
        f"### Paired against the reference `{r0['reference']}`",
        "",
        f"Run minus reference on the pairs both scored; 95% {how}. McNemar: pairs the reference decided "
        f"right and the run wrong / the other way round, exact p, at each run's own EER threshold and at its "
        "own FAR=1e-3 threshold. Only runs that scored the same pair list are paired.",
        "",
    ]
    table = pd.DataFrame(
        [
            {
                "run": r["run"],
                "pairs": "n/a" if r["n_pairs"] is None else str(r["n_pairs"]),
                "EER diff": _diff(r["eer_diff"], r["eer_diff_low"], r["eer_diff_high"]) if r["paired"] else "-",
                "TAR@1e-3 diff": _diff(r["tar@1e-3_diff"], r["tar@1e-3_diff_low"], r["tar@1e-3_diff_high"])
                if r["paired"]
                else "-",
                "McNemar @ EER thr": _mc(r["mcnemar_eer_worse"], r["mcnemar_eer_better"], r["mcnemar_eer_p"])
                if r["paired"]
                else "-",
                "McNemar @ FAR 1e-3 thr": _mc(r["mcnemar_far_worse"], r["mcnemar_far_better"], r["mcnemar_far_p"])
                if r["paired"]
                else "-",
                "note": r["note"],
            }
            for r in rows
        ]
    )
    return [*lines, tables.to_markdown(table)]
