"""The service's decision profile (``PROFILE_PATH``): checked at start-up, applied to every verification.

A decision profile (:mod:`fetoolkit.decision.profile`, the ``profile.json`` of an eval run) says
what a cosine means for one model, weights, detector and pipeline. :func:`load_service_profile`
reads the one the settings name and checks it against what this service runs, *before* the model
loads: the registry name of ``settings.model``, the weights' sha256 (of ``MODEL_PATH``, or the
registry record's), and the crop settings of its detector and face pipeline. A difference refuses
the start (``ProfileMismatch``, one line naming each) unless ``profile_allow_mismatch`` is set;
the differences then travel in every ``/api/verify`` answer as ``warnings``.

:class:`ServiceProfile` turns a verification's score into its answer: ``llr``, ``p_same`` at the
profile's prior (or the request's), and the decision at the profile's threshold for the FMR target
(the request's ``fmr``, else ``verify.fmr``, else 1e-3 when the profile has it, else its finest).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fetoolkit.serve.errors import InvalidInput
from fetoolkit.serve.settings import ServeSettings

if TYPE_CHECKING:
    from fetoolkit.decision.profile import DecisionProfile

log = logging.getLogger(__name__)

#: The FMR target decided at when neither the request nor ``verify.fmr`` names one (if the profile has it).
DEFAULT_FMR = 1e-3
#: Said in every answer about aligned input: no detection ran, so the profile's crops are not these.
ALIGNED_WARNING = (
    "aligned input: no detection ran; the profile vouches for crops cut by its detector and pipeline, "
    "and scores of other crops may mean something else"
)


def service_pipeline(settings: ServeSettings) -> dict[str, Any]:
    """The pipeline settings of :func:`fetoolkit.decision.profile.crop_settings` for this service:
    what ``EmbeddingService.crop`` runs (``settings.pipeline`` through ``crop_face``: aligned, the
    configured face selection and ``detect_max_side``, no colour swap, no degradation, no flip test)."""
    p = settings.pipeline
    return {
        "align": p.align,
        "select": p.select,
        "detect_max_side": p.detect_max_side,
        "swap_rb": p.swap_rb,
        "degrade": p.degrade,
        "flip_test": bool(p.flip_test),
    }


def service_setup(settings: ServeSettings) -> dict[str, Any]:
    """What this service runs, as :meth:`DecisionProfile.check` compares it, without loading the model.

    Returns:
        ``model`` (registry name), ``weights_sha256`` (of ``MODEL_PATH``, else the registry record's;
        the default weights are fetched when the record gives no digest), ``crops``, ``backend``.

    Raises:
        ValueError: the model is not in the registry, or its weights cannot be found or read.
    """
    from fetoolkit.decision.profile import crop_settings
    from fetoolkit.models.factory import resolve_weights
    from fetoolkit.models.registry import get_model_spec
    from fetoolkit.pipeline import detector_settings

    try:
        spec = get_model_spec(settings.model)
        _, sha = resolve_weights(spec, settings.weights)  # the digest create_embedder gives the embedder
    except (LookupError, OSError, ValueError) as e:
        raise ValueError(
            f"decision profile {settings.profile_path}: cannot check it against model {settings.model!r}: {e}"
        ) from None
    return {
        "model": spec.name,
        "weights_sha256": sha,
        "crops": crop_settings(detector_settings(settings.detector), service_pipeline(settings)),
        "backend": settings.backend,
    }


@dataclass(frozen=True)
class ServiceProfile:
    """A decision profile checked against this service.

    Attributes:
        profile: the loaded profile.
        fmr: the FMR target answers decide at unless the request names one.
        warnings: what the profile does not vouch for here (a different backend; differences run
            anyway with ``profile_allow_mismatch``); every ``/api/verify`` answer carries them.
    """

    profile: DecisionProfile
    fmr: float
    warnings: tuple[str, ...] = ()

    @property
    def profile_id(self) -> str:
        """The profile's id."""
        return self.profile.profile_id

    def request_fmr(self, fmr: float | None) -> float:
        """The FMR target of a request (its own, else the default), checked before any work.

        Raises:
            InvalidInput: the profile has no threshold at that FMR (the message and ``details``
                list those it has).
        """
        if fmr is None:
            return self.fmr
        try:
            return float(self.profile.threshold(fmr)["fmr"])
        except ValueError:  # the profile's own message names its file: not for the client
            fmrs = self.profile.fmrs
            raise InvalidInput(
                f"the decision profile {self.profile_id} has no threshold at FMR {fmr:g}; it has "
                + ", ".join(f"{f:g}" for f in fmrs),
                details={"fmrs": fmrs},
            ) from None

    def verification(
        self,
        score: float,
        *,
        fmr: float | None = None,
        prior: float | None = None,
        threshold: float | None = None,
        aligned: bool = False,
    ) -> dict[str, Any]:
        """The profile's fields of a ``/api/verify`` answer for ``score``.

        Args:
            score: the cosine.
            fmr: the request's FMR target (None: the default); ignored when ``threshold`` is given.
            prior: the request's prior of ``p_same`` (None: the profile's).
            threshold: the request's own threshold: it decides (``threshold_source`` ``request``);
                ``llr`` and ``p_same`` are still the profile's.
            aligned: the images were aligned crops (no detection ran): said in ``warnings``.
        """
        warnings = self.warnings + ((ALIGNED_WARNING,) if aligned else ())
        d = self.profile.decide(score, fmr=self.request_fmr(fmr), prior=prior, warnings=warnings)
        if threshold is None:
            decided = {"threshold": d.threshold, "threshold_source": "profile", "is_same_person": d.same, "fmr": d.fmr}
        else:
            t = float(threshold)
            decided = {"threshold": t, "threshold_source": "request", "is_same_person": bool(score >= t), "fmr": None}
        return {
            **decided,
            "llr": d.llr,
            "p_same": d.p_same,
            "prior": d.prior,
            "profile_id": d.profile_id,
            "warnings": list(d.warnings),
        }

    def status(self, details: bool = True) -> dict[str, Any]:
        """The ``profile`` part of ``/api/health`` (``details=False``: the file's name, not its path)."""
        p = self.profile
        return {
            "profile_id": p.profile_id,
            "path": p.path if details else Path(p.path).name,
            "model": p.model.get("name"),
            "fmr": self.fmr,
            "threshold": float(p.threshold(self.fmr)["threshold"]),
            "fmrs": p.fmrs,
            "prior": p.prior,
            "warnings": list(self.warnings),
        }


