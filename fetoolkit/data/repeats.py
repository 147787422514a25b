"""Pairs listed more than once: found in every pair list and score file, counted once by default.

A comparison listed twice counts twice in every figure: one impostor pair listed 21 times weighs
as much as 21 impostor pairs (it doubled an EER in a test). The same two images in the other order
(``a,b`` then ``b,a``) are the same comparison: cosine similarity is symmetric. So every reader
finds the rows that repeat a pair (in either order, where the format names both sides) and, by
``dataset.duplicate_pairs``:

* ``once`` (default): the first row of each pair is counted, the repeats are left out;
* ``keep``: every row is counted (a protocol that repeats pairs on purpose).

Either way ``results.json`` ``data`` lists them (``duplicate_pairs``: counts and the first
examples), and so do the log, the console summary, ``summary.md`` and ``report.md``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fetoolkit.data.notes import printable_path
from fetoolkit.data.protocols import PairProtocol

log = logging.getLogger(__name__)

#: ``dataset.duplicate_pairs`` values.
POLICIES = ("once", "keep")
#: Repeated pairs described one by one in ``results.json`` (all are counted).
EXAMPLES = 10


def check_policy(policy: str) -> str:
    """``policy`` when it is one of :data:`POLICIES`, else a ``ValueError`` naming the setting."""
    if policy not in POLICIES:
        raise ValueError(f"dataset.duplicate_pairs must be one of {', '.join(POLICIES)}, got {policy!r}")
    return policy


@dataclass(frozen=True)
class Repeats:
    """The rows of a pair list that repeat an earlier row's pair.

    Attributes:
        keep: bool ``[P]``: the rows counted (the first of each pair with ``once``; all with ``keep``).
        report: ``results.json`` ``data.duplicate_pairs``: ``policy``, ``n_pairs`` (pairs listed more than
            once), ``n_extra`` (rows after the first of their pair), ``n_reversed`` (of those, rows giving
            the pair in the other order), ``n_conflicting`` (pairs listed with both labels), ``rule``,
            and ``examples`` (the first :data:`EXAMPLES`: ``pair``, ``rows``, ``reason``).
    """

    keep: np.ndarray
    report: dict[str, Any]

    @property
    def n_extra(self) -> int:
        return int(self.report["n_extra"])


def find_repeats(
    side_a: np.ndarray,
    side_b: np.ndarray,
    labels: np.ndarray,
    *,
    policy: str = "once",
    ordered: bool = False,
    describe: Callable[[int], str],
    row_name: Callable[[int], str] = lambda k: f"row {k + 1}",
    source: str = "pairs",
) -> Repeats:
    """The rows whose pair an earlier row lists already.

    Args:
        side_a, side_b: int ``[P]`` codes of each row's two sides (equal code = the same image or item).
        labels: bool ``[P]``, True = genuine.
        policy: ``once`` or ``keep`` (see the module).
        ordered: True when the format cannot tell a reversed pair (bob's 4-column files: the first side
            is a subject, not an item); then only rows with both sides equal in order are repeats (the
            caller puts what else must be equal -- bob4: the score -- in the codes).
        describe: the text of row ``k``'s pair, for the examples.
        row_name: where row ``k`` is in its file, for the examples.
        source: the file or data set, for the log.
    """
    check_policy(policy)
    a = np.asarray(side_a, np.int64)
    b = np.asarray(side_b, np.int64)
    y = np.asarray(labels, bool)
    n = len(a)
    lo, hi = (a, b) if ordered else (np.minimum(a, b), np.maximum(a, b))
    base = int(max(hi.max(initial=0), lo.max(initial=0))) + 1
    _, first, inverse, counts = np.unique(lo * base + hi, return_index=True, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    is_first = np.zeros(n, bool)
    is_first[first] = True
    reversed_rows = ~is_first & (a != a[first[inverse]])
    genuine = np.bincount(inverse, weights=y.astype(np.float64), minlength=len(counts))
    conflicting = (genuine > 0) & (genuine < counts)
    repeated = np.flatnonzero(counts > 1)
    keep = is_first if policy == "once" else np.ones(n, bool)
    counted = "counted once (the first row)" if policy == "once" else "counted every time"
    examples = []
    for g in repeated[np.argsort(first[repeated])][:EXAMPLES]:
        rows = np.flatnonzero(inverse == g)
        n_rev = int(reversed_rows[rows].sum())
        labels_text = (
            "genuine and impostor: a labelling error" if conflicting[g] else "genuine" if y[rows[0]] else "impostor"
        )
        shown = ", ".join(row_name(int(k)) for k in rows[:5]) + (", ..." if len(rows) > 5 else "")
        examples.append(
            {
                "pair": describe(int(rows[0])),
                "rows": shown,
                "reason": f"listed {len(rows)} times ({n_rev} reversed), {labels_text}; {counted}",
            }
        )
    report = {
        "policy": policy,
        "n_rows": n,
        "n_pairs": int(len(repeated)),
        "n_extra": int((counts[repeated] - 1).sum()),
        "n_reversed": int(reversed_rows.sum()),
        "n_conflicting": int(conflicting.sum()),
        "rule": "a pair listed again, in either order"
        + (" (bob 4-column: in the same order)" if ordered else "")
        + f", is {counted} (dataset.duplicate_pairs={policy})",
        "examples": examples,
    }
    if len(repeated):
        log.warning(
            "%s: %d pairs are listed more than once (%d extra rows, %d of them reversed, %d pairs with both labels): "
            "%s (dataset.duplicate_pairs=%s; results.json data.duplicate_pairs)",
            source,
            report["n_pairs"],
            report["n_extra"],
            report["n_reversed"],
            report["n_conflicting"],
            counted,
            policy,
        )
        for e in examples[:3]:
            log.warning("%s: pair %s at %s: %s", source, e["pair"], e["rows"], e["reason"])
    return Repeats(keep, report)


def codes(values: np.ndarray, other: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes of two columns of names over one shared vocabulary (equal name = equal code)."""
    import pandas as pd

    both, _ = pd.factorize(np.concatenate([np.asarray(values, object), np.asarray(other, object)]))
    return both[: len(values)].astype(np.int64), both[len(values) :].astype(np.int64)


