"""Named models: one record per model, looked up by name everywhere.

A record (``ModelSpec``) says which architecture to build (``arch``, a name in the
architecture registry; ``None`` for an ONNX-only model), where its default weights come from
and the model's input contract. Configs, the service and the tests name models by these
names; ``list_models()`` is what tests parametrise over.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fetoolkit.models.weights import WeightsCfg
from fetoolkit.types import InputContract

if TYPE_CHECKING:
    import torch.nn as nn

#: Modules whose import registers architectures (they import torch: loaded only by ``build_arch``).
ARCH_MODULES = ("fetoolkit.models.iresnet", "fetoolkit.models.mobilefacenet")


@dataclass(frozen=True)
class ModelSpec:
    """A registered model.

    Attributes:
        name: registry name, e.g. ``"arcface_mbf.sirius"``.
        arch: architecture name (see ``register_arch``), or ``None`` for ONNX-only models.
        weights: the default weights record, or ``None`` when the user must supply them.
        contract: the input contract the weights were trained with.
        description: one line for listings.
        aliases: other names that resolve to this record (``"arcface"``).
        vendor_format: format of the vendor's original file (``tflite``/``onnx``), which the
            parity job runs beside our own export; ``None`` when there is no original here.
        releases: named upstream releases (name -> weights record) the user can supply.
        quality_rms_ref: median per-component RMS of the raw embeddings on clean ORL (``make
            eval``'s ``results.json``: ``quality.norms.rms_median``), the scale ``face_quality``
            maps to 0.76; ``None`` (no weights measured here): ``face_quality``'s default.
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


_MODELS: dict[str, ModelSpec] = {}
_ALIASES: dict[str, str] = {}
_ARCHS: dict[str, Callable[[], nn.Module]] = {}


def register_arch(name: str) -> Callable[[Callable[[], nn.Module]], Callable[[], nn.Module]]:
    """Decorator: register a zero-argument builder of an ``nn.Module`` under ``name``."""

    def wrap(fn: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
        if name in _ARCHS:
            raise ValueError(f"architecture {name!r} is registered twice")
        _ARCHS[name] = fn
        return fn

    return wrap


def build_arch(name: str) -> nn.Module:
    """Build an untrained module of a registered architecture (imports torch)."""
    for module in ARCH_MODULES:
        importlib.import_module(module)
    try:
        return _ARCHS[name]()
    except KeyError:
        raise KeyError(f"unknown architecture {name!r}; known: {sorted(_ARCHS)}") from None


def register_model(spec: ModelSpec) -> ModelSpec:
    """Add a model record; names and aliases must be unique."""
    for key in (spec.name, *spec.aliases):
        if key in _MODELS or key in _ALIASES:
            raise ValueError(f"model name {key!r} is registered twice")
    _MODELS[spec.name] = spec
    for alias in spec.aliases:
        _ALIASES[alias] = spec.name
    return spec


def list_models() -> list[str]:
    """Registry names of every model (aliases excluded), sorted."""
    _ensure_loaded()
    return sorted(_MODELS)


def get_model_spec(name: str) -> ModelSpec:
    """Resolve a name or alias to its record; an unknown name lists the known ones."""
    _ensure_loaded()
    key = _ALIASES.get(name, name)
    try:
        return _MODELS[key]
    except KeyError:
        known = sorted([*_MODELS, *_ALIASES])
        raise KeyError(f"unknown model {name!r}; known models: {', '.join(known)}") from None


def _ensure_loaded() -> None:
    """Import the module whose import registers the model records (no torch)."""
    import fetoolkit.models.zoo  # noqa: F401  (registers on import)
