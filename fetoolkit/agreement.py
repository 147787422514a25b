"""A candidate's embeddings against a reference on an aligned set (the maths: :mod:`fetoolkit.metrics.parity`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from fetoolkit.aligned import AlignedSet
from fetoolkit.backends.common import l2_normalize
from fetoolkit.evaluate import keep_enrolled, pair_scores
from fetoolkit.metrics import parity as pm

FAR = 1e-3


@dataclass
class Reference:
    """The reference's embeddings and scores on an aligned set.

    Attributes:
        raw: float32 ``[M, D]`` raw embeddings of the enrolled faces.
        emb: float32 ``[N, D]`` L2-normalised, NaN rows for failures to enrol.
        kfold / roc: the enrolled pairs; ``kfold_scores`` / ``roc_scores`` their cosines.
        best_threshold: the reference's k-fold ``best_threshold`` (the eval threshold).
    """

    raw: np.ndarray
    emb: np.ndarray
    kfold: Any
    roc: Any
    kfold_scores: np.ndarray
    roc_scores: np.ndarray
    best_threshold: float


def _full(raw: np.ndarray, ok: np.ndarray) -> np.ndarray:
    emb = np.full((len(ok), raw.shape[1]), np.nan, np.float32)
    emb[ok] = l2_normalize(raw)
    return emb


def reference_from(raw: np.ndarray, aligned: AlignedSet) -> Reference:
    """Scores and the eval threshold of reference embeddings ``raw`` ``[M, D]``."""
    from fetoolkit.metrics import verification as vm

    emb = _full(raw, aligned.ok)
    kfold, _ = keep_enrolled(aligned.data.kfold, aligned.ok)
    roc, _ = keep_enrolled(aligned.data.roc, aligned.ok)
    ks, rs = pair_scores(emb, kfold), pair_scores(emb, roc)
    thr = vm.kfold_accuracy(ks, kfold.labels, kfold.folds).best_threshold
    return Reference(raw, emb, kfold, roc, ks, rs, float(thr))


def compare(
    ref: Reference,
    cand_raw: np.ndarray,
    aligned: AlignedSet,
    tol: pm.ParityTolerance,
    held_out: np.ndarray | None = None,
) -> dict[str, Any]:
    """Parity figures of candidate raw embeddings ``[M, D]`` against ``ref``, and violations.

    Args:
        ref: the reference.
        cand_raw: float32 ``[M, D]`` candidate embeddings of the same enrolled faces.
        aligned: the faces and protocols.
        tol: limits to check.
        held_out: optional bool ``[N]``, True for images used to calibrate the candidate: the
            verification figures are also given on the pairs that use none of them.

    Returns:
        JSON-ready dict: ``embeddings``, ``decisions`` (``kfold``, ``roc``), ``verification``,
        optionally ``verification_held_out``, ``tolerance``, ``violations``, ``pass``.
    """
    emb = _full(cand_raw, aligned.ok)
    ks, rs = pair_scores(emb, ref.kfold), pair_scores(emb, ref.roc)
    agree = pm.embedding_agreement(ref.raw, cand_raw)
    dec = {
        "kfold": pm.decision_agreement(ref.kfold_scores, ks, ref.best_threshold, ref.kfold.labels),
        "roc": pm.decision_agreement(ref.roc_scores, rs, ref.best_threshold, ref.roc.labels),
    }
    shift = pm.verification_shift(
        ref.roc_scores, rs, ref.roc.labels, ref.kfold_scores, ks, ref.kfold.labels, ref.kfold.folds, far=FAR
    )
    violations = pm.check_tolerance(tol, agree, list(dec.values()), shift)
    out: dict[str, Any] = {
        "embeddings": agree.to_dict(),
        "decisions": {k: v.to_dict() for k, v in dec.items()},
        "verification": shift.to_dict(),
    }
    if held_out is not None and held_out.any():
        keep = ~held_out
        kf, _ = keep_enrolled(ref.kfold, keep)
        rc, _ = keep_enrolled(ref.roc, keep)
        held: dict[str, Any] = {
            "n_images_excluded": int(held_out.sum()),
            "n_roc_pairs": len(rc),
            "n_kfold_pairs": len(kf),
        }
        try:
            h = pm.verification_shift(
                pair_scores(ref.emb, rc),
                pair_scores(emb, rc),
                rc.labels,
                pair_scores(ref.emb, kf),
                pair_scores(emb, kf),
                kf.labels,
                kf.folds,
                far=FAR,
            )
            held.update(h.to_dict())
        except ValueError as e:  # too few pairs left (a small set): say why, do not guess
            held["reason"] = f"not measurable without the calibration images: {e}"
        out["verification_held_out"] = held
    out["tolerance"] = asdict(tol)
    out["violations"] = violations
    out["pass"] = not violations
    return out


def tolerance_from(cfg: DictConfig, precision: str) -> pm.ParityTolerance:
    """``cfg.tolerance.<precision>`` as a :class:`ParityTolerance`."""
    node = cfg.tolerance.get(precision)
    if node is None:
        raise KeyError(f"no tolerance.{precision} in the config; known: {list(cfg.tolerance)}")
    return pm.ParityTolerance(**OmegaConf.to_container(node, resolve=True))  # type: ignore[arg-type]