def protocol_repeats(
    pairs: PairProtocol,
    names: Sequence[object],
    *,
    policy: str = "once",
    source: str = "pairs",
    row_name: Callable[[int], str] = lambda k: f"pair {k + 1}",
) -> tuple[PairProtocol, dict[str, Any]]:
    """:func:`find_repeats` over a pair protocol's image indices: ``(the pairs counted, the report)``.

    Args:
        pairs: the protocol as listed (folds kept: a repeat is left out of its fold).
        names: the name of each image index (a path, ``lfw.bin#12``), for the examples.
        policy, source, row_name: see :func:`find_repeats`.
    """
    r = find_repeats(
        pairs.idx_a,
        pairs.idx_b,
        pairs.labels,
        policy=policy,
        describe=lambda k: f"{printable_path(names[pairs.idx_a[k]])} & {printable_path(names[pairs.idx_b[k]])}",
        row_name=row_name,
        source=source,
    )
    return (pairs if r.keep.all() else pairs.subset(r.keep)), r.report


def merge_reports(reports: Sequence[dict[str, Any]], policy: str) -> dict[str, Any]:
    """One ``duplicate_pairs`` report of several row sets (a score file's ROC and k-fold-only rows)."""
    if len(reports) == 1:
        return reports[0]
    out: dict[str, Any] = {"policy": policy}
    for key in ("n_rows", "n_pairs", "n_extra", "n_reversed", "n_conflicting"):
        out[key] = sum(int(r[key]) for r in reports)
    out["rule"] = reports[0]["rule"] if reports else f"dataset.duplicate_pairs={policy}"
    out["examples"] = [e for r in reports for e in r["examples"]][:EXAMPLES]
    return out
