"""Tables of verification results: pair-level scores, the Markdown summary, comparison tables."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from fetoolkit.data import nonfinite
from fetoolkit.reports.inputs import input_notes

if TYPE_CHECKING:
    from fetoolkit.evaluate import Evaluation


def pairs_frame(ev: Evaluation) -> pd.DataFrame:
    """Every pair of the evaluation, one row each, dropped pairs included.

    Columns: ``protocol`` (``roc``, ``kfold``, or ``roc+kfold`` when both use the same pairs),
    ``idx_a``, ``idx_b`` (int64 image indices), ``path_a``, ``path_b`` (str), ``label`` (bool,
    True = genuine), ``fold`` (int64), ``score`` (float64 cosine; NaN when the pair was dropped),
    ``enrolled`` (bool: both images enrolled); ``subject_a``, ``subject_b`` (str) when identities are
    known; ``group1``, ``group2`` when the layout gives each image a group (RFW). The table is itself a
    score file for ``dataset=scores``. The eval run adds ``llr`` and ``p_same`` (calibrated, on the
    scored ROC rows; :func:`fetoolkit.reports.calibration.with_llr`).
    """
    data = ev.data
    emb = ev.embeddings
    if data.templates is not None:
        return _template_pairs_frame(ev)
    names = np.asarray([str(p) for p in data.paths], dtype=object)
    subjects = data.subject_names()
    group = (data.image_groups or {}).get("group")
    protocols = [("roc+kfold", data.roc)] if data.roc is data.kfold else [("roc", data.roc), ("kfold", data.kfold)]
    parts = []
    for name, p in protocols:
        score = np.einsum("ij,ij->i", emb[p.idx_a], emb[p.idx_b]).astype(np.float64)
        cols = {
            "protocol": pd.Categorical([name] * len(p), categories=[n for n, _ in protocols]),
            "idx_a": p.idx_a,
            "idx_b": p.idx_b,
            "path_a": names[p.idx_a],
            "path_b": names[p.idx_b],
            "label": p.labels,
            "fold": p.folds,
            "score": score,
            "enrolled": ev.embedded.ok[p.idx_a] & ev.embedded.ok[p.idx_b],
        }
        if subjects is not None:
            cols["subject_a"], cols["subject_b"] = subjects[p.idx_a], subjects[p.idx_b]
        if group is not None:
            cols["group1"], cols["group2"] = group[p.idx_a], group[p.idx_b]
        parts.append(pd.DataFrame(cols))
    return pd.concat(parts, ignore_index=True)


def _template_pairs_frame(ev: Evaluation) -> pd.DataFrame:
    """One row per template pair (IJB): ``template1``, ``template2`` (int64 template ids), ``label``
    (bool), ``score`` (float64 dot product of the template features; NaN when a template has no
    enrolled image), ``enrolled``, and ``protocol`` = ``roc`` and ``fold`` = 0 so that the table is a
    score file for ``dataset=scores`` too."""
    data = ev.data
    assert data.templates is not None
    p = data.roc
    ids = data.templates.ids
    ok = np.isfinite(ev.embeddings[:, 0])
    enrolled = ok[p.idx_a] & ok[p.idx_b]
    score = np.full(len(p), np.nan)
    score[enrolled] = ev.roc_scores  # the kept pairs, in order: the very scores of the figures
    return pd.DataFrame(
        {
            "protocol": pd.Categorical(["roc"] * len(p), categories=["roc"]),
            "template1": ids[p.idx_a],
            "template2": ids[p.idx_b],
            "label": p.labels,
            "fold": p.folds,
            "score": score,
            "enrolled": enrolled,
        }
    )


def write_pairs(df: pd.DataFrame, path: str | Path) -> Path:
    """Write the pair table as Parquet (``.parquet``) or CSV (any other suffix)."""
    path = Path(path)
    if path.suffix == ".parquet":
        df.to_parquet(path, index=False)
    else:
        df.to_csv(path, index=False)
    return path


def read_pairs(path: str | Path) -> pd.DataFrame:
    """Read a pair table written by :func:`write_pairs`."""
    path = Path(path)
    return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)


def roc_rows(df: pd.DataFrame) -> np.ndarray:
    """bool ``[rows]``: the enrolled ROC pairs of a pair table (a score run's table has no ``enrolled``
    column: every one of its ROC rows is a comparison, a non-finite score included)."""
    sel = df["protocol"].astype(str).str.startswith("roc")
    if "enrolled" in df:
        sel &= df["enrolled"].astype(bool)
    return sel.to_numpy(bool)


def roc_scores(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(scores float64 ``[P]``, labels bool ``[P]``) of the enrolled ROC pairs of a pair table, a
    non-finite score counted as an error by :data:`fetoolkit.data.nonfinite.RULE` (a score run's
    table keeps its scores as read)."""
    sel = roc_rows(df)
    labels = df.loc[sel, "label"].to_numpy(bool)
    scores, _ = nonfinite.as_errors(df.loc[sel, "score"].to_numpy(np.float64), labels)
    return scores, labels


