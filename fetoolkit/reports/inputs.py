"""What a run did with its inputs beyond the figures, one line each, for every report.

The console summary, ``summary.md`` and ``report.md`` say the same: scores that were not finite
numbers and the rule that counted them, pairs listed more than once, files not read, identity
names that differ only by case. Each line names where ``results.json`` holds the full list.
"""

from __future__ import annotations

from typing import Any


def _nonfinite_line(nf: dict[str, Any], label: str) -> list[tuple[str, str]]:
    g, i = int(nf.get("n_genuine") or 0), int(nf.get("n_impostor") or 0)
    kf = nf.get("kfold") or {}
    kg, ki = int(kf.get("n_genuine") or 0), int(kf.get("n_impostor") or 0)
    if not (g or i or kg or ki):
        return []
    more = f"; k-fold pairs: {kg} genuine, {ki} impostor" if kg or ki else ""
    first = (nf.get("examples") or kf.get("examples") or [""])[0]
    return [
        (
            label,
            f"{g} genuine counted as false non-matches, {i} impostor as false matches{more} (rule: a NaN/inf genuine "
            f"score is a false non-match, an impostor one a false match; nonfinite_scores={nf.get('policy')}; "
            f"first: {first})",
        )
    ]


def _nonfinite(s: dict[str, Any]) -> list[tuple[str, str]]:
    dev = ((s.get("data") or {}).get("dev") or {}).get("nonfinite_scores") or {}
    return _nonfinite_line(s.get("nonfinite_scores") or {}, "non-finite scores") + _nonfinite_line(
        dev, "non-finite scores (dev)"
    )


def _repeats(s: dict[str, Any]) -> list[tuple[str, str]]:
    data = s.get("data") or {}
    out = []
    for where, block in (("data", data), ("data.dev", data.get("dev") or {})):
        rep = block.get("duplicate_pairs") or {}
        if not rep.get("n_extra"):
            continue
        counted = "counted once" if rep.get("policy") == "once" else "counted every time"
        first = (rep.get("examples") or [{}])[0]
        out.append(
            (
                "repeated pairs" + ("" if where == "data" else f" ({where[5:]})"),
                f"{rep['n_pairs']} pairs listed more than once ({rep['n_extra']} extra rows, {rep['n_reversed']} "
                f"reversed, {rep.get('n_conflicting', 0)} with both labels): {counted} "
                f"(dataset.duplicate_pairs={rep.get('policy')}); first: {first.get('pair')} at {first.get('rows')} "
                f"({where}.duplicate_pairs)",
            )
        )
    return out


def _files(s: dict[str, Any]) -> list[tuple[str, str]]:
    data = s.get("data") or {}
    out = []
    skipped = data.get("skipped") or []
    if skipped:
        out.append(
            (
                "files not read",
                f"{len(skipped)} (first: {skipped[0]['path']}: {skipped[0]['reason']}; data.skipped)",
            )
        )
    twins = (data.get("hygiene") or {}).get("identity_case") or []
    if twins:
        out.append(("identity names", f"{len(twins)} differ from another only by case: {twins[0]['reason']}"))
    return out


def input_notes(s: dict[str, Any]) -> list[tuple[str, str]]:
    """``(label, text)`` for each thing a ``results.json`` summary records about its inputs: non-finite
    scores, repeated pairs, files not read, identity names that differ only by case (empty when clean)."""
    return _nonfinite(s) + _repeats(s) + _files(s)
