"""Named models: one record per model, looked up by name everywhere.

A record (``ModelSpec``) says which architecture to build (``arch`` and its ``builder``, a
``"module:function"``; ``None`` for an ONNX-only model), where its default weights come from,
its known releases and the model's input contract. Configs, the service and the tests name
models by these names; ``list_models()`` is what ``tests/test_registry.py`` parametrises over.

The records live in the modules of ``fetoolkit.models.zoo``, all imported on the first lookup
(no list to keep in step, no torch). A builder's module (which imports torch) is imported only
by ``build_arch``. ``name.tag`` resolves a release: ``get_model_spec("arcface_r50.ms1mv3")`` is
the ``arcface_r50`` record with that release's weights.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from typing import TYPE_CHECKING, Any

from fetoolkit.models.records import _ALIASES, _MODELS, ModelSpec, register_model

if TYPE_CHECKING:
    import torch.nn as nn

__all__ = ["ModelSpec", "build_arch", "get_model_spec", "list_models", "list_releases", "register_model"]


def build_arch(name: str, **kwargs: Any) -> nn.Module:
    """Build an untrained module of architecture ``name`` (imports its builder's module, and torch).

    Args:
        name: an ``arch`` of a registered record (``"iresnet50"``, ``"mobilefacenet_sirius"``).
        kwargs: passed to the builder (``num_features=``, ``dropout=`` for IResNets; fields of
            ``MobileFaceNetConfig`` for MobileFaceNets).
    """
    _ensure_loaded()
    builders = {s.arch: s.builder for s in _MODELS.values() if s.arch is not None}
    if name not in builders:
        raise KeyError(f"unknown architecture {name!r}; known: {sorted(builders)}")
    module_name, _, func = str(builders[name]).partition(":")
    return getattr(importlib.import_module(module_name), func)(**kwargs)


def list_models(*, aliases: bool = False) -> list[str]:
    """Registry names of every model (release tags excluded), sorted; ``aliases=True`` adds the
    aliases (``arcface``), which every function taking a model name accepts too."""
    _ensure_loaded()
    return sorted({*_MODELS, *_ALIASES}) if aliases else sorted(_MODELS)


def list_releases() -> list[str]:
    """Every ``name.tag`` that ``get_model_spec`` resolves to a known release, sorted."""
    _ensure_loaded()
    return sorted(f"{s.name}.{tag}" for s in _MODELS.values() for tag in s.releases)


def get_model_spec(name: str) -> ModelSpec:
    """Resolve a name, alias or ``name.tag`` release to its record; an unknown name lists the known ones."""
    _ensure_loaded()
    key = _ALIASES.get(name, name)
    if key in _MODELS:
        return _MODELS[key]
    base, _, tag = key.rpartition(".")
    spec = _MODELS.get(_ALIASES.get(base, base))
    if spec is not None and tag in spec.releases:
        return dataclasses.replace(spec, weights=spec.releases[tag], release=tag)
    if spec is not None:
        tags = ", ".join(sorted(spec.releases)) or "none"
        raise KeyError(f"model {spec.name!r} has no release {tag!r}; its releases: {tags}")
    known = sorted([*_MODELS, *_ALIASES])
    raise KeyError(f"unknown model {name!r}; known models: {', '.join(known)}") from None


def _ensure_loaded() -> None:
    """Import every module of ``fetoolkit.models.zoo`` (each registers its records; no torch)."""
    import fetoolkit.models.zoo as zoo

    for info in pkgutil.iter_modules(zoo.__path__):
        importlib.import_module(f"{zoo.__name__}.{info.name}")