def fmt(x: Any, digits: int = 4) -> str:
    """A number for a table: ``n/a`` for None/NaN."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    return f"{float(x):.{digits}f}"


def fmt_ci(value: Any, ci: Sequence[Any] | None, digits: int = 4) -> str:
    """``value [low, high]``."""
    if ci is None or value is None:
        return fmt(value, digits)
    return f"{fmt(value, digits)} [{fmt(ci[0], digits)}, {fmt(ci[1], digits)}]"


def to_markdown(df: pd.DataFrame) -> str:
    """A GitHub Markdown table of ``df`` (cells as strings)."""
    cols = [str(c) for c in df.columns]
    rows = [[str(v) for v in r] for r in df.itertuples(index=False)]
    out = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(out)


def markdown_summary(s: dict[str, Any]) -> str:
    """The Markdown report of one ``results.json`` summary."""
    ci = s.get("tar_at_far_ci") or {}
    st = s.get("stats", {})
    lines = [f"# {model_label(s)} ({s['backend']}) on {s['dataset']}", ""]
    if "n_images" in s:
        lines.append(
            f"- images: {s['n_images']}, failed to enrol: {s['fte']} (policy `{s.get('fte_policy')}`), "
            f"pairs dropped: k-fold {s['n_pairs_dropped']['kfold']}, ROC {s['n_pairs_dropped']['roc']}"
        )
    else:
        lines.append(
            f"- scores of `{s['model']}` read from a file: {s.get('n_comparisons')} comparisons, "
            f"{(s.get('data') or {}).get('n_missing', 0)} rows of images that did not enrol left out"
        )
    lines += [f"- **{label}**: {text}" for label, text in input_notes(s)]
    lines.append(
        f"- ROC pairs: {s['n_genuine']} genuine, {s['n_impostor']} impostor; finest measurable FAR "
        f"{s.get('finest_far', float('nan')):.3g}"
    )
    if s.get("kfold"):
        lines.append(
            f"- k-fold pairs: {s['kfold']['n_genuine']} genuine, {s['kfold']['n_impostor']} impostor in "
            f"{s['kfold']['n_folds']} folds"
        )
    comp = s.get("comparison") or {}
    if comp.get("unit") == "template":
        lines.append(
            f"- pairs compare templates: {comp['n_templates_enrolled']} of {comp['n_templates']} enrolled, features "
            f"`{comp['code']}` (F flip test, N per-image normalisation, D faceness weight)"
        )
    elif comp.get("flip_test"):
        lines.append("- flip test: each image's feature is its crop's plus its mirror's (raw, before normalisation)")
    if "cache" in s:
        lines.append(f"- embeddings: cache {s.get('cache')}")
    lines += [
        f"- intervals: {st.get('n_boot', 0)} bootstrap resamples, {int(100 * st.get('level', 0.95))}% percentile",
        "",
        "| figure | value [95% interval] |",
        "|---|---|",
    ]
    if s.get("accuracy_mean") is not None:
        lines.append(
            f"| {s['kfold']['n_folds']}-fold accuracy | {fmt_ci(s['accuracy_mean'], s.get('accuracy_ci'))} (std over "
            f"folds {fmt(s['accuracy_std'])}, standard error {fmt(s.get('accuracy_sem'))}, threshold "
            f"{fmt(s['best_threshold'])}) |"
        )
    lines += [
        f"| AUC | {fmt(s['auc'], 5)} |",
        f"| EER | {fmt_ci(s['eer'], s.get('eer_ci'))} (threshold {fmt(s.get('eer_threshold'))}) |",
    ]
    decades = s.get("tar_at_far_decades") or {}
    thr = s.get("threshold_at_far") or {}
    for k in sorted(set(decades) | set(s["tar_at_far"]), key=lambda k: -float(k)):
        v = decades.get(k, s["tar_at_far"].get(k))
        extra = f" (threshold {fmt(thr[k])})" if k in thr else f" ({(s.get('tar_at_far_reasons') or {}).get(k, '')})"
        lines.append(f"| TAR @ FAR={k} | {fmt_ci(v, ci.get(k))}{extra} |")
    lines += _identification_lines(s.get("identification"))
    lines += _calibration_lines(s.get("calibration"), s.get("profile"))
    q = s.get("quality") or {}
    if q:
        n = q.get("norms") or {}
        lines += [
            "",
            "## Embedding quality",
            "",
            f"Raw embedding norms: median {fmt(n.get('median'), 2)}, 5-95% {fmt(n.get('p05'), 2)}-"
            f"{fmt(n.get('p95'), 2)}, range {fmt(n.get('min'), 2)}-{fmt(n.get('max'), 2)}.",
            "",
        ]
        erc = q.get("erc")
        if erc:
            lines += [
                f"Error versus reject at FAR={erc['far']:g} (threshold {erc['threshold']:.4f}, FNMR without "
                f"rejection {fmt(erc['fnmr_no_reject'])}); area = mean FNMR over 0-"
                f"{int(100 * erc['max_reject'])}% rejected, lower is better:",
                "",
                "| quality score | ERC area | FNMR @5% | FNMR @10% | FNMR @20% |",
                "|---|---|---|---|---|",
            ]
            for name, v in sorted(erc["scores"].items(), key=lambda kv: kv[1]["erc_area"] or 9):
                f = v["fnmr_at_reject"]
                lines.append(
                    f"| {name}{' (default)' if name == q.get('default') else ''} | {fmt(v['erc_area'])} | "
                    f"{fmt(f.get('0.05'))} | {fmt(f.get('0.1'))} | {fmt(f.get('0.2'))} |"
                )
        gs = q.get("genuine_spread")
        if gs:
            worst = ", ".join(
                f"{w.get('name', w['subject'])} (std {w['std']:.3f}, min {w['min']:.3f})" for w in gs["worst"]
            )
            lines += [
                "",
                f"Genuine-score spread per subject: median std {fmt(gs['std_median'])}, largest "
                f"{fmt(gs['std_max'])}; least consistent: {worst}.",
            ]
    skipped = (s.get("data") or {}).get("skipped") or []
    if skipped:
        lines += ["", "## Skipped (not read)", ""] + [f"- `{d['path']}`: {d['reason']}" for d in skipped[:50]]
        if len(skipped) > 50:
            lines.append(f"- ... and {len(skipped) - 50} more (results.json: data.skipped)")
    hygiene = (s.get("data") or {}).get("hygiene") or {}
    for key, title in (
        ("duplicates", "Duplicate images"),
        ("identity_case", "Identity names that differ only by case"),
        ("same_photo_pairs", "Pairs of one photo"),
        ("single_image_identities", "Identities with one image"),
    ):
        items = hygiene.get(key) or []
        if items:
            lines += ["", f"## {title}", ""] + [f"- `{d['path']}`: {d['reason']}" for d in items[:50]]
            if len(items) > 50:
                lines.append(f"- ... and {len(items) - 50} more (results.json: data.hygiene.{key})")
    if s.get("fte_images"):
        lines += ["", "## Failures to enrol", ""] + [f"- {m}" for m in s["fte_images"][:50]]
        if len(s["fte_images"]) > 50:
            lines.append(f"- ... and {len(s['fte_images']) - 50} more (results.json)")
    return "\n".join(lines) + "\n"


def _identification_lines(ident: dict[str, Any] | None) -> list[str]:
    """The 1:N section of ``summary.md``: one row per gallery (and the mean)."""
    if not ident:
        return []
    rows = {k: v for k, v in ident.items() if isinstance(v, dict) and k != "distractors" and "rank1" in v}
    keys = sorted({f for v in rows.values() for f in (v.get("tpir_at_fpir") or {})}, key=lambda k: -float(k))
    out = ["", "## 1:N identification", "", ident.get("protocol", ""), ""]
    out.append(
        "| gallery | mated / non-mated | rank-1 | rank-5 | rank-10 | "
        + " | ".join(f"TPIR@FPIR={k}" for k in keys)
        + " |"
    )
    out.append("|---|---|---|---|---|" + "---|" * len(keys))
    for name, v in rows.items():
        tp = v.get("tpir_at_fpir") or {}
        counts = f"{v.get('n_mated', '-')} / {v.get('n_nonmated', '-')}"
        tci = v.get("tpir_at_fpir_ci") or {}
        out.append(
            f"| {name} | {counts} | {fmt_ci(v.get('rank1'), v.get('rank1_ci'))} | {fmt(v.get('rank5'))} | "
            f"{fmt(v.get('rank10'))} | " + " | ".join(fmt_ci(tp.get(k), tci.get(k)) for k in keys) + " |"
        )
    d = ident.get("distractors")
    if d:
        curve = ", ".join(f"{n}: {fmt(r)}" for n, r in d["rank1"].items())
        out += ["", f"Rank-1 with distractors in the gallery (of {d['n']} from `{d['source']}`): {curve}."]
    return out


def _calibration_lines(c: dict[str, Any] | None, profile: dict[str, Any] | None) -> list[str]:
    """The Markdown report's calibration section (empty without a calibration)."""
    if not c:
        return []
    out = [
        "",
        "## Calibration: what a score means",
        "",
        f"Scores mapped to log-likelihood ratios by {c['method']} ({c['method_rule']}); {c['fit_on']}. "
        f"p_same at prior {c['prior']:.4g} ({c['prior_source']}).",
        "",
        "| figure | value [95% interval] |",
        "|---|---|",
    ]
    for key, label in (
        ("cllr", "Cllr (bits)"),
        ("cllr_min", "Cllr_min (bits)"),
        ("ece", "ECE of p_same"),
        ("brier", "Brier score"),
        ("log_loss", "log loss"),
    ):
        out.append(f"| {label} | {fmt_ci(c[key], c.get(key + '_ci'))} |")
    if profile:
        pid = profile["profile_id"]
        out += ["", f"Decision profile: `{profile['file']}` (id `{pid}`); see reliability.png, tippett.png."]
    return out


