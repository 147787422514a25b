"""From scores to a deployment decision: the operating threshold, dev/eval, demographic differentials.

``deployment(...)`` takes the comparisons of the set being reported (a model run's ROC pairs or a
score file), optionally a dev set whose threshold is applied to them, and optionally a group file,
and returns the ``operating_point``, ``dev_eval`` and ``groups`` sections of ``results.json``:

* **operating point**: the threshold the criterion picks (on dev when given, else on this set), and
  FMR, FNMR, HTER on this set with counts, Clopper-Pearson intervals and bootstrap intervals (by
  subject where subjects are known, by pair otherwise);
* **dev/eval**: the same rates on dev and on eval, and the EPC (bob.measure's expected performance
  curve) of dev against eval;
* **groups**: one global threshold (from dev when given, else the lowest threshold whose FAR over
  all comparisons is at most ``threshold.far``), then per attribute and group FMR, FNMR, TAR@FAR,
  cross-group FMR, max/min ratios and the fairness discrepancy rate (:mod:`fetoolkit.metrics.groups`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from fetoolkit.data.groups import GroupTable, assign_groups
from fetoolkit.data.scores import PairScores
from fetoolkit.figures import StatsCfg
from fetoolkit.jsonutil import json_float, json_pair
from fetoolkit.metrics import groups as gm
from fetoolkit.metrics.fixed_threshold_ci import rate_intervals
from fetoolkit.metrics.operating import (
    CRITERIA,
    EpcCurve,
    UnmeasurableTarget,
    choose_threshold,
    clopper_pearson,
    epc,
    rates_at,
)


@dataclass(frozen=True)
class ThresholdCfg:
    """How the operating threshold is chosen (``threshold`` in ``configs/eval.yaml``).

    Attributes:
        criterion: ``eer``, ``far``, ``frr`` or ``min_hter`` (see :mod:`fetoolkit.metrics.operating`).
        far: the FAR target of ``criterion=far`` and of the groups' global threshold.
        frr: the FRR target of ``criterion=frr``.
        dev: a score file or eval run folder whose comparisons fix the threshold (None: this set).
        epc_points: points of the EPC.
    """

    criterion: str = "far"
    far: float = 1e-3
    frr: float = 1e-2
    dev: str | None = None
    epc_points: int = 51

    def __post_init__(self) -> None:
        if self.criterion not in CRITERIA:
            raise ValueError(f"threshold.criterion must be one of {', '.join(CRITERIA)}, got {self.criterion!r}")


@dataclass(frozen=True)
class GroupReportCfg:
    """Settings of the group figures (``group_report`` in ``configs/eval.yaml``).

    Attributes:
        min_pairs: a group with fewer genuine (impostor) comparisons gets its count, not an FNMR (FMR).
        alpha: weight of the FMR differences in the fairness discrepancy rate.
    """

    min_pairs: int = 30
    alpha: float = 0.5


@dataclass
class Deployment:
    """The deployment sections and what their plots need.

    Attributes:
        summary: ``operating_point`` and, when asked for, ``dev_eval`` and ``groups``.
        epc: the EPC, or None without a dev set.
        group_curves: attribute -> heatmap and DET data.
    """

    summary: dict[str, Any]
    epc: EpcCurve | None = None
    group_curves: dict[str, gm.GroupCurves] = field(default_factory=dict)


def _rates(p: PairScores, threshold: float, stats: StatsCfg) -> dict[str, Any]:
    r = rates_at(p.scores, p.labels, threshold)
    out: dict[str, Any] = {k: json_float(v) if isinstance(v, float) else v for k, v in r.to_dict().items()}
    out["fmr_ci_clopper_pearson"] = json_pair(clopper_pearson(r.n_false_match, r.n_impostor, stats.level))
    out["fnmr_ci_clopper_pearson"] = json_pair(clopper_pearson(r.n_false_non_match, r.n_genuine, stats.level))
    if stats.n_boot > 0:
        ci = rate_intervals(
            p.scores,
            p.labels,
            threshold,
            subject_a=p.subject_a if stats.method == "subject" else None,
            subject_b=p.subject_b if stats.method == "subject" else None,
            n_boot=stats.n_boot,
            level=stats.level,
            seed=stats.seed,
        )
        out.update(
            fmr_ci=json_pair(ci.fmr),
            fnmr_ci=json_pair(ci.fnmr),
            hter_ci=json_pair(ci.hter),
            interval_method=ci.method,
            n_subjects=ci.n_subjects or None,
        )
        for rate, errors in (("fmr", r.n_false_match), ("fnmr", r.n_false_non_match)):
            if errors == 0:  # every resample has no error either: [0, 0] says nothing
                out[f"{rate}_ci"] = None
                out[f"{rate}_ci_reason"] = (
                    "no errors: resampling cannot move the rate; see the Clopper-Pearson interval"
                )
    return out


def _threshold(p: PairScores, criterion: str, cfg: ThresholdCfg) -> tuple[float | None, str | None]:
    """(threshold, None), or (None, why) when the set cannot measure the criterion's target."""
    try:
        return choose_threshold(p.scores, p.labels, criterion, far=cfg.far, frr=cfg.frr), None
    except UnmeasurableTarget as e:
        return None, str(e)


