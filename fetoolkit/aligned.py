"""A data set aligned once by the project pipeline, shared by the parity, export and bench jobs."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from fetoolkit.config import detector_cfg, pipeline_cfg
from fetoolkit.data import EvalData, load_eval_data
from fetoolkit.detect.registry import build_detector
from fetoolkit.pipeline import Crops, PipelineCfg, embed_crops
from fetoolkit.types import Embedder, InputContract

log = logging.getLogger(__name__)


@dataclass
class AlignedSet:
    """A data set's images aligned once, for every embedder of a run.

    Attributes:
        data: images and pair protocols.
        crops: aligned uint8 RGB crops ``[N, H, W, 3]`` and which images enrolled.
    """

    data: EvalData
    crops: Crops

    @property
    def ok(self) -> np.ndarray:
        """bool ``[N]``: images that enrolled."""
        return self.crops.ok

    @property
    def faces(self) -> np.ndarray:
        """uint8 ``[M, H, W, 3]`` crops of the enrolled images (M = ok.sum())."""
        return self.crops.faces[self.crops.ok]


def align_dataset(cfg: DictConfig, size: tuple[int, int] = (112, 112)) -> AlignedSet:
    """Load ``cfg.dataset`` and align every image with the project pipeline (the configured detector + 5 points).

    The crops go through the pipeline's on-disk crops cache (``cfg.cache``; shared with the
    eval job), so a second run does not detect again.
    """
    from fetoolkit.cache import EmbeddingCache
    from fetoolkit.pipeline import cached_crops, detector_settings

    data = load_eval_data(cfg.dataset, seed=cfg.seed)
    pipe = pipeline_cfg(cfg)
    dcfg = detector_cfg(cfg)
    cache_node = cfg.get("cache")
    cache = EmbeddingCache(cache_node.get("dir")) if cache_node is not None and cache_node.get("crops", True) else None
    crops, state = cached_crops(
        data.paths,
        pipe,
        images=getattr(data, "images", None),
        aligned=data.aligned,
        detector=lambda: build_detector(dcfg, backend="torch"),
        size=size,
        cache=cache,
        detector_settings=detector_settings(dcfg),
    )
    log.info("%s: %d of %d images aligned (crops cache: %s)", data.name, int(crops.ok.sum()), len(data.paths), state)
    return AlignedSet(data, crops)


def select_images(paths: list[Path], ok: np.ndarray, names: list[str]) -> np.ndarray:
    """bool ``[N]``: enrolled images whose file name is in ``names`` (``["10.pgm"]``)."""
    wanted = set(names)
    return np.array([p.name in wanted for p in paths], bool) & ok


def embed_set(embedder: Embedder, aligned: AlignedSet, pipe: PipelineCfg) -> np.ndarray:
    """Raw float32 ``[M, D]`` embeddings of the enrolled faces (pipeline batches)."""
    return embed_crops(aligned.faces, embedder, pipe, raw=True)


def calibration_faces(aligned: Any, cal_cfg: Any, contract: InputContract) -> tuple[np.ndarray, str, np.ndarray]:
    """The int8 calibration faces of an aligned set.

    Args:
        aligned: an :class:`AlignedSet`.
        cal_cfg: the ``calibration`` config node: ``images`` (file names, e.g. ``["10.pgm"]``)
            and optional ``max_faces``.
        contract: the model's input contract.

    Returns:
        (float32 ``[K, 3, H, W]`` preprocessed faces, a description naming them, bool ``[N]``
        mask of the calibration images in the data set).
    """
    mask = select_images(aligned.data.paths, aligned.ok, list(cal_cfg.images))
    limit = cal_cfg.get("max_faces")
    if limit:
        idx = np.flatnonzero(mask)[: int(limit)]
        mask = np.zeros_like(mask)
        mask[idx] = True
    if not mask.any():
        raise ValueError(
            f"no enrolled image of {aligned.data.name} is named {list(cal_cfg.images)}: "
            "nothing to calibrate on (set calibration.images)"
        )
    chosen = [aligned.data.paths[i] for i in np.flatnonzero(mask)]
    names = [f"{p.parent.name}/{p.name}" for p in chosen]
    shown = names if len(names) <= 4 else [*names[:3], "...", names[-1]]
    describe = f"{len(chosen)} {aligned.data.name} images aligned by the project pipeline ({', '.join(shown)})"
    x = contract.preprocess(aligned.crops.faces[mask])
    return x, describe, mask
