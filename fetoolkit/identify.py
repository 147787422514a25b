"""1:N identification inside an evaluation: which features make the galleries and the probes.

Two protocols, both scored by :mod:`fetoolkit.metrics.identification` (exact inner-product
search with faiss):

* **IJB-B/C** (the data set's 1:N files): each gallery (``G1``, ``G2``) is searched separately by the
  mixed probe templates; probes whose subject is enrolled in the other gallery are that search's
  non-mated searches. ``mean`` averages the two galleries, as papers quote IJB-C 1:N.
* **Identity-labelled sets** (``orl``, ``folder``, ``lfw``, ``rfw``):
  ``identification.gallery_per_subject=K`` enrols K images per subject (a seeded choice; their
  L2-normalised features averaged into one gallery template), the other images probe one by one
  (closed set: every probe is mated). ``identification.distractors=DIR`` adds the faces of the
  images under ``DIR`` to the gallery as subjects of their own: rank-1 against 10, 100, ... of them
  (a MegaFace-style curve).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from fetoolkit.metrics import identification as im

log = logging.getLogger(__name__)

__all__ = ["IdentificationCfg", "Identification", "ijb_identification", "subject_split", "subject_identification"]


@dataclass(frozen=True)
class IdentificationCfg:
    """``identification`` in ``configs/eval.yaml``.

    Attributes:
        gallery_per_subject: K images enrolled per subject of an identity-labelled set; None: no
            identification there (IJB sets use their own 1:N files whenever they exist).
        distractors: a folder of face images added to the gallery as distractors, or None.
        seed: the seed of the enrolment choice and of the distractors' order.
    """

    gallery_per_subject: int | None = None
    distractors: str | None = None
    seed: int = 0


@dataclass(frozen=True)
class Identification:
    """The identification figures of one evaluation.

    Attributes:
        reports: gallery name (``"G1"``, ``"G2"``, or ``"gallery"``) -> its report.
        summary: what ``results.json`` holds under ``identification``.
    """

    reports: dict[str, im.IdentificationReport]
    summary: dict[str, Any]


def _usable(templates: np.ndarray, subjects: np.ndarray, ok: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    keep = ok[templates]
    if not keep.all():
        log.warning(
            "%s: %d of %d templates have no enrolled image and are left out", what, int((~keep).sum()), keep.size
        )
    return templates[keep], subjects[keep]


def ijb_identification(
    feats: np.ndarray, ok: np.ndarray, searches: dict[str, Any], boot: dict[str, Any] | None = None
) -> Identification:
    """IJB 1:N: ``feats`` float32 ``[T, D]`` normalised template features, ``ok`` bool ``[T]``;
    ``searches`` holds ``G1``, ``G2`` and ``probes`` (:class:`fetoolkit.data.ijb.Search`); ``boot``:
    ``n_boot``, ``seed``, ``level`` of the probe-subject bootstrap intervals (None: none)."""
    probes = searches["probes"]
    pt, ps = _usable(probes.templates, probes.subjects, ok, "1:N probes")
    reports: dict[str, im.IdentificationReport] = {}
    summary: dict[str, Any] = {}
    for g in ("G1", "G2"):
        gt, gs = _usable(searches[g].templates, searches[g].subjects, ok, f"1:N gallery {g}")
        rep = im.identification_report(feats[gt], gs, feats[pt], ps, **(boot or {}))
        reports[g] = rep
        summary[g] = rep.to_dict()
    summary["mean"] = im.mean_report(reports)
    summary["protocol"] = (
        "each gallery searched by the mixed probe templates; probes of subjects not enrolled in it are its "
        "non-mated searches; TPIR at FPIR as bob.measure's detection_identification_rate; mean over G1 and G2"
    )
    return Identification(reports, summary)


def subject_split(identities: np.ndarray, ok: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Which images enrol: bool ``[N]`` gallery mask and the subjects with a gallery (int64).

    K enrolled images per subject, chosen at random (seeded) among its enrolled images; a subject
    with K images or fewer has no probe left and is enrolled without probing (it still competes).
    """
    if k < 1:
        raise ValueError(f"identification.gallery_per_subject must be >= 1, got {k}")
    rng = np.random.default_rng(seed)
    gallery = np.zeros(len(identities), bool)
    subjects = []
    for s in np.unique(identities[ok]):
        members = np.flatnonzero(ok & (identities == s))
        gallery[rng.permutation(members)[:k]] = True
        subjects.append(int(s))
    return gallery, np.asarray(subjects, np.int64)


def subject_identification(
    emb: np.ndarray,
    ok: np.ndarray,
    identities: np.ndarray,
    cfg: IdentificationCfg,
    distractors: np.ndarray | None,
    boot: dict[str, Any] | None = None,
) -> Identification:
    """Closed-set identification of an identity-labelled set (see the module docstring).

    Args:
        emb: float32 ``[N, D]`` L2-normalised image features.
        ok: bool ``[N]`` enrolled images.
        identities: int64 ``[N]`` subject of each image.
        cfg: ``gallery_per_subject`` (required) and the seed.
        distractors: float32 ``[M, D]`` normalised distractor features, or None.
        boot: ``n_boot``, ``seed``, ``level`` of the probe-subject bootstrap intervals (None: none).
    """
    assert cfg.gallery_per_subject is not None
    gallery_mask, subjects = subject_split(identities, ok, cfg.gallery_per_subject, cfg.seed)
    feats = np.zeros((len(subjects), emb.shape[1]), np.float64)
    pos = np.searchsorted(subjects, identities[gallery_mask])
    np.add.at(feats, pos, emb[gallery_mask])
    feats /= np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
    gallery = feats.astype(np.float32)
    probe = ok & ~gallery_mask
    if not probe.any():
        raise ValueError(
            f"identification.gallery_per_subject={cfg.gallery_per_subject} enrols every image: no probe is left; "
            "enrol fewer images per subject"
        )
    rep = im.identification_report(gallery, subjects, emb[probe], identities[probe], **(boot or {}))
    summary: dict[str, Any] = {
        "gallery": rep.to_dict(),
        "gallery_per_subject": cfg.gallery_per_subject,
        "protocol": f"{cfg.gallery_per_subject} images per subject enrolled (seed {cfg.seed}, features averaged), "
        "every other enrolled image probes; closed set",
    }
    if distractors is not None and len(distractors):
        curve = im.distractor_curve(gallery, subjects, emb[probe], identities[probe], distractors, seed=cfg.seed)
        summary["distractors"] = {
            "n": int(len(distractors)),
            "source": cfg.distractors,
            "rank1": {str(n): float(r) for n, r in curve.items()},
        }
    return Identification({"gallery": rep}, summary)