def default_fmr(profile: DecisionProfile, configured: float | None) -> float:
    """``configured`` (``verify.fmr``) when set, else 1e-3 when the profile has it, else its finest.

    Raises:
        ValueError: the profile has no threshold at ``configured``, or none at all.
    """
    fmrs = profile.fmrs
    if not fmrs:
        raise ValueError(f"decision profile {profile.path} has no threshold at any FMR target")
    if configured is not None:
        return float(profile.threshold(configured)["fmr"])  # ValueError names those it has
    return next((f for f in fmrs if math.isclose(f, DEFAULT_FMR, rel_tol=1e-9)), fmrs[-1])


def load_service_profile(settings: ServeSettings) -> ServiceProfile | None:
    """The profile ``settings.profile_path`` names, checked against the service; None without one.

    Raises:
        fetoolkit.decision.profile.ProfileError: the file is missing, not a profile, or damaged (its
            id does not match its content); the message names the file.
        fetoolkit.decision.profile.ProfileMismatch: made for another model, weights, detector or
            pipeline setting (unless ``settings.profile_allow_mismatch``); the message names each.
        ValueError: ``verify.fmr`` names an FMR the profile lacks, or the model cannot be resolved.
    """
    if settings.profile_path is None:
        return None
    from fetoolkit.decision.profile import load_profile

    profile = load_profile(settings.profile_path)
    warnings = profile.check(
        **service_setup(settings),
        allow_mismatch=settings.profile_allow_mismatch,
        allow_hint="PROFILE_ALLOW_MISMATCH=1 or verify.profile_allow_mismatch=true",
    )
    sp = ServiceProfile(profile, default_fmr(profile, settings.verify_fmr), warnings)
    log.info(
        "decision profile %s (%s, %s on %s): /api/verify decides at FMR %g (threshold %.4f), p_same at prior %.4g",
        profile.profile_id,
        profile.path,
        profile.model.get("name"),
        (profile.data.get("data") or {}).get("name"),
        sp.fmr,
        profile.threshold(sp.fmr)["threshold"],
        profile.prior,
    )
    for w in warnings:
        log.warning("decision profile %s: %s", profile.profile_id, w)
    return sp


__all__ = [
    "ALIGNED_WARNING",
    "DEFAULT_FMR",
    "ServiceProfile",
    "default_fmr",
    "load_service_profile",
    "service_pipeline",
    "service_setup",
]