def _target(cfg: ThresholdCfg) -> dict[str, Any]:
    if cfg.criterion == "far":
        return {"far": cfg.far}
    if cfg.criterion == "frr":
        return {"frr": cfg.frr}
    return {}


def deployment(
    pairs: PairScores,
    *,
    threshold: ThresholdCfg | None = None,
    dev: PairScores | None = None,
    dev_source: dict[str, Any] | None = None,
    groups: GroupTable | None = None,
    group_report: GroupReportCfg | None = None,
    stats: StatsCfg | None = None,
) -> Deployment:
    """The deployment sections for ``pairs`` (see the module docstring).

    Args:
        pairs: the comparisons reported on (the eval set when ``dev`` is given).
        threshold: threshold settings.
        dev: comparisons that fix the threshold, or None.
        dev_source: provenance of ``dev`` for the report (path, sha256, format).
        groups: a group file, or None (pair-level groups already in ``pairs.groups`` count too).
        group_report: group settings.
        stats: interval settings.
    """
    tcfg = threshold or ThresholdCfg()
    gcfg = group_report or GroupReportCfg()
    stats = stats or StatsCfg()
    source = dev if dev is not None else pairs
    thr, reason = _threshold(source, tcfg.criterion, tcfg)
    where = "dev" if dev is not None else "this set"
    op: dict[str, Any] = {
        "criterion": tcfg.criterion,
        **_target(tcfg),
        "threshold": None if thr is None else json_float(thr),
        "threshold_from": where,
        "rates": None if thr is None else _rates(pairs, thr, stats),
        "rule": "accept when score >= threshold",
    }
    if reason:
        op["reason"] = reason
    elif thr is not None and not math.isfinite(thr):
        op["note"] = "only rejecting every comparison meets the target (the top score is an impostor's)"
    out: dict[str, Any] = {"operating_point": op}
    result = Deployment(out)
    if dev is not None:
        curve = epc(dev.scores, dev.labels, pairs.scores, pairs.labels, tcfg.epc_points)
        out["dev_eval"] = {
            "criterion": tcfg.criterion,
            **_target(tcfg),
            "threshold": op["threshold"],
            "dev": {**(_rates(dev, thr, stats) if thr is not None else {}), "source": dev_source},
            "eval": op["rates"],
            "epc": {
                "alpha": [float(a) for a in curve.alpha],
                "threshold": [json_float(float(t)) for t in curve.thresholds],
                "hter": [float(h) for h in curve.hter],
                "note": "alpha weighs FAR in the dev criterion alpha*FAR + (1-alpha)*FRR; hter is on eval",
            },
        }
        if reason:
            out["dev_eval"]["reason"] = reason
        result.epc = curve
    attrs = dict(pairs.groups)
    if groups is not None:
        attrs.update(assign_groups(groups, pairs))
    if attrs:
        if dev is not None:
            g_thr, g_reason = thr, reason
        else:
            g_thr, g_reason = _threshold(pairs, "far", tcfg)
        section: dict[str, Any] = {
            "far": tcfg.far,
            "threshold": None if g_thr is None else json_float(g_thr),
            "threshold_from": (
                f"dev ({tcfg.criterion})" if dev is not None else f"FAR <= {tcfg.far:g} over all comparisons"
            ),
            "file": None if groups is None else {"path": groups.path, "sha256": groups.sha256, "key": groups.key},
            "min_pairs": gcfg.min_pairs,
            "interval_method": "Clopper-Pearson (exact binomial; comparisons treated as independent)",
            "attributes": {},
            "differentials": {},
        }
        if g_thr is None:
            section["reason"] = g_reason
        else:
            for name, (ga, gb) in attrs.items():
                s, curves = gm.group_differentials(
                    pairs.scores,
                    pairs.labels,
                    ga,
                    gb,
                    g_thr,
                    far=tcfg.far,
                    min_pairs=gcfg.min_pairs,
                    alpha=gcfg.alpha,
                    level=stats.level,
                )
                section["attributes"][name] = s.pop("groups")
                section["differentials"][name] = s
                result.group_curves[name] = curves
        out["groups"] = section
    return result
