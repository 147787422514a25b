"""Hydra config nodes -> the dataclasses the library takes: the one place the jobs convert them."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from fetoolkit.detect.base import DetectorCfg
from fetoolkit.pipeline import PipelineCfg


def detector_cfg(cfg: DictConfig) -> DetectorCfg:
    """The ``detector`` node as a ``DetectorCfg``."""
    d = cfg.detector
    return DetectorCfg(min_face_size=d.min_face_size, thresholds=tuple(d.thresholds), factor=d.factor)


def pipeline_cfg(cfg: DictConfig) -> PipelineCfg:
    """The ``pipeline`` node as a ``PipelineCfg``."""
    return PipelineCfg(**OmegaConf.to_container(cfg.pipeline, resolve=True))  # type: ignore[arg-type]


def section(cfg: DictConfig, key: str, cls: type) -> Any:
    """``cls(**cfg[key])``, or ``cls()`` when the job's config has no such node."""
    node = cfg.get(key)
    return cls() if node is None else cls(**OmegaConf.to_container(node, resolve=True))  # type: ignore[arg-type]
