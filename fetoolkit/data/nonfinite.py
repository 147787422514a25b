"""Scores that are not finite numbers (NaN, +inf, -inf): counted as errors, never dropped.

Dropping such a comparison flatters every figure: a +inf impostor score is a certain false match,
a NaN genuine score a comparison the system could not make. The rule (``nonfinite_scores=errors``,
the default), for score files and for a model's own scores alike:

* a non-finite **genuine** score is a **false non-match** at every threshold: it is placed below
  every finite score;
* a non-finite **impostor** score is a **false match** at every threshold: it is placed above every
  finite score.

Every figure (ROC, EER, TAR@FAR, AUC, k-fold accuracy, the operating point's FMR/FNMR, groups,
calibration) then counts them as errors. The stand-ins are the nearest floats outside the finite
scores' range (``nextafter``), so a threshold never falls between them and a finite score.
``nonfinite_scores=refuse`` refuses such scores instead, naming the first. ``results.json``
``nonfinite_scores`` holds the counts, the console, ``summary.md`` and ``report.md`` say them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: ``nonfinite_scores`` values.
POLICIES = ("errors", "refuse")

RULE = (
    "a non-finite (NaN or infinite) genuine score counts as a false non-match and a non-finite impostor score as "
    "a false match, at every threshold (placed below / above every finite score)"
)


class NonFiniteScores(ValueError):
    """Non-finite scores under ``nonfinite_scores=refuse``; the message names the first."""


def check_policy(policy: str) -> str:
    """``policy`` when it is one of :data:`POLICIES`, else a ``ValueError`` naming the setting."""
    if policy not in POLICIES:
        raise ValueError(f"nonfinite_scores must be one of {', '.join(POLICIES)}, got {policy!r}")
    return policy


def as_errors(
    scores: np.ndarray,
    labels: np.ndarray,
    *,
    policy: str = "errors",
    source: str = "scores",
    describe: Callable[[int], str] = lambda k: f"comparison {k + 1}",
) -> tuple[np.ndarray, dict[str, Any]]:
    """Scores with every non-finite one replaced by the rule's stand-in, and the ``results.json`` block.

    Args:
        scores: float ``[P]``.
        labels: bool ``[P]``, True = genuine.
        policy: ``errors`` (the rule) or ``refuse``.
        source: the file or data set, for the messages.
        describe: where comparison ``k`` is (a file's row, an image pair), for the messages.

    Returns:
        ``(scores, block)``: float64 ``[P]`` (the same array when every score is finite) and
        ``{policy, rule, n_genuine, n_impostor, examples}``.

    Raises:
        NonFiniteScores: non-finite scores with ``policy="refuse"``.
    """
    check_policy(policy)
    s = np.asarray(scores, np.float64)
    y = np.asarray(labels, bool)
    bad = ~np.isfinite(s)
    block: dict[str, Any] = {
        "policy": policy,
        "rule": RULE,
        "n_genuine": int((bad & y).sum()),
        "n_impostor": int((bad & ~y).sum()),
        "examples": [],
    }
    if not bad.any():
        return s, block
    rows = np.flatnonzero(bad)
    examples = [f"{describe(int(k))}: {'genuine' if y[k] else 'impostor'} score {float(s[k])!r}" for k in rows[:5]]
    block["examples"] = examples
    if policy == "refuse":
        raise NonFiniteScores(
            f"{source}: {len(rows)} scores are not finite numbers ({block['n_genuine']} genuine, {block['n_impostor']} "
            f"impostor; first: {examples[0]}); nonfinite_scores=refuse. Fix them, or set nonfinite_scores=errors to "
            "count each as an error (a genuine one as a false non-match, an impostor one as a false match)"
        )
    finite = s[~bad]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    out = s.copy()
    out[bad & y] = np.nextafter(lo, -np.inf)
    out[bad & ~y] = np.nextafter(hi, np.inf)
    log.warning(
        "%s: %d scores are not finite numbers: %d genuine counted as false non-matches, %d impostor as false matches "
        "(nonfinite_scores=errors; first: %s)",
        source,
        len(rows),
        block["n_genuine"],
        block["n_impostor"],
        examples[0],
    )
    return out, block
