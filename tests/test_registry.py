"""Every registered model: its architecture builds and fits its contract, and its configs resolve.

Oracles: the record's own contract (the shape a built module must return), Hydra's composition
of every ``configs/model/*.yaml``, and a fresh interpreter for what importing a module pulls in.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from fetoolkit.models.registry import build_arch, get_model_spec, list_models

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
MODEL_CONFIGS = sorted(p.stem for p in (CONFIGS / "model").glob("*.yaml"))


@pytest.mark.parametrize("name", list_models())
def test_every_model_builds_and_fits_its_contract(name: str) -> None:
    spec = get_model_spec(name)
    c = spec.contract
    assert spec.name == name and c.embed_dim > 0 and len(c.size) == 2
    if spec.arch is None:  # ONNX-only: the vendor file is the model; its record says where it comes from
        assert spec.weights is not None and spec.weights.sha256, name
        return
    module = build_arch(spec.arch).eval()
    h, w = c.size
    with torch.no_grad():
        out = module(torch.zeros(2, 3, h, w))
    assert tuple(out.shape) == (2, c.embed_dim), (name, tuple(out.shape))
    assert torch.isfinite(out).all()


def test_list_models_covers_the_records() -> None:
    names = list_models()
    assert names == sorted(set(names)) and len(names) >= 8
    assert "arcface_mbf.sirius" in names and all(f"arcface_r{d}" in names for d in (18, 34, 50, 100, 200))


@pytest.mark.parametrize("config", MODEL_CONFIGS)
def test_every_model_config_resolves(config: str) -> None:
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose("eval", overrides=[f"model={config}"])
    spec = get_model_spec(cfg.model.name)
    assert spec.name in list_models()


#: Modules promised torch-free (the service, the eval engine, the ONNX backend, int8, metrics).
TORCH_FREE = (
    "fetoolkit.serve.app",
    "fetoolkit.serve.service",
    "fetoolkit.evaluate",
    "fetoolkit.backends.onnx_backend",
    "fetoolkit.backends.onnx_graph",
    "fetoolkit.backends.quantize",
    "fetoolkit.metrics.verification",
    "fetoolkit.metrics.quality",
    "fetoolkit.models.registry",
    "fetoolkit.cpu",
    "fetoolkit.config",
)


@pytest.mark.parametrize("module", TORCH_FREE)
def test_module_does_not_import_torch(module: str) -> None:
    code = f"import sys, {module}; bad = sorted(m for m in sys.modules if m.split('.')[0] == 'torch'); print(bad[:3])"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "[]", f"{module} imports torch: {res.stdout.strip()}"
