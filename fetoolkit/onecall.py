"""The one-call API: a photo in, faces with embeddings out; two photos in, a decision out.

::

    import fetoolkit
    faces = fetoolkit.embed("photo.jpg")                 # [Face(box, landmarks, score, embedding, quality)]
    every = fetoolkit.embed("group.jpg", all_faces=True)  # every face, best score first
    v = fetoolkit.verify("a.jpg", "b.jpg")                # score, same, threshold and where it came from
    t = fetoolkit.load_run("outputs/eval/...").threshold(far=1e-3)   # a run's threshold, with its interval
    t.accept(scores)                                      # decisions on new pairs

Beside the layered API (``detect`` -> ``align`` -> ``create_embedder(...).embed``), which it is
built from: the same detectors, alignment and models, built once per process and reused. Images
are paths, encoded bytes or uint8 ``[H, W, 3]`` RGB arrays. A photo without a face raises
:class:`NoFaceError` (a ``LookupError``) with the image named, not an ``IndexError``.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

ImageLike = str | os.PathLike[str] | bytes | np.ndarray


class NoFaceError(LookupError):
    """The detector found no face in the image."""


@dataclass(frozen=True)
class Face:
    """One face of a photo.

    Attributes:
        embedding: float32 ``[D]``, L2-normalised.
        quality: ``face_quality`` of the raw embedding, in [0, 1] (higher: more usable).
        score: the detector's confidence (NaN for an aligned crop: no detection ran).
        box: float32 ``[4]`` ``x1, y1, x2, y2`` in the image's pixels (None for an aligned crop).
        landmarks: float32 ``[5, 2]`` eyes, nose, mouth corners (None for an aligned crop).
        crop: uint8 ``[H, W, 3]`` the aligned crop that was embedded.
    """

    embedding: np.ndarray
    quality: float
    score: float
    box: np.ndarray | None
    landmarks: np.ndarray | None
    crop: np.ndarray


@dataclass(frozen=True)
class Verification:
    """The answer of :func:`verify`.

    Attributes:
        score: cosine similarity of the two faces' embeddings, in [-1, 1].
        same: ``score >= threshold``.
        threshold: the decision threshold used.
        threshold_source: where it came from (given, a run and its FAR, a profile and its FMR, or the
            model's default).
        face1, face2: the two faces compared.
        llr: with a decision profile: natural-log likelihood ratio of "same identity" (> 0 favours
            it); else None.
        p_same: with a profile: probability of "same identity" at ``prior``; else None.
        prior: the prior of ``p_same`` (the profile's unless given); None without a profile.
        profile_id: the profile's id; None without one.
        warnings: what the profile does not vouch for here (a different backend; differences run
            anyway with ``allow_profile_mismatch``).
    """

    score: float
    same: bool
    threshold: float
    threshold_source: str
    face1: Face
    face2: Face
    llr: float | None = None
    p_same: float | None = None
    prior: float | None = None
    profile_id: str | None = None
    warnings: tuple[str, ...] = ()


_BUILD_LOCK = threading.Lock()  # one build per model at a time (a first use may convert or export)


def _embedder(model: str, backend: str, weights: str | os.PathLike[str] | None) -> Any:
    from fetoolkit.models.registry import get_model_spec

    key = (get_model_spec(model).name, backend, None if weights is None else str(Path(weights).expanduser().resolve()))
    with _BUILD_LOCK:
        return _built_embedder(*key)


@functools.lru_cache(maxsize=4)
def _built_embedder(name: str, backend: str, weights: str | None) -> Any:
    from fetoolkit.models.factory import create_embedder

    return create_embedder(name, backend=backend, weights=weights)


def _detector(name: str) -> Any:
    if name == "mtcnn":
        from fetoolkit.detect.mtcnn import default_detector

        return default_detector()
    from fetoolkit.detect.registry import shared_detector

    return shared_detector(name)  # built once per process, under its own lock


def prepare(
    *, model: str = "arcface", detector: str = "yunet", backend: str = "torch", weights: str | None = None
) -> None:
    """Build (and keep) the model and the detector now, so that a bad name or weights file fails here,
    before any image (``python -m fetoolkit.embed`` calls it first)."""
    _embedder(model, backend, weights)
    _detector(detector)


def _read(image: ImageLike) -> tuple[np.ndarray, str]:
    """(uint8 ``[H, W, 3]`` RGB, how to name it in messages)."""
    from fetoolkit.detect.base import check_rgb
    from fetoolkit.imageio import decode_image, read_image

    if isinstance(image, np.ndarray):
        check_rgb(image)
        return image, "the array"
    if isinstance(image, bytes):
        return decode_image(image), f"the {len(image)}-byte image"
    return read_image(image), str(Path(image))


def _rms_ref(model: str) -> float | None:
    from fetoolkit.models.registry import get_model_spec

    return get_model_spec(model).quality_rms_ref


def embed(
    image: ImageLike,
    *,
    model: str = "arcface",
    detector: str = "yunet",
    backend: str = "torch",
    weights: str | None = None,
    all_faces: bool = False,
    select: str = "most_confident",
    aligned: bool = False,
) -> list[Face]:
    """The faces of one image, embedded.

    Args:
        image: a path, the encoded file's bytes, or uint8 ``[H, W, 3]`` RGB.
        model: a registry name or alias (``fetoolkit.list_models()``).
        detector: ``yunet`` (default: fast, no torch), ``retinaface`` or ``mtcnn``.
        backend: ``torch`` or ``onnx`` for the model.
        weights: a local weights file instead of the fetched one.
        all_faces: every face, best detection score first; else the one ``select`` keeps.
        select: ``most_confident``, ``largest`` or ``center``.
        aligned: the image already is a crop on the ArcFace template (no detection).

    Returns:
        One :class:`Face` (``all_faces=False``) or every face found.

    Raises:
        NoFaceError: no face was found.
    """
    from fetoolkit.backends.common import l2_normalize
    from fetoolkit.detect.align import align
    from fetoolkit.detect.base import select_face
    from fetoolkit.metrics.quality import face_quality
    from fetoolkit.pipeline import PipelineCfg, crop_face

    rgb, what = _read(image)
    emb = _embedder(model, backend, weights)
    size = emb.contract.size
    if aligned:
        crops = [crop_face(rgb, None, PipelineCfg(align=False), size).face]
        found: list[Any] = [None]
    else:
        dets = sorted(_detector(detector).detect(rgb), key=lambda d: -d.score)
        if not dets:
            raise NoFaceError(
                f"no face found in {what} ({rgb.shape[1]}x{rgb.shape[0]}) by {detector}; try another detector "
                "(detector retinaface or mtcnn), a larger photo, or aligned for a ready crop"
            )
        found = dets if all_faces else [select_face(dets, rgb.shape, select)]  # type: ignore[arg-type]
        crops = [align(rgb, d.landmarks, size) for d in found]
    raw = emb.embed_raw(np.stack(crops))
    rms = _rms_ref(model)
    quality = face_quality(raw) if rms is None else face_quality(raw, rms_ref=rms)
    vectors = l2_normalize(raw)
    return [
        Face(
            embedding=vectors[k],
            quality=float(quality[k]),
            score=float("nan") if d is None else float(d.score),
            box=None if d is None else d.box,
            landmarks=None if d is None else d.landmarks,
            crop=crops[k],
        )
        for k, d in enumerate(found)
    ]


def _profile_crops(detector: str, select: str, aligned: bool) -> dict[str, Any]:
    """The crop settings of :func:`embed` with these arguments (:func:`fetoolkit.decision.profile.crop_settings`)."""
    from fetoolkit.decision.profile import crop_settings
    from fetoolkit.detect.registry import detector_cfg_for
    from fetoolkit.pipeline import detector_settings

    if aligned:
        return crop_settings(None, {"align": False, "select": select})
    return crop_settings(detector_settings(detector_cfg_for(detector)), {"align": True, "select": select})


def verify(
    image1: ImageLike,
    image2: ImageLike,
    *,
    threshold: float | None = None,
    run: str | os.PathLike[str] | None = None,
    far: float = 1e-3,
    profile: str | os.PathLike[str] | None = None,
    fmr: float = 1e-3,
    prior: float | None = None,
    allow_profile_mismatch: bool = False,
    model: str | None = None,
    detector: str | None = None,
    backend: str | None = None,
    weights: str | None = None,
    aligned: bool = False,
) -> Verification:
    """Are the faces of two images the same person?

    The decision threshold is one of (give at most one of ``threshold``, ``profile``, ``run``):
    ``threshold`` itself; a decision profile's threshold at ``fmr`` (``profile``: an eval run's
    ``profile.json`` or its folder), which also gives the calibrated ``llr`` and ``p_same``; an eval
    run's threshold at ``far`` (``run``: its folder, see :func:`load_run`); else the model's default
    (its registry record's ``verify_threshold``, measured on ORL). With a profile, ``model``,
    ``detector`` and ``backend`` default to the profile's, and a profile made for another model,
    weights, detector or pipeline setting is refused (``allow_profile_mismatch=True`` runs it anyway
    and says so in ``warnings``). Otherwise they default to ``arcface``, ``yunet`` and ``torch``.
    Other arguments as :func:`embed`.

    Raises:
        NoFaceError: an image holds no face.
        ValueError: no threshold is known for the model (pass ``threshold=``, ``profile=`` or
            ``run=``); more than one of them given; the profile has no threshold at ``fmr``.
        fetoolkit.decision.profile.ProfileMismatch: the profile was made for another set-up.
        fetoolkit.decision.profile.ProfileError: the profile file is missing or damaged.
    """
    from fetoolkit.models.registry import get_model_spec

    if sum(x is not None for x in (threshold, run, profile)) > 1:
        raise ValueError(
            "give threshold=, profile= (its threshold at fmr=) or run= (its threshold at far=): one, not both"
        )
    prof = None
    if profile is not None:
        from fetoolkit.decision.profile import load_profile

        prof = load_profile(profile)
        det = (prof.crops or {}).get("detector") or {}
        model = model or prof.model["name"]
        detector = detector or det.get("detector") or "yunet"
        backend = backend or prof.model.get("backend") or "torch"
    model, detector, backend = model or "arcface", detector or "yunet", backend or "torch"
    spec = get_model_spec(model)
    warnings: tuple[str, ...] = ()
    if prof is not None:
        emb = _embedder(model, backend, weights)
        warnings = prof.check(
            model=spec.name,
            weights_sha256=getattr(emb, "weights_sha256", None),
            crops=_profile_crops(detector, "most_confident", aligned),
            backend=backend,
            allow_mismatch=allow_profile_mismatch,
            allow_hint="allow_profile_mismatch=True",
        )
        entry = prof.threshold(fmr)
        t, source = (
            float(entry["threshold"]),
            f"profile {prof.profile_id} ({prof.path}): FMR {fmr:g} on {prof.data['data'].get('name')}",
        )
    elif threshold is not None:
        t, source = float(threshold), "given"
        if not -1.0 <= t <= 1.0:
            raise ValueError(f"threshold is a cosine, in [-1, 1]; got {t}")
    elif run is not None:
        chosen_run = load_run(run)
        chosen_run.check_model(spec.name, detector)
        chosen = chosen_run.threshold(far=far, n_boot=0)
        t, source = chosen.value, chosen.describe()
    else:
        if spec.verify_threshold is None or weights is not None:
            why = "for other weights than the record's" if weights is not None else f"for {spec.name}"
            raise ValueError(
                f"no default threshold is known {why}: pass threshold=<cosine>, profile=<an eval run's profile.json> "
                f"or run=<an eval run of this model> (python -m fetoolkit.eval model={model} ...) and far=<target FAR>"
            )
        t, source = spec.verify_threshold, f"the default of {spec.name} ({spec.verify_threshold_note})"
    kw: dict[str, Any] = {"model": model, "detector": detector, "backend": backend, "weights": weights}
    f1 = embed(image1, aligned=aligned, **kw)[0]
    f2 = embed(image2, aligned=aligned, **kw)[0]
    score = float(np.clip(f1.embedding @ f2.embedding, -1.0, 1.0))
    if prof is None:
        return Verification(score, score >= t, t, source, f1, f2)
    d = prof.decide(score, fmr=fmr, prior=prior, warnings=warnings)
    for w in warnings:
        log.warning("%s", w)
    return Verification(score, d.same, t, source, f1, f2, d.llr, d.p_same, d.prior, d.profile_id, d.warnings)


# --------------------------------------------------------------------------------------------
# A run's thresholds
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Threshold:
    """A decision threshold chosen on an eval run's pairs.

    Attributes:
        value: the cosine threshold (accept ``score >= value``).
        far: the target FAR it was chosen for.
        achieved_far: the FAR it gives on the run's impostor pairs (<= ``far``).
        frr: the FRR it gives on the run's genuine pairs.
        interval: 95% bootstrap interval of the threshold (pairs resampled within each class); None
            without resamples or with fewer than 10 impostor pairs allowed above it (too few for
            the interval to hold its coverage).
        run: the run's folder.
        dataset: the run's data set.
        n_genuine, n_impostor: the pairs it was chosen on.
    """

    value: float
    far: float
    achieved_far: float
    frr: float
    interval: tuple[float, float] | None
    run: str
    dataset: str
    n_genuine: int
    n_impostor: int

    def accept(self, scores: np.ndarray | float) -> np.ndarray:
        """bool, shaped like ``scores``: ``score >= value``."""
        return np.asarray(scores, np.float64) >= self.value

    def describe(self) -> str:
        """One line: where the threshold came from and how sure it is."""
        ci = "" if self.interval is None else f", 95% interval [{self.interval[0]:.4f}, {self.interval[1]:.4f}]"
        return (
            f"run {self.run}: FAR <= {self.far:g} on {self.dataset} ({self.n_impostor} impostor pairs; achieved "
            f"FAR {self.achieved_far:.4g}, FRR {self.frr:.4g}{ci})"
        )


class Run:
    """A finished eval run (its ``results.json`` and ``pairs.parquet``), to reuse its thresholds.

    Args:
        path: the run folder (or its ``results.json``).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        from fetoolkit.results import load_results

        p = Path(path)
        self.path = p.parent if p.name == "results.json" else p
        self.results: dict[str, Any] = load_results(self.path)
        self._pairs: tuple[np.ndarray, np.ndarray] | None = None

    def scores(self) -> tuple[np.ndarray, np.ndarray]:
        """The run's ROC pairs: (float64 scores ``[P]``, bool labels ``[P]``)."""
        if self._pairs is None:
            from fetoolkit.data.scores import load_scores

            s = load_scores(self.path).roc
            self._pairs = (s.scores, s.labels)
        return self._pairs

    def check_model(self, model: str, detector: str | None = None) -> None:
        """Refuse a run of another model (its threshold means nothing for this one); warn when its
        detector differs from ``detector``. Score runs (``dataset=scores``) name no model of ours."""
        if self.results.get("backend") == "scores":
            return
        ran = self.results.get("model")
        if ran is not None and ran != model:
            raise ValueError(f"{self.path} is a run of {ran}, not {model}: its thresholds do not carry over")
        det = (self.results.get("detector") or {}).get("name")
        if detector is not None and det is not None and det != detector:
            log.warning("%s ran with detector %s; these faces are found with %s", self.path, det, detector)

    def threshold(self, far: float = 1e-3, *, n_boot: int = 1000, seed: int = 0) -> Threshold:
        """The lowest threshold whose FAR on the run's pairs is <= ``far`` (the rule of
        ``tar_at_far_threshold`` in results.json), with its bootstrap interval (``n_boot=0``: none).

        Raises:
            ValueError: ``far`` is finer than the run's impostor count can measure.
        """
        from fetoolkit.metrics import verification as vm

        scores, labels = self.scores()
        t = vm.tar_at_far(scores, labels, far)
        if t.reason is not None:
            raise ValueError(f"{self.path}: {t.reason}; choose a coarser far=")
        n_above = int(np.floor((~labels).sum() * far))
        # a percentile bootstrap of a tail quantile under-covers with few impostors above it
        # (about 0.88 coverage at 2 of 2,000 in a simulation): no interval below 10
        interval = (
            vm.threshold_at_far_ci(scores, labels, far, n_boot=n_boot, seed=seed) if n_boot and n_above >= 10 else None
        )
        return Threshold(
            value=float(t.threshold),
            far=float(far),
            achieved_far=float(t.achieved_far),
            frr=float(1.0 - t.tar),
            interval=interval,
            run=str(self.path),
            dataset=str(self.results.get("dataset")),
            n_genuine=int(labels.sum()),
            n_impostor=int((~labels).sum()),
        )


def load_run(path: str | os.PathLike[str]) -> Run:
    """A finished eval run, to reuse its thresholds: ``load_run(dir).threshold(far=1e-3)``."""
    return Run(path)
