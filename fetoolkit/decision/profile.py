"""The decision profile: what a score means for one model, detector and pipeline, in one file.

Every eval run writes ``profile.json`` beside ``results.json``. It holds what a decision needs and
what it is valid for:

* **valid for** (checked by every consumer): the model's registry name and weights sha256, the
  detector and every pipeline setting that changes the crops (:func:`crop_settings`); the backend
  and the runtime file's sha256 are recorded and a different backend is said, not refused (the
  torch and ONNX embeddings agree to cosine >= 0.9999);
* **the calibration map** (:class:`fetoolkit.metrics.calibration.Calibration`) and its prior, with
  the out-of-fold figures that judge it;
* **thresholds** at the FMR targets the data could measure, each with its interval and the FMR and
  FNMR it achieved on the data it came from (the numbers of ``results.json`` ``thresholds.far``);
* **provenance**: the data set's name, the sha256 of its pair list, subject and pair counts, the CPU;
* the dev **score distribution** (decile edges of genuine and impostor scores), for drift checks.

``profile_id`` is the first 16 hex digits of the sha256 of the canonical JSON of everything else:
two profiles with one id say the same thing. Consumers: :func:`fetoolkit.verify` (``profile=``),
``python -m fetoolkit.verify ... profile=``, and the service (``PROFILE_PATH``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fetoolkit.data.scores import PairScores
from fetoolkit.jsonutil import jsonable
from fetoolkit.metrics.calibration import Calibration, llr_to_p

__all__ = [
    "PROFILE_FILE",
    "PROFILE_SCHEMA_VERSION",
    "Decision",
    "DecisionProfile",
    "ProfileError",
    "ProfileMismatch",
    "build_profile",
    "crop_settings",
    "load_profile",
    "pair_list_sha256",
    "run_profile",
    "write_profile",
]

PROFILE_FILE = "profile.json"
#: 1: the first profile schema.
PROFILE_SCHEMA_VERSION = 1
#: Detector settings that do not change which face is kept or where it is cut: not compared.
_UNCOMPARED = {"max_faces", "onnxruntime"}


class ProfileError(ValueError):
    """A profile file that cannot be used (missing, not JSON, another schema, a damaged id)."""


class ProfileMismatch(ValueError):
    """A profile made for another model, weights, detector or pipeline setting.

    Attributes:
        differences: one line per difference, ``what: profile X, here Y``.
    """

    def __init__(self, path: str, differences: list[str], allow_hint: str = "") -> None:
        self.differences = differences
        how = f" ({allow_hint})" if allow_hint else ""
        super().__init__(
            f"decision profile {path} was made for another set-up; its scores mean something else here: "
            + "; ".join(differences)
            + ". Make a profile for this set-up (python -m fetoolkit.eval ... writes profile.json), "
            + f"or run anyway{how}: every answer then says so"
        )


def crop_settings(detector: dict[str, Any] | None, pipeline: dict[str, Any]) -> dict[str, Any]:
    """The settings that change which face is kept and how it is cut, in one comparable dict.

    Args:
        detector: :func:`fetoolkit.pipeline.detector_settings` of the detector (MTCNN's lack a name:
            it is added); None when no detection runs (aligned crops).
        pipeline: ``align``, ``select``, ``detect_max_side``, ``swap_rb``, ``degrade``, ``flip_test``
            (missing keys take the pipeline defaults). ``detect_max_side`` counts for MTCNN only (the
            single-shot detectors scale by their own ``max_side``).
    """
    det = None
    if detector is not None:
        det = {k: v for k, v in detector.items() if k not in _UNCOMPARED | {"name", "detector"}}
        det["detector"] = detector.get("detector") or detector.get("name") or "mtcnn"
    mtcnn = det is not None and det["detector"] == "mtcnn"
    return {
        "detector": det,
        "align": bool(pipeline.get("align", True)),
        "select": str(pipeline.get("select", "most_confident")),
        "detect_max_side": pipeline.get("detect_max_side") if mtcnn else None,
        "swap_rb": bool(pipeline.get("swap_rb", False)),
        "degrade": float(pipeline.get("degrade", 0.0) or 0.0),
        "flip_test": bool(pipeline.get("flip_test") or False),
    }


def pair_list_sha256(item_a: np.ndarray, item_b: np.ndarray, labels: np.ndarray) -> str:
    """sha256 of a pair list: one ``item_a<TAB>item_b<TAB>0|1`` line per pair, items relative to
    their common folder (so the same data set under another root gives the same digest)."""
    items = [str(x) for x in np.concatenate([item_a, item_b])]
    try:
        root = os.path.commonpath(items) if all(os.path.isabs(x) for x in items) else ""
    except ValueError:
        root = ""
    rel = [os.path.relpath(x, root) if root else x for x in items]
    n = len(item_a)
    h = hashlib.sha256()
    for a, b, y in zip(rel[:n], rel[n:], np.asarray(labels, bool)):
        h.update(f"{a}\t{b}\t{int(y)}\n".encode())
    return h.hexdigest()


def _canonical(d: dict[str, Any]) -> str:
    return json.dumps(jsonable(d), sort_keys=True, separators=(",", ":"), allow_nan=False)


def _profile_id(d: dict[str, Any]) -> str:
    return hashlib.sha256(_canonical({k: v for k, v in d.items() if k != "profile_id"}).encode()).hexdigest()[:16]


def build_profile(
    *,
    model: dict[str, Any],
    crops: dict[str, Any] | None,
    calibration: dict[str, Any],
    thresholds: dict[str, Any],
    data: dict[str, Any],
    scores: tuple[np.ndarray, np.ndarray],
    machine: dict[str, Any],
) -> dict[str, Any]:
    """The profile as a JSON-ready dict, ``profile_id`` included.

    Args:
        model: ``name``, ``weights_sha256``, ``runtime_sha256``, ``backend``, ``contract``.
        crops: :func:`crop_settings` (None: unknown, a score file).
        calibration: ``results.json`` ``calibration`` (its ``map``, ``method``, ``prior``, figures).
        thresholds: ``results.json`` ``thresholds.far`` (far key -> threshold, achieved_far, frr, threshold_ci).
        data: ``name``, ``pairs_sha256``, ``n_subjects``, ``n_genuine``, ``n_impostor``.
        scores: float64 genuine and impostor scores of the pairs the profile describes.
        machine: ``results.json`` ``machine``.
    """
    gen, imp = (np.asarray(x, np.float64) for x in scores)
    q = np.linspace(0.0, 1.0, 11)
    cal = {k: calibration.get(k) for k in ("method", "fit_on", "prior", "cllr", "cllr_min", "ece", "brier", "log_loss")}
    out: dict[str, Any] = {
        "schema": "fetoolkit.profile",
        "schema_version": PROFILE_SCHEMA_VERSION,
        "model": model,
        "crops": crops,
        "calibration": {**cal, "map": calibration["map"]},
        "thresholds": {
            k: {
                "fmr": float(k),
                "threshold": v.get("threshold"),
                "interval": v.get("threshold_ci"),
                "achieved_fmr": v.get("achieved_far"),
                "fnmr": v.get("frr"),
            }
            for k, v in thresholds.items()
            if v.get("threshold") is not None
        },
        "accept": "score >= threshold",
        "data": data,
        "scores": {
            "deciles": [float(x) for x in q],
            "genuine": [float(x) for x in np.quantile(gen, q)],
            "impostor": [float(x) for x in np.quantile(imp, q)],
        },
        "machine": {k: machine[k] for k in ("cpu", "vendor", "family", "model", "isa", "int8_kernels") if k in machine},
    }
    out["profile_id"] = _profile_id(out)
    return out


def write_profile(path: str | Path, profile: dict[str, Any]) -> Path:
    """Write ``profile`` as strict JSON (``path``: a file, or a folder to hold ``profile.json``)."""
    p = Path(path)
    p = p / PROFILE_FILE if p.is_dir() else p
    p.write_text(json.dumps(jsonable(profile), indent=2, allow_nan=False) + "\n")
    return p


@dataclass(frozen=True)
class Decision:
    """What a profile says about one score.

    Attributes:
        score: the cosine.
        llr: natural-log likelihood ratio of "same identity".
        p_same: probability of "same identity" at ``prior``.
        prior: the prior used.
        same: ``score >= threshold``.
        threshold: the profile's threshold at ``fmr``.
        fmr: the FMR target of the threshold.
        profile_id: the profile's id.
        warnings: what the profile does not vouch for here (a different backend, or differences
            run anyway with ``allow_mismatch``).
    """

    score: float
    llr: float
    p_same: float
    prior: float
    same: bool
    threshold: float
    fmr: float
    profile_id: str
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class DecisionProfile:
    """A loaded ``profile.json`` (see the module docstring).

    Attributes:
        data: the file's content.
        calibration: its score -> LLR map.
        path: where it was read from.
    """

    data: dict[str, Any]
    calibration: Calibration
    path: str

    @property
    def profile_id(self) -> str:
        """The profile's id (16 hex digits)."""
        return str(self.data["profile_id"])

    @property
    def model(self) -> dict[str, Any]:
        """``name``, ``weights_sha256``, ``runtime_sha256``, ``backend``, ``contract``."""
        return dict(self.data["model"])

    @property
    def crops(self) -> dict[str, Any] | None:
        """The detector and pipeline settings the profile is valid for (:func:`crop_settings`; None:
        unknown, a profile of a score file)."""
        c = self.data["crops"]
        return None if c is None else dict(c)

    @property
    def prior(self) -> float:
        """The prior of ``p_same`` the profile was judged at."""
        return float(self.data["calibration"]["prior"])

    @property
    def fmrs(self) -> list[float]:
        """The FMR targets the profile has thresholds for, coarsest first."""
        return sorted((float(v["fmr"]) for v in self.data["thresholds"].values()), reverse=True)

    def threshold(self, fmr: float) -> dict[str, Any]:
        """The threshold entry at ``fmr`` (``fmr``, ``threshold``, ``interval``, ``achieved_fmr``, ``fnmr``).

        Raises:
            ValueError: the profile has no threshold at that FMR (the message lists those it has).
        """
        for v in self.data["thresholds"].values():
            if math.isclose(float(v["fmr"]), float(fmr), rel_tol=1e-9):
                return dict(v)
        have = ", ".join(f"{f:g}" for f in self.fmrs)
        raise ValueError(f"profile {self.path} has no threshold at FMR {fmr:g}; it has {have}")

    def differences(
        self, *, model: str, weights_sha256: str | None, crops: dict[str, Any], backend: str | None = None
    ) -> tuple[list[str], list[str]]:
        """(refusing differences, notes) between the profile and a set-up, one line each."""
        m, refuse, notes = self.data["model"], [], []
        if m.get("name") != model:
            refuse.append(f"model: profile {m.get('name')}, here {model}")
        if m.get("weights_sha256") != weights_sha256:
            refuse.append(f"weights sha256: profile {m.get('weights_sha256')}, here {weights_sha256}")
        mine = self.data["crops"]
        if mine is None:
            refuse.append("detector and pipeline: unknown (a profile of a score file), here set")
            mine = crops
        for k in sorted(set(mine) | set(crops)):
            if k == "detector" and mine.get(k) and crops.get(k):
                a, b = mine[k], crops[k]
                if a["detector"] != b["detector"]:
                    refuse.append(f"detector: profile {a['detector']}, here {b['detector']}")
                    continue
                for dk in sorted(set(a) | set(b)):
                    if a.get(dk) != b.get(dk):
                        refuse.append(f"detector {dk}: profile {a.get(dk)!r}, here {b.get(dk)!r}")
            elif mine.get(k) != crops.get(k):
                refuse.append(f"pipeline {k}: profile {mine.get(k)!r}, here {crops.get(k)!r}")
        if backend is not None and m.get("backend") not in (None, backend):
            notes.append(
                f"backend: profile {m.get('backend')}, here {backend} "
                "(same weights; the backends' embeddings agree to cosine >= 0.9999)"
            )
        return refuse, notes

    def check(
        self,
        *,
        model: str,
        weights_sha256: str | None,
        crops: dict[str, Any],
        backend: str | None = None,
        allow_mismatch: bool = False,
        allow_hint: str = "",
    ) -> tuple[str, ...]:
        """Refuse a set-up the profile was not made for; return the warnings every answer must carry.

        ``allow_hint``: how the caller's user runs anyway (named in the refusal).

        Raises:
            ProfileMismatch: a difference in model, weights, detector or pipeline (unless ``allow_mismatch``).
        """
        refuse, notes = self.differences(model=model, weights_sha256=weights_sha256, crops=crops, backend=backend)
        if refuse and not allow_mismatch:
            raise ProfileMismatch(self.path, refuse, allow_hint)
        return tuple(f"profile run anyway despite: {r}" for r in refuse) + tuple(notes)

    def llr(self, scores: np.ndarray | float) -> np.ndarray:
        """float64 LLRs of ``scores`` (the profile's map)."""
        return self.calibration.llr(scores)

    def decide(
        self, score: float, *, fmr: float = 1e-3, prior: float | None = None, warnings: tuple[str, ...] = ()
    ) -> Decision:
        """The profile's answer for one cosine: LLR, ``p_same`` at ``prior`` (default the profile's),
        and the decision at the threshold of ``fmr``."""
        pr = self.prior if prior is None else float(prior)
        llr = float(self.llr(score))
        t = float(self.threshold(fmr)["threshold"])
        return Decision(
            score=float(score),
            llr=llr,
            p_same=float(llr_to_p(llr, pr)),
            prior=pr,
            same=bool(score >= t),
            threshold=t,
            fmr=float(fmr),
            profile_id=self.profile_id,
            warnings=tuple(warnings),
        )


