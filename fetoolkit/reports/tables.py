"""Tables of verification results: pair-level scores, the Markdown summary, comparison tables."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from fetoolkit.evaluate import Evaluation


def pairs_frame(ev: Evaluation) -> pd.DataFrame:
    """Every pair of the evaluation, one row each, dropped pairs included.

    Columns: ``protocol`` (``roc``, ``kfold``, or ``roc+kfold`` when both use the same pairs),
    ``idx_a``, ``idx_b`` (int64 image indices), ``path_a``, ``path_b`` (str), ``label`` (bool,
    True = genuine), ``fold`` (int64), ``score`` (float64 cosine; NaN when the pair was dropped),
    ``enrolled`` (bool: both images enrolled).
    """
    data = ev.data
    emb = ev.embeddings
    names = np.asarray([str(p) for p in data.paths], dtype=object)
    protocols = [("roc+kfold", data.roc)] if data.roc is data.kfold else [("roc", data.roc), ("kfold", data.kfold)]
    parts = []
    for name, p in protocols:
        score = np.einsum("ij,ij->i", emb[p.idx_a], emb[p.idx_b]).astype(np.float64)
        parts.append(
            pd.DataFrame(
                {
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
            )
        )
    return pd.concat(parts, ignore_index=True)


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


def roc_scores(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(scores float64 ``[P]``, labels bool ``[P]``) of the enrolled ROC pairs of a pair table."""
    sel = df["protocol"].astype(str).str.startswith("roc") & df["enrolled"].astype(bool)
    return df.loc[sel, "score"].to_numpy(np.float64), df.loc[sel, "label"].to_numpy(bool)


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
    lines = [
        f"# {s['model']} ({s['backend']}) on {s['dataset']}",
        "",
        f"- images: {s['n_images']}, failed to enrol: {s['fte']} (policy `{s.get('fte_policy')}`), "
        f"pairs dropped: k-fold {s['n_pairs_dropped']['kfold']}, ROC {s['n_pairs_dropped']['roc']}",
        f"- ROC pairs: {s['n_genuine']} genuine, {s['n_impostor']} impostor; finest measurable FAR "
        f"{s.get('finest_far', float('nan')):.3g}",
        f"- k-fold pairs: {s['kfold']['n_genuine']} genuine, {s['kfold']['n_impostor']} impostor in "
        f"{s['kfold']['n_folds']} folds",
        f"- embeddings: cache {s.get('cache')}; intervals: {s.get('stats', {}).get('n_boot', 0)} bootstrap "
        f"resamples, {int(100 * s.get('stats', {}).get('level', 0.95))}% percentile",
        "",
        "| figure | value [95% interval] |",
        "|---|---|",
        f"| k-fold accuracy | {fmt_ci(s['accuracy_mean'], s.get('accuracy_ci'))} (std over folds "
        f"{fmt(s['accuracy_std'])}, threshold {fmt(s['best_threshold'])}) |",
        f"| AUC | {fmt(s['auc'], 5)} |",
        f"| EER | {fmt_ci(s['eer'], s.get('eer_ci'))} (threshold {fmt(s.get('eer_threshold'))}) |",
    ]
    decades = s.get("tar_at_far_decades") or {}
    thr = s.get("threshold_at_far") or {}
    for k in sorted(set(decades) | set(s["tar_at_far"]), key=lambda k: -float(k)):
        v = decades.get(k, s["tar_at_far"].get(k))
        extra = f" (threshold {fmt(thr[k])})" if k in thr else f" ({(s.get('tar_at_far_reasons') or {}).get(k, '')})"
        lines.append(f"| TAR @ FAR={k} | {fmt_ci(v, ci.get(k))}{extra} |")
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
    if s.get("fte_images"):
        lines += ["", "## Failures to enrol", ""] + [f"- {m}" for m in s["fte_images"][:50]]
        if len(s["fte_images"]) > 50:
            lines.append(f"- ... and {len(s['fte_images']) - 50} more (results.json)")
    return "\n".join(lines) + "\n"


COMPARISON_COLUMNS = (
    "model",
    "backend",
    "dataset",
    "n_images",
    "fte",
    "accuracy",
    "accuracy_ci",
    "eer",
    "eer_ci",
    "auc",
    "tar@1e-3",
    "tar@1e-3_ci",
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
                "model": s.get("model"),
                "backend": s.get("backend"),
                "dataset": s.get("dataset"),
                "n_images": s.get("n_images"),
                "fte": s.get("fte"),
                "accuracy": s.get("accuracy_mean"),
                "accuracy_ci": _ci_str(s.get("accuracy_ci")),
                "eer": s.get("eer"),
                "eer_ci": _ci_str(s.get("eer_ci")),
                "auc": s.get("auc"),
                "tar@1e-3": (s.get("tar_at_far") or {}).get("1e-3"),
                "tar@1e-3_ci": _ci_str(t3),
                "cache": s.get("cache"),
                "run": run,
            }
        )
    return pd.DataFrame(rows, columns=list(COMPARISON_COLUMNS))


def _ci_str(ci: Sequence[Any] | None) -> str:
    return "" if not ci or ci[0] is None else f"{float(ci[0]):.4f}-{float(ci[1]):.4f}"


def comparison_markdown(df: pd.DataFrame) -> str:
    """The comparison table as Markdown (figures to 4 decimals)."""
    shown = df.copy()
    for c in ("accuracy", "eer", "auc", "tar@1e-3"):
        shown[c] = [fmt(v) for v in shown[c]]
    return to_markdown(shown)
