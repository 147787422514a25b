"""The export job and its graph passes: dynamic batch, checker, metadata, fp16/int8 variants.

Oracles: the PyTorch module (torch), onnxruntime running the graph before a pass, hashlib for
the sha256, the registry record for the contract. ``-m slow`` adds the Hydra job end to end
with int8 on all of ORL (alignment of 400 images + calibration, ~1 min on idle cores).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from hydra import compose, initialize_config_dir
from onnx import TensorProto, helper, numpy_helper

from fetoolkit.backends.export import (META_EMBED_DIM, META_PRECISION, decompose_prelu,
                                       fold_constant_nodes, fuse_zero_pads_into_convs,
                                       zero_negligible_weights)
from fetoolkit.backends.onnx_backend import META_CONTRACT, META_MODEL, META_SOURCE_SHA256, OnnxEmbedder
from fetoolkit.backends.quantize import META_CALIBRATION, convert_fp16, quantize_int8
from fetoolkit.hub import fetch_weights
from fetoolkit.models.factory import create_embedder
from fetoolkit.models.registry import get_model_spec
from fetoolkit.types import InputContract

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
COS_MIN = 0.9999


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def compose_cfg(name: str, overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(name, overrides=overrides)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def arcface_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """``python -m fetoolkit.export model=arcface`` (as ``run``), fp32, no ORL measurement."""
    from fetoolkit.export import run

    out = tmp_path_factory.mktemp("export")
    cfg = compose_cfg("export", ["model=arcface", f"out={out / 'arcface.onnx'}", "measure=false"])
    summary = run(cfg, out / "run")
    return out / "arcface.onnx", summary


def test_export_file_contract_metadata_dynamic_batch(arcface_export: tuple[Path, dict]) -> None:
    path, summary = arcface_export
    spec = get_model_spec("arcface")
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    meta = {p.key: p.value for p in model.metadata_props}
    assert InputContract.from_dict(json.loads(meta[META_CONTRACT])) == spec.contract
    assert meta[META_MODEL] == "arcface_mbf.sirius" and meta[META_EMBED_DIM] == "192"
    assert meta[META_PRECISION] == "fp32"
    tflite = fetch_weights(spec.weights, what=spec.name, key_hint="")
    assert meta[META_SOURCE_SHA256] == _sha256(tflite)
    batch = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param and not batch.HasField("dim_value")
    out_dim = model.graph.output[0].type.tensor_type.shape.dim
    assert out_dim[0].dim_param and out_dim[1].dim_value == 192
    # The job's own report agrees with the file, and lands in the run dir.
    assert summary["sha256"] == _sha256(path) and summary["metadata"] == meta
    assert json.loads((path.parent / "run" / "export.json").read_text())["sha256"] == summary["sha256"]


def test_export_runs_with_no_flags_and_matches_torch(arcface_export: tuple[Path, dict],
                                                     aligned_faces: np.ndarray) -> None:
    path, _ = arcface_export
    emb = OnnxEmbedder(path)  # no contract given: it comes from the file
    assert emb.contract == get_model_spec("arcface").contract
    ref = create_embedder("arcface", backend="torch").embed(aligned_faces)
    for batch in (1, 3, 32):  # the dynamic batch axis at work
        emb.batch_size = batch
        got = emb.embed(aligned_faces)
        assert cosines(got, ref).min() >= COS_MIN, batch


def test_export_graph_has_no_pad_and_no_prelu_nodes(arcface_export: tuple[Path, dict]) -> None:
    ops = {n.op_type for n in onnx.load(str(arcface_export[0])).graph.node}
    assert not ops & {"Pad", "PRelu", "ConstantOfShape", "Slice"}, ops


# ----------------------------------------------------------------------------------------
# Graph passes on hand-built graphs, onnxruntime before/after as the oracle
# ----------------------------------------------------------------------------------------


def _pad_prelu_graph(rng: np.random.Generator) -> onnx.ModelProto:
    """x -> Pad(0,1,0,1 via a constant chain) -> Conv(3x3, s2) -> PRelu(slopes of both signs)."""
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    slope = rng.uniform(-3, 3, (4, 1, 1)).astype(np.float32)
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(slope, "slope"),
             numpy_helper.from_array(np.array([0, 0, 0, 0, 0, 0, 1, 1], np.int64), "p_raw")]
    nodes = [
        helper.make_node("Identity", ["p_raw"], ["pads"]),  # a constant chain the folder must evaluate
        helper.make_node("Pad", ["x", "pads"], ["xp"], mode="constant"),
        helper.make_node("Conv", ["xp", "w"], ["y"], strides=[2, 2], kernel_shape=[3, 3]),
        helper.make_node("PRelu", ["y", "slope"], ["z"]),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["n", 4, 4, 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def test_graph_passes_are_exact() -> None:
    rng = np.random.default_rng(0)
    model = _pad_prelu_graph(rng)
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    want = _run(model, x)
    assert fold_constant_nodes(model) == 1
    assert fuse_zero_pads_into_convs(model) == 1
    assert decompose_prelu(model) == 1
    ops = [n.op_type for n in model.graph.node]
    assert "Pad" not in ops and "PRelu" not in ops, ops
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    assert list(next(a for a in conv.attribute if a.name == "pads").ints) == [0, 0, 1, 1]
    onnx.checker.check_model(model)
    np.testing.assert_allclose(_run(model, x), want, rtol=1e-5, atol=1e-5)


def test_negligible_weights_are_zeroed_and_nothing_else() -> None:
    model = _pad_prelu_graph(np.random.default_rng(2))
    w_init = next(i for i in model.graph.initializer if i.name == "w")
    w = numpy_helper.to_array(w_init).copy()
    w.flat[:4] = [1e-40, -3e-39, 2e-20, 1e-14]  # two denormals, a dead-channel weight, a kept one
    w_init.CopyFrom(numpy_helper.from_array(w, "w"))
    assert zero_negligible_weights(model) == 3
    got = numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == "w"))
    assert (got.flat[:3] == 0).all() and got.flat[3] == np.float32(1e-14)
    np.testing.assert_array_equal(got.flat[4:], w.flat[4:])


def test_nonzero_pad_is_not_folded() -> None:
    model = _pad_prelu_graph(np.random.default_rng(1))
    pad = next(n for n in model.graph.node if n.op_type == "Pad")
    pad.attribute.append(helper.make_attribute("mode", "reflect"))
    del pad.attribute[0]  # the first "mode" attribute (constant)
    fold_constant_nodes(model)
    assert fuse_zero_pads_into_convs(model) == 0


# ----------------------------------------------------------------------------------------
# fp16 / int8 variants
# ----------------------------------------------------------------------------------------


def _meta(path: Path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def test_int8_keeps_metadata_and_dynamic_batch(arcface_export: tuple[Path, dict], aligned_faces: np.ndarray,
                                               tmp_path: Path) -> None:
    src = arcface_export[0]
    contract = get_model_spec("arcface").contract
    calib = contract.preprocess(aligned_faces[::2])  # 20 real faces
    dst = quantize_int8(src, tmp_path / "a.int8.onnx", calib, describe="20 test faces")
    meta, src_meta = _meta(dst), _meta(src)
    for key in (META_CONTRACT, META_MODEL, META_SOURCE_SHA256, META_EMBED_DIM):
        assert meta[key] == src_meta[key], key
    assert meta[META_PRECISION] == "int8"
    cal = json.loads(meta[META_CALIBRATION])
    assert cal["n_faces"] == 20 and cal["faces"] == "20 test faces" and cal["per_channel"] and cal["format"] == "QDQ"
    model = onnx.load(str(dst))
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param
    assert any(n.op_type == "QuantizeLinear" for n in model.graph.node)
    emb = OnnxEmbedder(dst, batch_size=7)
    got, ref = emb.embed(aligned_faces), OnnxEmbedder(src).embed(aligned_faces)
    assert got.shape == ref.shape
    # int8 moves the embeddings (see `make bench` for the accuracy cost), but they stay the model's.
    assert cosines(got, ref).mean() > 0.8


def test_fp16_keeps_metadata_and_accuracy(arcface_export: tuple[Path, dict], aligned_faces: np.ndarray,
                                          tmp_path: Path) -> None:
    src = arcface_export[0]
    dst = convert_fp16(src, tmp_path / "a.fp16.onnx")
    meta = _meta(dst)
    assert meta[META_PRECISION] == "fp16" and meta[META_CONTRACT] == _meta(src)[META_CONTRACT]
    assert onnx.load(str(dst)).graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    got, ref = OnnxEmbedder(dst).embed(aligned_faces), OnnxEmbedder(src).embed(aligned_faces)
    assert cosines(got, ref).min() >= 0.999


def test_int8_without_faces_is_refused(tmp_path: Path) -> None:
    from fetoolkit.export import export_variant

    with pytest.raises(ValueError, match="calibration faces"):
        export_variant("arcface", weights=None, out=tmp_path / "x.onnx", precision="int8")
    with pytest.raises(ValueError, match="precision must be one of"):
        export_variant("arcface", weights=None, out=tmp_path / "x.onnx", precision="int4")


@pytest.mark.slow
def test_export_job_int8_on_orl(tmp_path: Path) -> None:
    """The Hydra job end to end: int8 calibrated on ORL image 10 of each subject, cost measured."""
    from fetoolkit.export import run

    cfg = compose_cfg("export", ["model=mobilefacenet512", "precision=int8", f"out={tmp_path / 'm.int8.onnx'}",
                                 "pipeline.progress=false"])
    summary = run(cfg, tmp_path / "run")
    assert summary["calibration"]["n_faces"] == 40
    assert "s1/10.pgm" in summary["calibration"]["faces"]
    cost = summary["accuracy_cost"]
    assert cost["n_enrolled"] == 400 and cost["verification_held_out"]["n_images_excluded"] == 40
    assert cost["verification"]["tar_ref"] is not None and cost["verification"]["tar_cand"] is not None
    assert json.loads(_meta(tmp_path / "m.int8.onnx")[META_CALIBRATION])["n_faces"] == 40
