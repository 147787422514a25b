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


def test_a_release_tag_resolves_to_its_weights() -> None:
    """``name.tag`` is the record with that release's weights; an unknown tag lists the known ones."""
    from fetoolkit.models.registry import list_releases

    spec = get_model_spec("arcface_r50.ms1mv3")
    base = get_model_spec("arcface_r50")
    assert (spec.name, spec.release, spec.arch, spec.contract) == ("arcface_r50", "ms1mv3", base.arch, base.contract)
    assert spec.weights == base.releases["ms1mv3"] and base.weights is None and base.release is None
    assert "arcface_r100.antelopev2" in list_releases() and all(r.count(".") >= 1 for r in list_releases())
    assert get_model_spec("arcface").name == "arcface_mbf.sirius"  # a dotted name is a name, not a tag
    with pytest.raises(KeyError, match="has no release 'nope'; its releases: buffalo_l, glint360k, ms1mv3"):
        get_model_spec("arcface_r50.nope")
    with pytest.raises(KeyError, match="unknown model 'nothing.here'"):
        get_model_spec("nothing.here")


def test_builders_take_keyword_arguments() -> None:
    narrow = build_arch("iresnet18", num_features=128).eval()
    with torch.no_grad():
        assert tuple(narrow(torch.zeros(1, 3, 112, 112)).shape) == (1, 128)
    wide = build_arch("mobilefacenet_faceplugin", head_channels=(256,)).eval()
    with torch.no_grad():
        assert tuple(wide(torch.zeros(1, 3, 112, 112)).shape) == (1, 256)
    with pytest.raises(KeyError, match="unknown architecture 'iresnet7'"):
        build_arch("iresnet7")


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
    "fetoolkit.backends.prelu",
    "fetoolkit.backends.quantize",
    "fetoolkit.metrics.verification",
    "fetoolkit.metrics.quality",
    "fetoolkit.models.registry",
    "fetoolkit.models.onnx_reader",
    "fetoolkit.detect.mtcnn_onnx",
    "fetoolkit.cache.maintenance",
    "fetoolkit.cpu",
    "fetoolkit.config",
)


@pytest.mark.parametrize("module", TORCH_FREE)
def test_module_does_not_import_torch(module: str) -> None:
    code = f"import sys, {module}; bad = sorted(m for m in sys.modules if m.split('.')[0] == 'torch'); print(bad[:3])"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "[]", f"{module} imports torch: {res.stdout.strip()}"