def load_profile(path: str | os.PathLike[str]) -> DecisionProfile:
    """Read and check a profile (a ``profile.json`` or the run folder holding one).

    Raises:
        ProfileError: missing, not JSON, another schema, a newer version, or an id that does not
            match the content (the file was edited or damaged); the message names the file.
    """
    p = Path(path)
    p = p / PROFILE_FILE if p.is_dir() else p
    try:
        d = json.loads(p.read_text())
    except FileNotFoundError:
        raise ProfileError(
            f"{p}: no such file; an eval run writes profile.json (python -m fetoolkit.eval ...)"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ProfileError(f"{p}: not readable JSON ({e})") from None
    if not isinstance(d, dict) or d.get("schema") != "fetoolkit.profile":
        raise ProfileError(f'{p}: not a decision profile (no "schema": "fetoolkit.profile")')
    v = d.get("schema_version")
    if not isinstance(v, int) or v > PROFILE_SCHEMA_VERSION:
        raise ProfileError(f"{p}: schema_version {v!r}; this fetoolkit reads up to {PROFILE_SCHEMA_VERSION}")
    if d.get("profile_id") != _profile_id(d):
        raise ProfileError(f"{p}: profile_id {d.get('profile_id')!r} does not match the content (edited or damaged)")
    try:
        cal = Calibration.from_dict(d["calibration"]["map"])
        for k in ("model", "thresholds"):
            if not isinstance(d[k], dict):
                raise KeyError(k)
        if d["crops"] is not None and not isinstance(d["crops"], dict):
            raise KeyError("crops")
        float(d["calibration"]["prior"])
    except (KeyError, TypeError, ValueError) as e:
        raise ProfileError(f"{p}: incomplete profile ({type(e).__name__}: {e})") from None
    return DecisionProfile(d, cal, str(p))


def run_profile(summary: dict[str, Any], pairs: PairScores, crops: dict[str, Any] | None) -> dict[str, Any]:
    """The profile of a finished evaluation: ``summary`` (its ``results.json``, with ``calibration``),
    the comparisons it scored, and the crop settings it ran with (:func:`crop_settings`; None for a
    score file, which names no detector or pipeline: every consumer then refuses it unless told to
    run anyway)."""
    n_subjects = None
    if pairs.has_subjects:
        n_subjects = len({str(x) for x in pairs.subject_a} | {str(x) for x in pairs.subject_b})  # type: ignore[union-attr]
    pairs_sha = None
    if pairs.item_a is not None and pairs.item_b is not None:
        pairs_sha = pair_list_sha256(pairs.item_a, pairs.item_b, pairs.labels)
    y = pairs.labels
    return build_profile(
        model={"name": summary["model"]}
        | {k: summary.get(k) for k in ("weights_sha256", "runtime_sha256", "backend", "contract")},
        crops=crops,
        calibration=summary["calibration"],
        thresholds=(summary.get("thresholds") or {}).get("far") or {},
        data={
            "name": summary.get("dataset"),
            "pairs_sha256": pairs_sha,
            "n_subjects": n_subjects,
            "n_images": summary.get("n_images"),
            "n_genuine": int(y.sum()),
            "n_impostor": int((~y).sum()),
        },
        scores=(pairs.scores[y], pairs.scores[~y]),
        machine=summary.get("machine") or {},
    )
