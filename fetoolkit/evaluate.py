"""The evaluation: a dataset + an embedder -> verification figures (no Hydra, no files).

Figures, all from :mod:`fetoolkit.metrics`:

* k-fold accuracy (LFW protocol) on the ``kfold`` pairs, with a bootstrap interval;
* ROC, AUC, EER, TAR@FAR (1e-1 .. the finest decade the impostor count supports, never
  extrapolated), the thresholds at those FARs, with bootstrap intervals, on the ``roc`` pairs;
* embedding quality: raw-norm statistics, error-versus-reject curves of every quality score,
  and the spread of genuine scores per subject.

Failures to enrol follow ``fte_policy``: ``drop`` leaves out every pair that uses an image
that did not enrol and reports the images and pair counts; ``fail`` raises. Nothing is skipped
silently.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fetoolkit.cache import EmbeddingCache
from fetoolkit.data import EvalData, PairProtocol, nonfinite
from fetoolkit.detect.base import DetectorCfg, FaceDetector
from fetoolkit.detect.registry import AnyDetectorCfg, build_detector
from fetoolkit.figures import StatsCfg, verification_figures
from fetoolkit.identify import Identification, IdentificationCfg, ijb_identification, subject_identification
from fetoolkit.jsonutil import json_float
from fetoolkit.metrics import quality as qm
from fetoolkit.metrics import verification as vm
from fetoolkit.pipeline import EmbeddedSet, PipelineCfg, detector_settings, embed_dataset
from fetoolkit.store_identity import store_identity
from fetoolkit.store_read import is_store, store_gallery
from fetoolkit.templates import TemplateCfg, pair_dots, template_features, template_pair_scores
from fetoolkit.types import Embedder

log = logging.getLogger(__name__)

__all__ = ["EnrolmentError", "Evaluation", "QualityCfg", "StatsCfg", "evaluate", "keep_enrolled", "pair_scores"]

FTE_POLICIES = ("drop", "fail")
#: Reject fractions whose FNMR results.json lists for every quality score.
ERC_POINTS = (0.05, 0.1, 0.2)


class EnrolmentError(RuntimeError):
    """Images failed to enrol and the policy is ``fail`` (or nothing usable is left)."""


@dataclass(frozen=True)
class QualityCfg:
    """Quality settings (``quality`` in ``configs/eval.yaml``).

    Attributes:
        flip: embed mirrored crops too (one more forward pass) for the flip-consistency score.
        erc_far: the FAR whose threshold is held fixed in the error-versus-reject curves (the
            finest supported decade is used when the data cannot measure it).
        max_reject: the ERC area is averaged over reject fractions ``0..max_reject``.
    """

    flip: bool = True
    erc_far: float = 1e-3
    max_reject: float = 0.2


@dataclass
class Evaluation:
    """Embeddings and scores of one evaluation, beside the figures.

    Attributes:
        summary: the JSON-ready figures (``results.json``).
        data: the data set evaluated.
        embedded: raw embeddings and enrolment details.
        embeddings: float32 ``[U, D]`` L2-normalised features of what the pairs compare: the images
            (``U = N``; with the flip test the sum of a crop's and its mirror's raw features) or the
            templates (``U = T``, IJB); NaN rows for failures to enrol.
        roc_scores: float64 ``[P]`` cosine of each kept ROC pair.
        roc_pairs: the kept ROC pairs.
        kfold_scores: float64 ``[Q]`` cosine of each kept k-fold pair (empty without folds).
        kfold_pairs: the kept k-fold pairs (None without folds: IJB).
        report: every verification figure (``summary`` holds its ``to_dict()``).
        erc: quality-score name -> error-versus-reject curve.
        qualities: quality-score name -> float32 ``[N]`` (NaN for failures to enrol).
    """

    summary: dict[str, Any]
    data: EvalData
    embedded: EmbeddedSet
    embeddings: np.ndarray
    roc_scores: np.ndarray
    roc_pairs: PairProtocol
    kfold_scores: np.ndarray
    kfold_pairs: PairProtocol | None
    report: vm.VerificationReport
    erc: dict[str, qm.ErcCurve] = field(default_factory=dict)
    qualities: dict[str, np.ndarray] = field(default_factory=dict)
    identification: Identification | None = None

    @property
    def curve(self) -> vm.RocCurve:
        """The ROC curve over ``roc_pairs``."""
        return self.report.curve

    @property
    def det(self) -> vm.DetCurve:
        """The DET curve over ``roc_pairs``."""
        return self.report.det


def pair_scores(emb: np.ndarray, pairs: PairProtocol) -> np.ndarray:
    """Cosine similarity of each pair of L2-normalised embeddings: float64 ``[P]`` (in chunks)."""
    return pair_dots(emb, pairs.idx_a, pairs.idx_b)


def comparison_features(
    data: EvalData, es: EmbeddedSet, flip_test: bool, templates: TemplateCfg
) -> tuple[np.ndarray, np.ndarray]:
    """What the pairs compare: (float32 ``[U, D]`` L2-normalised features, bool ``[U]`` usable).

    Images (``U = N``): each image's raw feature, plus its mirror's with the flip test
    (insightface's "F": summed before normalisation). Templates (IJB, ``U = T``):
    :func:`fetoolkit.templates.template_features` with ``templates``' N / D flags and F = ``flip_test``.
    """
    if data.templates is not None:
        cfg = TemplateCfg(flip_test, templates.normalize_images, templates.faceness_weight)
        return template_features(es.raw, es.raw_flip, es.ok, data.templates, cfg)
    if not flip_test:
        return es.normalized(), es.ok
    assert es.raw_flip is not None
    x = es.raw + es.raw_flip
    with np.errstate(invalid="ignore"):
        return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32), es.ok


def keep_enrolled(pairs: PairProtocol, ok: np.ndarray) -> tuple[PairProtocol, int]:
    """The pairs whose two images both enrolled, and how many were dropped."""
    keep = ok[pairs.idx_a] & ok[pairs.idx_b]
    return pairs.subset(keep), int((~keep).sum())


def _consecutive_folds(p: PairProtocol, before: int) -> PairProtocol:
    """Renumber fold ids to 0..K-1 (a fold vanishes when all its pairs are dropped: said in the log)."""
    kept, folds = np.unique(p.folds, return_inverse=True)
    if len(kept) < before:
        log.warning(
            "%d of %d folds lost every pair to failures to enrol: %d-fold accuracy",
            before - len(kept),
            before,
            len(kept),
        )
    return PairProtocol(p.idx_a, p.idx_b, p.labels, folds.astype(np.int64))


def _check_usable(p: PairProtocol, what: str, dropped: int) -> None:
    if p.n_genuine == 0 or p.n_impostor == 0:
        raise EnrolmentError(
            f"the {what} pairs left after dropping {dropped} pairs with images that did not enrol hold "
            f"{p.n_genuine} genuine and {p.n_impostor} impostor pairs; both are needed. Check the "
            "fte_images in the log (wrong dataset.root? no face found?) or relax the detector "
            "(MTCNN: detector.min_face_size, detector.thresholds; YuNet / RetinaFace: detector.score_threshold, "
            "detector.max_side)."
        )


def _detector(cfg: AnyDetectorCfg) -> FaceDetector:
    """The configured detector: MTCNN in facenet-pytorch (the published pipelines' own), a single-shot
    net in onnxruntime with one thread (built only when a data set needs detection)."""
    return build_detector(cfg, num_threads=1, backend="torch")


def evaluate(
    data: EvalData,
    embedder: Embedder,
    *,
    pipeline: PipelineCfg | None = None,
    detector: FaceDetector | None = None,
    detector_cfg: AnyDetectorCfg | None = None,
    fte_policy: str = "drop",
    cache: EmbeddingCache | None = None,
    cache_crops: bool = True,
    stats: StatsCfg | None = None,
    quality: QualityCfg | None = None,
    templates: TemplateCfg | None = None,
    identification: IdentificationCfg | None = None,
    embedded: EmbeddedSet | None = None,
    nonfinite_scores: str = "errors",
) -> Evaluation:
    """Detect, align, embed and score every pair of ``data``; compute the figures.

    Args:
        data: images and protocols.
        embedder: the model.
        pipeline: pipeline settings.
        detector: a ready detector (built from ``detector_cfg`` when None and needed).
        detector_cfg: the detector's settings (MTCNN's ``DetectorCfg``, default, or a ``SingleShotCfg``).
        fte_policy: ``drop`` (pairs using an image that did not enrol are dropped and
            counted) or ``fail`` (raise ``EnrolmentError``).
        cache: embedding cache (None: recompute everything).
        cache_crops: cache the aligned crops too.
        stats: bootstrap settings.
        quality: quality settings.
        templates: the N / D flags of template features (IJB; F is ``pipeline.flip_test``).
        identification: 1:N settings (IJB's own 1:N files are used whenever they exist).
        embedded: the data set's embeddings, read already (an embedding store,
            :func:`fetoolkit.store_read.store_embedded`): nothing is detected or embedded.
        nonfinite_scores: ``errors`` (a pair whose score is not a finite number -- an embedding of
            NaN or inf -- counts as an error: :mod:`fetoolkit.data.nonfinite`) or ``refuse``.
    """
    if fte_policy not in FTE_POLICIES:
        raise ValueError(f"fte_policy must be one of {FTE_POLICIES}, got {fte_policy!r}")
    nonfinite.check_policy(nonfinite_scores)
    pipeline = pipeline or PipelineCfg()
    stats = stats or StatsCfg()
    quality = quality or QualityCfg()
    templates = templates or TemplateCfg()
    identification = identification or IdentificationCfg()
    _check_identification(data, identification)
    # the flip test: insightface's F, on by default for template protocols (the figure papers quote)
    flip_test = pipeline.flip_test if pipeline.flip_test is not None else data.templates is not None
    dcfg = detector_cfg or getattr(detector, "cfg", None) or DetectorCfg()  # the key follows the detector used
    det_settings = detector_settings(dcfg)
    if embedded is not None and len(embedded.ok) != len(data.paths):
        raise ValueError(f"embedded holds {len(embedded.ok)} images, the data set {len(data.paths)}")
    es = embedded or embed_dataset(
        data.paths,
        embedder,
        pipeline,
        images=data.images,
        aligned=data.aligned,
        detector=detector if detector is not None else (lambda: _detector(dcfg)),
        detector_settings=det_settings,
        flip=quality.flip or flip_test,
        cache=cache,
        cache_crops=cache_crops,
        landmarks=data.landmarks,
    )
    n = len(data.paths)
    if es.failures:
        msg = f"{len(es.failures)} of {n} images did not enrol: " + "; ".join(list(es.failures.values())[:5])
        if fte_policy == "fail":
            raise EnrolmentError(
                msg + ". Set fte_policy=drop to leave out the pairs that use them (they are "
                "counted in results.json), or fix the images."
            )
        log.warning("%s (fte_policy=drop: their pairs are left out and counted)", msg)
    if not es.ok.any():
        raise EnrolmentError(f"none of the {n} images enrolled (first: {next(iter(es.failures.values()))})")
    t_units = time.perf_counter()
    emb, unit_ok = comparison_features(data, es, flip_test, templates)
    t_units = time.perf_counter() - t_units

    roc, roc_dropped = keep_enrolled(data.roc, unit_ok)
    _check_usable(roc, "ROC", roc_dropped)
    kfold, kfold_dropped, ks = None, 0, np.empty(0)
    if data.kfold is not None:
        kfold, kfold_dropped = keep_enrolled(data.kfold, unit_ok)
        _check_usable(kfold, "k-fold", kfold_dropped)
        kfold = _consecutive_folds(kfold, len(np.unique(data.kfold.folds)))
        ks = pair_scores(emb, kfold)
    rs = pair_scores(emb, roc) if data.templates is None else template_pair_scores(emb, roc.idx_a, roc.idx_b)
    rs, nf = _nonfinite(rs, roc, data, nonfinite_scores, "ROC")
    if kfold is not None:
        ks, nf_kfold = _nonfinite(ks, kfold, data, nonfinite_scores, "k-fold")
        nf["kfold"] = {k: nf_kfold[k] for k in ("n_genuine", "n_impostor", "examples")}
    # One verification_report: one sort of the ROC scores and one of the k-fold scores (at 10
    # million pairs each costs seconds; see fetoolkit.bench_metrics).
    ids = data.identities if data.templates is None else None  # IJB's 1:1 lists name no subjects
    fig = verification_figures(
        rs,
        roc.labels,
        ks if kfold is not None else None,
        kfold.labels if kfold is not None else None,
        kfold.folds if kfold is not None else None,
        stats,
        subjects=None if ids is None else (ids[roc.idx_a], ids[roc.idx_b]),
        kfold_subjects=None if ids is None or kfold is None else (ids[kfold.idx_a], ids[kfold.idx_b]),
    )
    decades = fig.report.decades
    t2 = time.perf_counter()
    if data.templates is None:
        qsum, erc, qualities = _quality(es, roc, rs, decades, data, quality)
    else:  # the pairs compare templates: no per-image error-versus-reject
        qsum, erc, qualities = _template_quality(es), {}, {}
    t3 = time.perf_counter()
    boot = {"n_boot": stats.n_boot, "seed": stats.seed, "level": stats.level}
    ident = _identification(data, emb, unit_ok, identification, embedder, pipeline, dcfg, cache, cache_crops, boot)
    t4 = time.perf_counter()

    summary: dict[str, Any] = {
        "dataset": data.name,
        "n_images": n,
        "fte": len(es.failures),
        "fte_rate": len(es.failures) / max(n, 1),
        "fte_images": sorted(es.failures.values()),
        "fte_policy": fte_policy,
        "n_pairs_dropped": {"kfold": kfold_dropped, "roc": roc_dropped},
        "n_pairs": {"kfold": 0 if data.kfold is None else len(data.kfold), "roc": len(data.roc)},
        "n_genuine": roc.n_genuine,
        "n_impostor": roc.n_impostor,
        "comparison": _comparison_block(data, unit_ok, flip_test, templates),
        "nonfinite_scores": nf,
        **fig.to_dict(),
        **({"identification": ident.summary} if ident is not None else {}),
        "quality": qsum,
        "n_degraded": int((es.degraded >= 0).sum()) if es.degraded is not None else 0,
        "cache": es.cache,
        "cache_detail": {"embeddings": es.cache, "crops": es.crops_cache, "key": es.key},
        "timing_s": {
            **es.timing_s,
            "features": round(t_units, 3),
            **fig.report.timing_s,
            "quality": round(t3 - t2, 3),
            **({"identification": round(t4 - t3, 3)} if ident is not None else {}),
        },
        "data": data.meta,
    }
    return Evaluation(summary, data, es, emb, rs, roc, ks, kfold, fig.report, erc, qualities, ident)


def _nonfinite(
    scores: np.ndarray, pairs: PairProtocol, data: EvalData, policy: str, what: str
) -> tuple[np.ndarray, dict[str, Any]]:
    """A model's scores with the non-finite ones counted as errors (:func:`fetoolkit.data.nonfinite.as_errors`)."""
    names = (
        [f"template {t}" for t in data.templates.ids] if data.templates is not None else [str(p) for p in data.paths]
    )
    return nonfinite.as_errors(
        scores,
        pairs.labels,
        policy=policy,
        source=f"{data.name} {what} pairs",
        describe=lambda k: f"{names[pairs.idx_a[k]]} & {names[pairs.idx_b[k]]}",
    )


def _comparison_block(data: EvalData, ok: np.ndarray, flip_test: bool, templates: TemplateCfg) -> dict[str, Any]:
    """``results.json`` ``comparison``: what a pair compares and how its features were made."""
    block: dict[str, Any] = {"unit": "image" if data.templates is None else "template", "flip_test": flip_test}
    if data.templates is not None:
        cfg = TemplateCfg(flip_test, templates.normalize_images, templates.faceness_weight)
        block.update(
            {
                "code": cfg.code(),
                "normalize_images": cfg.normalize_images,
                "faceness_weight": cfg.faceness_weight,
                "n_templates": len(data.templates),
                "n_templates_enrolled": int(ok.sum()),
                "rule": "raw image features (+ mirrored crop with F), L2-normalised per image with N, times the "
                "faceness score with D; averaged per media, summed per template, L2-normalised; score = dot product "
                "(insightface's IJB evaluation)",
            }
        )
    return block


def _template_quality(es: EmbeddedSet) -> dict[str, Any]:
    """The quality block of a template protocol: norm statistics of the images only."""
    return {
        "default": "norm",
        "norms": qm.norm_summary(es.raw[es.ok]).to_dict(),
        "erc": None,
        "erc_reason": "the pairs compare templates, not images: no per-image error-versus-reject curve",
    }


def _check_identification(data: EvalData, cfg: IdentificationCfg) -> None:
    """Refuse 1:N settings the data set cannot honour, before minutes of embedding."""
    if cfg.distractors and cfg.gallery_per_subject is None:
        raise ValueError("identification.distractors needs identification.gallery_per_subject (the gallery)")
    if cfg.gallery_per_subject is not None and (data.identities is None or data.templates is not None):
        raise ValueError(
            f"identification.gallery_per_subject needs identity labels; dataset {data.name} has none "
            "(use orl, folder, lfw or rfw; IJB sets use their own 1:N files)"
        )
    if cfg.distractors and not Path(cfg.distractors).expanduser().is_dir():
        raise FileNotFoundError(f"identification.distractors: no such folder: {cfg.distractors}")


def _identification(
    data: EvalData,
    emb: np.ndarray,
    ok: np.ndarray,
    cfg: IdentificationCfg,
    embedder: Embedder,
    pipeline: PipelineCfg,
    dcfg: AnyDetectorCfg,
    cache: EmbeddingCache | None,
    cache_crops: bool,
    boot: dict[str, Any],
) -> Identification | None:
    """1:N figures: IJB's own protocol when its files exist, else K images per subject when asked;
    ``boot``: the probe-subject bootstrap's ``n_boot``, ``seed``, ``level``."""
    if data.searches is not None:
        return ijb_identification(emb, ok, data.searches, boot)
    if cfg.gallery_per_subject is None or data.identities is None:
        return None
    distractors = None
    if is_store(cfg.distractors):  # a gallery extracted already (python -m fetoolkit.extract images=...)
        asked = store_identity(embedder, pipeline, dcfg, aligned=False, given_landmarks=False, flip=False, threads=None)
        distractors = store_gallery(cfg.distractors, asked)
    elif cfg.distractors:
        from fetoolkit.data.sources import list_images

        paths = list_images(cfg.distractors)
        des = embed_dataset(
            paths,
            embedder,
            pipeline,
            detector=lambda: _detector(dcfg),
            detector_settings=detector_settings(dcfg),
            cache=cache,
            cache_crops=cache_crops,
        )
        if es_fail := len(des.failures):
            log.warning(
                "identification.distractors: %d of %d images did not enrol and are left out", es_fail, len(paths)
            )
        distractors = des.normalized()[des.ok]
    return subject_identification(emb, ok, data.identities, cfg, distractors, boot)


def _quality(
    es: EmbeddedSet, roc: PairProtocol, rs: np.ndarray, decades: dict[str, vm.TarAtFar], data: EvalData, cfg: QualityCfg
) -> tuple[dict[str, Any], dict[str, qm.ErcCurve], dict[str, np.ndarray]]:
    """Norm statistics, every quality score's ERC, and the genuine-score spread per subject.

    An enrolled image whose features are not finite (a model fault; its pairs count as errors) gets
    the lowest quality of every score: the first rejected."""
    ok = es.ok
    finite = np.isfinite(es.raw[ok]).all(axis=1)
    if es.raw_flip is not None:
        finite &= np.isfinite(es.raw_flip[ok]).all(axis=1)
    raw = es.raw[ok][finite]
    scores: dict[str, np.ndarray] = {
        "norm": qm.quality_norm(raw),
        "magnitude_diversity": qm.quality_magnitude_diversity(raw),
        "diversity": qm.diversity(raw),
        "centroid_distance": qm.quality_centroid_distance(raw),
    }
    if es.raw_flip is not None:
        scores["flip_consistency"] = qm.quality_flip_consistency(raw, es.raw_flip[ok][finite])
    if not finite.all():
        for k, v in scores.items():
            worst = np.full(len(finite), np.min(v, initial=0.0) - 1, np.float32)
            worst[finite] = v
            scores[k] = worst
    det = es.det_scores[ok]
    if np.isfinite(det).all():
        scores["detector_confidence"] = det.astype(np.float32)
    full = {}
    for k, v in scores.items():
        q = np.full(len(ok), np.nan, np.float32)
        q[ok] = v
        full[k] = q

    out: dict[str, Any] = {"default": "norm", "norms": qm.norm_summary(raw).to_dict()}
    if not finite.all():
        out["nonfinite_embeddings"] = int((~finite).sum())
    erc: dict[str, qm.ErcCurve] = {}
    far = cfg.erc_far
    t = decades.get(vm.far_key(far)) or vm.tar_at_far(rs, roc.labels, far)
    if t.reason is not None or not math.isfinite(t.threshold):
        finite = [d for d in decades.values() if math.isfinite(d.threshold)]
        t = finite[-1] if finite else t
        far = t.far
    if math.isfinite(t.threshold):
        remap = np.full(len(ok), -1, np.int64)
        remap[ok] = np.arange(int(ok.sum()))
        a, b = remap[roc.idx_a], remap[roc.idx_b]
        table: dict[str, Any] = {}
        for name, q in scores.items():
            c = qm.error_vs_reject(rs, roc.labels, a, b, q, t.threshold)
            erc[name] = c
            at = {f"{r:g}": json_float(float(c.fnmr[np.argmin(np.abs(c.reject - r))])) for r in ERC_POINTS}
            table[name] = {"erc_area": json_float(qm.erc_area(c, cfg.max_reject)), "fnmr_at_reject": at}
        first = next(iter(erc.values()))
        out["erc"] = {
            "far": far,
            "threshold": float(t.threshold),
            "fnmr_no_reject": json_float(float(first.fnmr[0])),
            "max_reject": cfg.max_reject,
            "note": "erc_area = mean FNMR over reject fractions 0..max_reject; lower is better; "
            "a random score stays near fnmr_no_reject",
            "scores": table,
        }
        ranked = sorted((v["erc_area"], k) for k, v in table.items() if v["erc_area"] is not None)
        out["erc"]["best"] = ranked[0][1] if ranked else None
    else:
        out["erc"] = None
        out["erc_reason"] = f"no finite threshold at FAR {cfg.erc_far:g} or any coarser decade"
    if data.identities is not None:
        subject = data.identities[roc.idx_a]
        spread = qm.genuine_spread(rs, roc.labels, subject).summary()
        if data.identity_names is not None:
            for w in spread["worst"]:
                w["name"] = data.identity_names[w["subject"]]
        spread["note"] = (
            "per subject: std of its genuine-pair scores (ORL: lighting, expression and glasses "
            "vary within a subject); worst = largest spread"
        )
        out["genuine_spread"] = spread
    return out, erc, full
