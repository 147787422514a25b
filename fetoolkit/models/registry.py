"""Named models: one record per model, looked up by name everywhere.

A record (``ModelSpec``) says which architecture to build (``arch``, a name in the
architecture registry; ``None`` for an ONNX-only model), where its default weights come from
and the model's input contract. Configs, the service and the tests name models by these
names; ``list_models()`` is what tests parametrise over.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from fetoolkit.models.records import _ALIASES, _MODELS, ModelSpec, register_model  # noqa: F401  (re-exported)

if TYPE_CHECKING:
    import torch.nn as nn

#: Modules whose import registers architectures (they import torch: loaded only by ``build_arch``).
ARCH_MODULES = ("fetoolkit.models.iresnet", "fetoolkit.models.mobilefacenet")


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
