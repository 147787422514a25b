"""Hydra config nodes -> the dataclasses the library takes: the one place the jobs convert them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from fetoolkit.detect.registry import AnyDetectorCfg, detector_cfg_for
from fetoolkit.pipeline import PipelineCfg

#: The Hydra configs of every job (``configs/`` beside the package).
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def detector_cfg(cfg: DictConfig) -> AnyDetectorCfg:
    """The ``detector`` node (``name`` + settings) as its registered settings object."""
    d: dict[str, Any] = OmegaConf.to_container(cfg.detector, resolve=True)  # type: ignore[assignment]
    name = str(d.pop("name", "mtcnn"))
    return detector_cfg_for(name, **d)


def pipeline_cfg(cfg: DictConfig) -> PipelineCfg:
    """The ``pipeline`` node as a ``PipelineCfg``."""
    return PipelineCfg(**OmegaConf.to_container(cfg.pipeline, resolve=True))  # type: ignore[arg-type]


def section(cfg: DictConfig, key: str, cls: type) -> Any:
    """``cls(**cfg[key])``, or ``cls()`` when the job's config has no such node."""
    node = cfg.get(key)
    return cls() if node is None else cls(**OmegaConf.to_container(node, resolve=True))  # type: ignore[arg-type]


def hydra_choice(group: str) -> str | None:
    """The option the command chose for a config group (``model=arcface`` -> ``"arcface"``), or None
    outside a Hydra job (a config composed by hand)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    choice = HydraConfig.get().runtime.choices.get(group)
    return str(choice) if choice is not None else None
