"""Detector records, without torch: what a registered detector is (``DetectorSpec``) and the table
of them. The records themselves live in :mod:`fetoolkit.detect.zoo`; lookups in
:mod:`fetoolkit.detect.registry`."""

from __future__ import annotations

from dataclasses import dataclass, field

from fetoolkit.detect.base import DetectorCfg
from fetoolkit.detect.single_shot import SingleShotCfg
from fetoolkit.models.weights import WeightsCfg

AnyDetectorCfg = DetectorCfg | SingleShotCfg


@dataclass(frozen=True)
class DetectorSpec:
    """One registered detector.

    Attributes:
        name: registry name (``detector=<name>``).
        description: one line for listings.
        weights: where the net comes from (None: MTCNN, whose nets ship with facenet-pytorch).
        defaults: the detector's own settings.
        contract: the file's input and output contract, in words.
        license: the weights' licence.
    """

    name: str
    description: str
    weights: WeightsCfg | None
    defaults: AnyDetectorCfg
    contract: str
    license: str
    aliases: tuple[str, ...] = field(default_factory=tuple)


_DETECTORS: dict[str, DetectorSpec] = {}


def register_detector(spec: DetectorSpec) -> DetectorSpec:
    """Add a record (a name already taken is an error)."""
    for n in (spec.name, *spec.aliases):
        if n in _DETECTORS:
            raise ValueError(f"detector {n!r} is registered twice")
        _DETECTORS[n] = spec
    return spec


def registered() -> dict[str, DetectorSpec]:
    """Every record by name and alias (filled when :mod:`fetoolkit.detect.zoo` is imported)."""
    return _DETECTORS
