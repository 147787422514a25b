"""Parity of two embedders on the same faces: how far a candidate is from a reference.

Pure numpy (plus :mod:`fetoolkit.metrics.verification` for the verification figures): arrays
in, frozen dataclasses out; no torch, no I/O, no printing.

* :func:`embedding_agreement`: per-face cosine between the two embeddings of each face, and the
  largest absolute difference (raw and after L2 normalisation).
* :func:`decision_agreement`: verification decisions (``score >= threshold``) that change
  between the reference's and the candidate's pair scores at one threshold (the eval's k-fold
  ``best_threshold`` of the reference).
* :func:`verification_shift`: TAR@FAR and k-fold accuracy of both, and the change.
* :func:`check_tolerance`: the violated limits, as sentences.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from fetoolkit.metrics import verification as vm

__all__ = [
    "DecisionAgreement",
    "EmbeddingAgreement",
    "ParityTolerance",
    "VerificationShift",
    "check_tolerance",
    "decision_agreement",
    "embedding_agreement",
    "verification_shift",
]


@dataclass(frozen=True)
class EmbeddingAgreement:
    """Per-face agreement of two embeddings of the same faces.

    Attributes:
        n: number of faces.
        cosine_min: smallest per-face cosine.
        cosine_mean: mean per-face cosine.
        cosine_p001: 0.1st percentile of the per-face cosine.
        worst_index: index of the face with the smallest cosine.
        max_abs_diff: largest ``|ref - cand|`` over all elements of the raw embeddings.
        max_abs_diff_normalized: the same after L2-normalising each row.
        ref_max_abs: largest ``|ref|`` (the scale ``max_abs_diff`` is read against).
    """

    n: int
    cosine_min: float
    cosine_mean: float
    cosine_p001: float
    worst_index: int
    max_abs_diff: float
    max_abs_diff_normalized: float
    ref_max_abs: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DecisionAgreement:
    """Verification decisions that differ between reference and candidate scores.

    Attributes:
        threshold: the decision threshold (accept when ``score >= threshold``).
        n_pairs: pairs compared.
        n_flipped: pairs whose decision differs.
        n_flipped_genuine: flipped genuine pairs (NaN-free ints; 0 without labels).
        n_flipped_impostor: flipped impostor pairs.
        max_score_diff: largest ``|ref_score - cand_score|``.
    """

    threshold: float
    n_pairs: int
    n_flipped: int
    n_flipped_genuine: int
    n_flipped_impostor: int
    max_score_diff: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class VerificationShift:
    """Verification figures of reference and candidate, and the change (candidate - reference).

    Attributes:
        far: the FAR of the TAR figures.
        tar_ref: reference TAR at ``far`` (NaN when not measurable, see ``tar_reason``).
        tar_cand: candidate TAR at ``far``.
        tar_delta: ``tar_cand - tar_ref``.
        accuracy_ref: reference k-fold accuracy (mean over folds).
        accuracy_cand: candidate k-fold accuracy.
        accuracy_delta: ``accuracy_cand - accuracy_ref``.
        best_threshold_ref: the reference's k-fold ``best_threshold``.
        tar_reason: why a TAR is NaN; None when both were measured.
    """

    far: float
    tar_ref: float
    tar_cand: float
    tar_delta: float
    accuracy_ref: float
    accuracy_cand: float
    accuracy_delta: float
    best_threshold_ref: float
    tar_reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class ParityTolerance:
    """Limits a candidate must meet; ``None`` switches a limit off.

    Attributes:
        min_cosine: smallest allowed per-face cosine.
        max_flipped: most decisions allowed to flip (per pair set).
        max_tar_drop: largest allowed ``tar_ref - tar_cand``.
        max_accuracy_drop: largest allowed ``accuracy_ref - accuracy_cand``.
    """

    min_cosine: float | None = 0.9999
    max_flipped: int | None = 0
    max_tar_drop: float | None = None
    max_accuracy_drop: float | None = None


def _check_pair(ref: np.ndarray, cand: np.ndarray, what: str, ndim: int) -> tuple[np.ndarray, np.ndarray]:
    ref = np.asarray(ref, dtype=np.float64)
    cand = np.asarray(cand, dtype=np.float64)
    if ref.ndim != ndim or ref.shape != cand.shape:
        raise ValueError(
            f"{what}: reference and candidate must have the same {ndim}-d shape, got "
            f"{list(ref.shape)} and {list(cand.shape)}"
        )
    if ref.shape[0] == 0:
        raise ValueError(f"{what}: nothing to compare (0 rows)")
    if not (np.isfinite(ref).all() and np.isfinite(cand).all()):
        raise ValueError(f"{what}: non-finite values")
    return ref, cand


def embedding_agreement(ref: np.ndarray, cand: np.ndarray) -> EmbeddingAgreement:
    """Per-face cosine and max |diff| of two embeddings of the same faces.

    Args:
        ref: float ``[N, D]`` reference embeddings (raw or normalised).
        cand: float ``[N, D]`` candidate embeddings of the same faces, same order.

    Returns:
        :class:`EmbeddingAgreement`.

    Raises:
        ValueError: shapes differ, no rows, non-finite values or an all-zero row.
    """
    ref, cand = _check_pair(ref, cand, "embedding_agreement", 2)
    nr = np.linalg.norm(ref, axis=1)
    nc = np.linalg.norm(cand, axis=1)
    if (nr == 0).any() or (nc == 0).any():
        raise ValueError("embedding_agreement: an all-zero embedding has no direction")
    cos = np.einsum("ij,ij->i", ref, cand) / (nr * nc)
    diff_n = np.abs(ref / nr[:, None] - cand / nc[:, None]).max()
    return EmbeddingAgreement(
        n=int(len(ref)),
        cosine_min=float(cos.min()),
        cosine_mean=float(cos.mean()),
        cosine_p001=float(np.quantile(cos, 0.001)),
        worst_index=int(cos.argmin()),
        max_abs_diff=float(np.abs(ref - cand).max()),
        max_abs_diff_normalized=float(diff_n),
        ref_max_abs=float(np.abs(ref).max()),
    )


def decision_agreement(
    ref_scores: np.ndarray, cand_scores: np.ndarray, threshold: float, labels: np.ndarray | None = None
) -> DecisionAgreement:
    """Decisions (``score >= threshold``) that differ between two score sets of the same pairs.

    Args:
        ref_scores: float ``[P]`` reference pair scores.
        cand_scores: float ``[P]`` candidate scores of the same pairs.
        threshold: decision threshold (finite).
        labels: optional bool ``[P]`` (True = genuine) to split the flips.

    Returns:
        :class:`DecisionAgreement`.
    """
    ref, cand = _check_pair(ref_scores, cand_scores, "decision_agreement", 1)
    if not math.isfinite(threshold):
        raise ValueError(f"decision_agreement: threshold must be finite, got {threshold}")
    flipped = (ref >= threshold) != (cand >= threshold)
    gen = imp = 0
    if labels is not None:
        lab = np.asarray(labels).astype(bool)
        if lab.shape != ref.shape:
            raise ValueError(f"labels shape {list(lab.shape)} differs from scores {list(ref.shape)}")
        gen, imp = int((flipped & lab).sum()), int((flipped & ~lab).sum())
    return DecisionAgreement(
        threshold=float(threshold),
        n_pairs=int(len(ref)),
        n_flipped=int(flipped.sum()),
        n_flipped_genuine=gen,
        n_flipped_impostor=imp,
        max_score_diff=float(np.abs(ref - cand).max()),
    )


def verification_shift(
    ref_roc: np.ndarray,
    cand_roc: np.ndarray,
    roc_labels: np.ndarray,
    ref_kfold: np.ndarray,
    cand_kfold: np.ndarray,
    kfold_labels: np.ndarray,
    kfold_folds: np.ndarray,
    far: float = 1e-3,
) -> VerificationShift:
    """TAR@FAR (ROC pairs) and k-fold accuracy (k-fold pairs) of both score sets, and the change.

    Args:
        ref_roc: float ``[P]`` reference scores of the ROC pairs.
        cand_roc: float ``[P]`` candidate scores of the same pairs.
        roc_labels: bool ``[P]``.
        ref_kfold: float ``[Q]`` reference scores of the k-fold pairs.
        cand_kfold: float ``[Q]`` candidate scores of the same pairs.
        kfold_labels: bool ``[Q]``.
        kfold_folds: int ``[Q]`` fold ids.
        far: FAR of the TAR figures.

    Returns:
        :class:`VerificationShift` (uses ``verification.tar_at_far`` and ``kfold_accuracy``).
    """
    tr = vm.tar_at_far(ref_roc, roc_labels, far)
    tc = vm.tar_at_far(cand_roc, roc_labels, far)
    ar = vm.kfold_accuracy(ref_kfold, kfold_labels, kfold_folds)
    ac = vm.kfold_accuracy(cand_kfold, kfold_labels, kfold_folds)
    return VerificationShift(
        far=float(far),
        tar_ref=float(tr.tar),
        tar_cand=float(tc.tar),
        tar_delta=float(tc.tar - tr.tar),
        accuracy_ref=float(ar.accuracy_mean),
        accuracy_cand=float(ac.accuracy_mean),
        accuracy_delta=float(ac.accuracy_mean - ar.accuracy_mean),
        best_threshold_ref=float(ar.best_threshold),
        tar_reason=tr.reason or tc.reason,
    )


def check_tolerance(
    tol: ParityTolerance,
    emb: EmbeddingAgreement,
    decisions: list[DecisionAgreement],
    shift: VerificationShift | None = None,
) -> list[str]:
    """The limits of ``tol`` that the figures break, one sentence each (empty: all met).

    A NaN TAR counts as a violation when ``max_tar_drop`` is set (it could not be checked).
    """
    out: list[str] = []
    if tol.min_cosine is not None and not emb.cosine_min >= tol.min_cosine:
        out.append(f"min cosine {emb.cosine_min:.6f} < {tol.min_cosine} (face {emb.worst_index})")
    if tol.max_flipped is not None:
        for d in decisions:
            if d.n_flipped > tol.max_flipped:
                out.append(
                    f"{d.n_flipped} of {d.n_pairs} decisions flipped at threshold {d.threshold:.4f} "
                    f"(allowed {tol.max_flipped})"
                )
    if shift is not None and tol.max_tar_drop is not None:
        if not math.isfinite(shift.tar_delta):
            out.append(f"TAR@FAR={shift.far:g} could not be compared: {shift.tar_reason}")
        elif -shift.tar_delta > tol.max_tar_drop:
            out.append(f"TAR@FAR={shift.far:g} dropped by {-shift.tar_delta:.4f} (allowed {tol.max_tar_drop})")
    if shift is not None and tol.max_accuracy_drop is not None and -shift.accuracy_delta > tol.max_accuracy_drop:
        out.append(f"k-fold accuracy dropped by {-shift.accuracy_delta:.4f} (allowed {tol.max_accuracy_drop})")
    return out
