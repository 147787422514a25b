"""The evaluation: a dataset + an embedder -> verification figures (no Hydra, no files)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fetoolkit.data import EvalData, PairProtocol
from fetoolkit.detect.mtcnn import DetectorCfg, MTCNNDetector
from fetoolkit.metrics import verification as vm
from fetoolkit.pipeline import Crops, PipelineCfg, crop_images, embed_crops
from fetoolkit.types import Embedder

log = logging.getLogger(__name__)

FARS = (1e-1, 1e-2, 1e-3)


class EnrolmentError(RuntimeError):
    """Images failed to enrol and the policy is ``fail``."""


@dataclass
class Evaluation:
    """Embeddings and scores of one evaluation, beside the figures.

    Attributes:
        summary: the JSON-ready figures (``results.json``).
        embeddings: float32 ``[N, D]`` (NaN rows for failures to enrol).
        crops: the aligned crops and detection details.
        roc_scores: float64 ``[P]`` cosine of each kept ROC pair.
        roc_pairs: the kept ROC pairs.
        kfold_scores: float64 ``[Q]`` cosine of each kept k-fold pair.
        kfold_pairs: the kept k-fold pairs.
        curve: the ROC curve over ``roc_pairs``.
    """

    summary: dict[str, Any]
    embeddings: np.ndarray
    crops: Crops
    roc_scores: np.ndarray
    roc_pairs: PairProtocol
    kfold_scores: np.ndarray
    kfold_pairs: PairProtocol
    curve: Any = field(default=None)


def pair_scores(emb: np.ndarray, pairs: PairProtocol) -> np.ndarray:
    """Cosine similarity of each pair of L2-normalised embeddings: float64 ``[P]``."""
    return np.einsum("ij,ij->i", emb[pairs.idx_a], emb[pairs.idx_b]).astype(np.float64)


def keep_enrolled(pairs: PairProtocol, ok: np.ndarray) -> tuple[PairProtocol, int]:
    """The pairs whose two images both enrolled, and how many were dropped."""
    keep = ok[pairs.idx_a] & ok[pairs.idx_b]
    return pairs.subset(keep), int((~keep).sum())


def evaluate(data: EvalData, embedder: Embedder, *, pipeline: PipelineCfg | None = None,
             detector: MTCNNDetector | None = None, detector_cfg: DetectorCfg | None = None,
             fte_policy: str = "drop") -> Evaluation:
    """Detect, align, embed and score every pair of ``data``; compute the figures.

    Args:
        data: images and protocols.
        embedder: the model.
        pipeline: pipeline settings.
        detector: a ready MTCNN (built from ``detector_cfg`` when None and needed).
        detector_cfg: MTCNN settings.
        fte_policy: ``drop`` (pairs using an image that did not enrol are dropped and
            counted) or ``fail`` (raise ``EnrolmentError``).
    """
    if fte_policy not in ("drop", "fail"):
        raise ValueError(f"fte_policy must be 'drop' or 'fail', got {fte_policy!r}")
    pipeline = pipeline or PipelineCfg()
    needs_detector = pipeline.align and not data.aligned
    if needs_detector and detector is None:
        detector = MTCNNDetector(detector_cfg)
    t0 = time.perf_counter()
    crops = crop_images(data.paths, detector, pipeline, size=embedder.contract.size, aligned=data.aligned)
    t1 = time.perf_counter()
    if crops.failures and fte_policy == "fail":
        raise EnrolmentError(f"{len(crops.failures)} images did not enrol: " + "; ".join(list(crops.failures.values())[:5]))
    emb = np.full((len(data.paths), embedder.contract.embed_dim), np.nan, np.float32)
    emb[crops.ok] = embed_crops(crops.faces[crops.ok], embedder, pipeline)
    t2 = time.perf_counter()

    kfold, kfold_dropped = keep_enrolled(data.kfold, crops.ok)
    roc, roc_dropped = keep_enrolled(data.roc, crops.ok)
    ks, rs = pair_scores(emb, kfold), pair_scores(emb, roc)
    acc = vm.kfold_accuracy(ks, kfold.labels, kfold.folds)
    curve = vm.roc_curve(rs, roc.labels)
    eer = vm.eer(rs, roc.labels)
    tars = {f"{far:.0e}".replace("e-0", "e-"): vm.tar_at_far(rs, roc.labels, far) for far in FARS}

    summary: dict[str, Any] = {
        "dataset": data.name,
        "n_images": len(data.paths),
        "fte": len(crops.failures),
        "fte_rate": len(crops.failures) / max(len(data.paths), 1),
        "fte_images": sorted(crops.failures.values()),
        "fte_policy": fte_policy,
        "n_pairs_dropped": {"kfold": kfold_dropped, "roc": roc_dropped},
        "n_genuine": roc.n_genuine,
        "n_impostor": roc.n_impostor,
        "kfold": {"n_folds": int(len(np.unique(kfold.folds))), "n_genuine": kfold.n_genuine,
                  "n_impostor": kfold.n_impostor, "fold_accuracies": list(acc.fold_accuracies),
                  "fold_thresholds": list(acc.fold_thresholds)},
        "accuracy_mean": acc.accuracy_mean,
        "accuracy_std": acc.accuracy_std,
        "best_threshold": acc.best_threshold,
        "auc": vm.auc(curve),
        "eer": eer.eer,
        "eer_threshold": eer.threshold,
        "tar_at_far": {k: _nan_to_none(t.tar) for k, t in tars.items()},
        "tar_at_far_threshold": {k: _nan_to_none(t.threshold) for k, t in tars.items()},
        "tar_at_far_reasons": {k: t.reason for k, t in tars.items() if t.reason},
        "timing_s": {"detect_align": round(t1 - t0, 3), "embed": round(t2 - t1, 3)},
    }
    return Evaluation(summary, emb, crops, rs, roc, ks, kfold, curve)


def _nan_to_none(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)