def format_summary(s: dict[str, Any]) -> str:
    """A short fixed-width table of the headline figures of a ``results.json`` summary (the console's)."""

    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.4f}"

    def ci(c: list[float | None] | None) -> str:
        return "" if not c or c[0] is None else f" [{c[0]:.4f}, {c[1]:.4f}]"

    tci = s.get("tar_at_far_ci") or {}
    dec = s.get("tar_at_far_decades") or {}
    what = (
        f"{s['dataset']}: {s['n_images']} images, fte {s['fte']}"
        if "n_images" in s
        else f"{s['dataset']}: {s.get('n_comparisons')} comparisons"
    )
    rows = [
        ("model / backend", f"{model_label(s)} / {s['backend']}"),
        ("dataset", what),
        ("pairs (ROC)", f"{s['n_genuine']} genuine, {s['n_impostor']} impostor"),
        *input_notes(s),
    ]
    if s.get("accuracy_mean") is not None:
        sem = "-" if s.get("accuracy_sem") is None else f"{s['accuracy_sem']:.4f}"
        rows.append(
            (
                f"{s['kfold']['n_folds']}-fold accuracy",
                f"{s['accuracy_mean']:.4f}{ci(s.get('accuracy_ci'))} +- {s['accuracy_std']:.4f} std, "
                f"{sem} s.e. (threshold {s['best_threshold']:.4f})",
            )
        )
    rows += [("AUC", f"{s['auc']:.5f}"), ("EER", f"{s['eer']:.4f}{ci(s.get('eer_ci'))}")]
    # Every decade the impostor count supports, with its interval (the three headline FARs without one).
    for k, v in (dec or s["tar_at_far"]).items():
        rows.append((f"TAR@FAR={k}", f"{pct(v)}{ci(tci.get(k))}"))
    op = s.get("operating_point")
    if op and op.get("threshold") is not None:
        r = op["rates"]
        rows.append(
            (
                "operating point",
                f"threshold {op['threshold']:.4f} ({op['criterion']} on {op['threshold_from']}): "
                f"FMR {pct(r['fmr'])}, FNMR {pct(r['fnmr'])}, HTER {pct(r['hter'])}",
            )
        )
    g = s.get("groups")
    if g:
        for attr, d in g["differentials"].items():
            rows.append(
                (
                    f"groups: {attr}",
                    f"{len(g['attributes'][attr])} groups, FDR {pct(d['fdr'])}, "
                    f"FMR max/min {pct(d['fmr_max_min'])}, FNMR max/min {pct(d['fnmr_max_min'])}",
                )
            )
    ident = s.get("identification") or {}
    for name, v in ident.items():
        if isinstance(v, dict) and isinstance(v.get("rank1"), (int, float)):
            tp = v.get("tpir_at_fpir") or {}
            best = f", TPIR@FPIR={min(tp, key=float)} {pct(tp[min(tp, key=float)])}" if tp else ""
            rows.append((f"1:N {name}", f"rank-1 {pct(v['rank1'])}{best}"))
    c = s.get("calibration")
    if not c and s.get("calibration_reason"):
        rows.append(("calibration (LLR)", f"none: {s['calibration_reason']}"))
    if c:
        where = "dev" if str(c["fit_on"]).startswith("dev") else "out-of-fold"
        rows.append(
            (
                "calibration (LLR)",
                f"{c['method']} ({where}): Cllr {pct(c['cllr'])}{ci(c.get('cllr_ci'))}, Cllr_min {pct(c['cllr_min'])}, "
                f"ECE {pct(c['ece'])} at prior {c['prior']:.3g}",
            )
        )
    q = s.get("quality") or {}
    if q.get("erc"):
        rows.append(("ERC best quality score", f"{q['erc']['best']} (default: {q['default']})"))
    if "cache" in s:
        rows.append(("embedding cache", str(s.get("cache"))))
    m = s.get("machine")
    if m:
        masked = f", ISA masked to {m['isa_masked']}" if m.get("isa_masked") else ""
        rows.append(("measured on", f"{m['cpu']}, {m['threads']['cpus_usable']} cores ({' '.join(m['isa'])}{masked})"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)


COMPARISON_COLUMNS = (
    "model",
    "backend",
    "dataset",
    "features",
    "n_images",
    "fte",
    "accuracy",
    "accuracy_ci",
    "eer",
    "eer_ci",
    "auc",
    "tar@1e-3",
    "tar@1e-3_ci",
    "tar@1e-4",
    "rank1",
    "cache",
    "run",
)


def comparison_frame(results: Sequence[tuple[str, dict[str, Any]]]) -> pd.DataFrame:
    """One row per run: ``(run name, results.json dict)`` -> a numeric comparison table.

    Interval columns hold ``"low-high"`` strings; the figures are floats.
    """
    rows = []
    for run, s in results:
        ci = s.get("tar_at_far_ci") or {}
        t3 = ci.get("1e-3")
        rows.append(
            {
                "model": model_label(s),
                "backend": s.get("backend"),
                "dataset": s.get("dataset"),
                "features": _features(s.get("comparison")),
                "n_images": s.get("n_images"),
                "fte": s.get("fte"),
                "accuracy": s.get("accuracy_mean"),
                "accuracy_ci": _ci_str(s.get("accuracy_ci")),
                "eer": s.get("eer"),
                "eer_ci": _ci_str(s.get("eer_ci")),
                "auc": s.get("auc"),
                "tar@1e-3": (s.get("tar_at_far") or {}).get("1e-3"),
                "tar@1e-3_ci": _ci_str(t3),
                "tar@1e-4": (s.get("tar_at_far_decades") or {}).get("1e-4"),
                "rank1": _rank1(s.get("identification")),
                "cache": s.get("cache"),
                "run": run,
            }
        )
    return pd.DataFrame(rows, columns=list(COMPARISON_COLUMNS))


def _features(comp: dict[str, Any] | None) -> str:
    """What a run's pairs compare, for the table: ``image``, ``image+F`` or ``template F+N`` (IJB's flags)."""
    if not comp:
        return "image"
    if comp.get("unit") == "template":
        return f"template {comp.get('code')}"
    return "image+F" if comp.get("flip_test") else "image"


def _rank1(ident: dict[str, Any] | None) -> float | None:
    """The headline rank-1 of a run's identification block (IJB: the galleries' mean)."""
    if not ident:
        return None
    head = ident.get("mean") or ident.get("gallery") or {}
    return head.get("rank1")


def model_label(s: dict[str, Any]) -> str:
    """A run's model as the command named it and as the registry does: ``arcface (arcface_mbf.sirius)``
    when they differ, else the registry name."""
    name, chosen = s.get("model"), s.get("model_config")
    return f"{chosen} ({name})" if chosen and name and chosen != name else str(name)


def _ci_str(ci: Sequence[Any] | None) -> str:
    return "" if not ci or ci[0] is None else f"{float(ci[0]):.4f}-{float(ci[1]):.4f}"


def comparison_markdown(df: pd.DataFrame) -> str:
    """The comparison table as Markdown (figures to 4 decimals)."""
    shown = df.copy()
    for c in ("accuracy", "eer", "auc", "tar@1e-3", "tar@1e-4", "rank1"):
        shown[c] = [fmt(v) for v in shown[c]]
    for c in ("n_images", "fte"):  # counts (floats once a score run's missing count joins the column)
        shown[c] = ["n/a" if v is None or v != v else str(int(v)) for v in shown[c]]
    return to_markdown(shown)
