"""The model records (``ModelSpec``) and their table; the modules of ``fetoolkit.models.zoo``
register into it on import. No torch, no lookups (see ``registry``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from fetoolkit.models.weights import WeightsCfg
from fetoolkit.types import InputContract


@dataclass(frozen=True)
class ModelSpec:
    """A registered model.

    Attributes:
        name: registry name, e.g. ``"arcface_mbf.sirius"``.
        arch: architecture name (part of cache keys and messages), or ``None`` for ONNX-only
            models.
        builder: ``"module:function"`` building an untrained module of ``arch`` from keyword
            arguments (imports torch when called); ``None`` for ONNX-only models.
        weights: the default weights record, or ``None`` when the user must supply them.
        contract: the input contract the weights were trained with.
        description: one line for listings.
        aliases: other names that resolve to this record (``"arcface"``).
        vendor_format: format of the vendor's original file (``tflite``/``onnx``), which the
            parity job runs beside our own export; ``None`` when there is no original here.
        releases: named upstream releases (name -> weights record) the user can supply.
        release: the tag of ``releases`` this record was resolved to (``get_model_spec
            ("arcface_r50.ms1mv3")``), else ``None``.
        quality_rms_ref: median per-component RMS of the raw embeddings on clean ORL (``make
            eval``'s ``results.json``: ``quality.norms.rms_median``), the scale ``face_quality``
            maps to 0.76; ``None`` (no weights measured here): ``face_quality``'s default.
        verify_threshold: the cosine threshold ``fetoolkit.verify`` uses when given none, measured
            here on real faces (``verify_threshold_note`` says where and at what FAR/FRR); ``None``:
            the caller must give one.
        verify_threshold_note: where ``verify_threshold`` was measured.
    """

    name: str
    arch: str | None
    weights: WeightsCfg | None
    contract: InputContract
    description: str = ""
    aliases: tuple[str, ...] = ()
    vendor_format: str | None = None
    releases: dict[str, WeightsCfg] = field(default_factory=dict)
    quality_rms_ref: float | None = None
    builder: str | None = None
    release: str | None = None
    verify_threshold: float | None = None
    verify_threshold_note: str = ""


_MODELS: dict[str, ModelSpec] = {}
_ALIASES: dict[str, str] = {}


def register_model(spec: ModelSpec) -> ModelSpec:
    """Add a model record; names and aliases must be unique, and a torch model names its builder."""
    if (spec.arch is None) != (spec.builder is None):
        raise ValueError(f"model {spec.name!r}: give both arch and builder, or neither (ONNX-only)")
    for key in (spec.name, *spec.aliases):
        if key in _MODELS or key in _ALIASES:
            raise ValueError(f"model name {key!r} is registered twice")
    _MODELS[spec.name] = spec
    for alias in spec.aliases:
        _ALIASES[alias] = spec.name
    return spec
