"""The benchmark's code path on a tiny setting (``make bench`` itself is not part of the suite).

The FLOP count from the ONNX graph is checked against an independent count made with forward
hooks on the torch module, and against the published IResNet-50 cost (6.31 G multiply-adds
per 112x112 face, ``/work/shared/ASSETS.md``) in the slow run.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn

from fetoolkit.data import EvalData, all_pairs, kfold_pairs
from fetoolkit.jobs.bench import BenchSettings, Faces, count_macs, run_bench


def torch_macs(module: nn.Module, size: tuple[int, int] = (112, 112)) -> int:
    """Multiply-adds of one face counted with forward hooks on Conv2d and Linear."""
    total = 0

    def conv_hook(m: nn.Conv2d, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        total += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    def linear_hook(m: nn.Linear, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        total += out.numel() * m.in_features

    hooks = [
        m.register_forward_hook(conv_hook if isinstance(m, nn.Conv2d) else linear_hook)
        for m in module.modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    with torch.no_grad():
        module.eval()(torch.zeros(1, 3, *size))
    for h in hooks:
        h.remove()
    return total


def _export(module: nn.Module, path: Path) -> onnx.ModelProto:
    from fetoolkit.backends.export import export_onnx
    from fetoolkit.types import InputContract

    out_dim = module.eval()(torch.zeros(2, 3, 112, 112)).shape[1]
    export_onnx(module, InputContract(embed_dim=out_dim), path, name="x", source_sha256=None)
    return onnx.load(str(path))


@pytest.mark.parametrize("arch", ["mobilefacenet_sirius", "mobilefacenet_faceplugin", "iresnet18"])
def test_onnx_flop_count_matches_torch_hooks(arch: str, tmp_path: Path) -> None:
    from fetoolkit.models.registry import build_arch

    module = build_arch(arch)
    assert count_macs(_export(module, tmp_path / "m.onnx"))["total"] == torch_macs(module)


@pytest.mark.slow
def test_iresnet50_cost_matches_published_figure(tmp_path: Path) -> None:
    from fetoolkit.models.iresnet import iresnet

    macs = count_macs(_export(iresnet(50), tmp_path / "r50.onnx"))["total"]
    assert abs(macs / 6.31e9 - 1) < 0.01, macs


@pytest.fixture(scope="module")
def tiny_faces(aligned_faces: np.ndarray, aligned_identities: np.ndarray) -> Faces:
    """The 40 session faces as the bench's ORL stand-in (20 people x 2)."""
    from fetoolkit.aligned import AlignedSet
    from fetoolkit.pipeline import Crops

    n = len(aligned_faces)
    data = EvalData(
        "orl-tiny",
        [Path(f"s{i}/{k}.pgm") for i in range(1, 21) for k in (1, 2)],
        True,
        kfold_pairs(aligned_identities, n_folds=10, seed=0),
        all_pairs(aligned_identities),
    )
    crops = Crops(
        aligned_faces, np.ones(n, bool), np.ones(n, np.float32), np.ones(n, np.int32), np.zeros((n, 5, 2), np.float32)
    )
    calib = (np.arange(n) % 2 == 1) & (np.arange(n) < n // 2)  # photo 2 of the first 10 people
    return Faces(aligned_faces, AlignedSet(data, crops), calib, "10 test faces")


def test_bench_smoke(tiny_faces: Faces, tmp_path: Path) -> None:
    """Every stage once: peak, export, int8, naive baseline, torch + ORT timings, accuracy, checks."""
    settings = BenchSettings(
        models=["arcface"], threads=[1], batches=[1, 2], seconds=0.0, max_reps=1, min_reps=1, peak_size=512
    )
    out = run_bench(settings, tmp_path, tiny_faces)
    json.dumps(out, allow_nan=False)
    peak = out["peak_gflops"]["1"]
    assert peak["peak"] >= max(peak["start"]["peak"], peak["end"]["peak"]) > 0
    info = out["models"]["arcface"]
    assert info["gflop_per_face"] == pytest.approx(2 * torch_macs(_arcface_module()) / 1e9)
    cells = {(r["engine"], r["variant"], r["batch"]) for r in info["results"]}
    assert {
        ("torch", "fp32", 1),
        ("torch", "fp32", 2),
        ("onnxruntime", "fp32", 1),
        ("onnxruntime", "fp32", 2),
        ("onnxruntime", "int8", 1),
        ("onnxruntime", "naive", 2),
    } <= cells, cells
    phys = out["physical_peak_gflops"]["1"]
    assert phys["gflops"] > out["peak_gflops"]["1"]["peak"], (phys, out["peak_gflops"])  # no sgemm beats the cores
    for r in info["results"]:
        assert r["faces_per_s"] > 0 and r["fraction_of_peak"] > 0
        if r["variant"] == "int8":
            assert r["fraction_of_physical_peak"] is None
        else:
            assert 0 < r["fraction_of_physical_peak"] < 1.0, r
        assert r["gflops"] == pytest.approx(r["faces_per_s"] * info["gflop_per_face"])
    acc = info["int8_accuracy"]
    assert acc["verification_held_out"]["n_images_excluded"] == 10
    checks = {c["check"].split(":")[0] for c in out["checks"]}
    assert any("naive" in c for c in checks) and any("int8 vs fp32" in c for c in checks)


def _arcface_module() -> nn.Module:
    from fetoolkit.models.registry import build_arch

    return build_arch("mobilefacenet_sirius")
