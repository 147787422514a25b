"""The export job and its graph passes: dynamic batch, checker, metadata, fp16/int8 variants.

Oracles: the PyTorch module (torch), onnxruntime running the graph before a pass, hashlib for
the sha256, the registry record for the contract, our fp32 export for the int8 variants (on
faces that did not calibrate them). ``-m slow`` adds the Hydra job end to end with int8 on all
of ORL for both real models, held to the project's bound (TAR@FAR=1e-3 and 10-fold accuracy
within 0.005 of torch fp32; alignment of 400 images + calibration, ~1 min each on idle cores).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hydra import compose, initialize_config_dir
from onnx import TensorProto, helper, numpy_helper

from fetoolkit.backends.export import (
    META_EMBED_DIM,
    META_PRECISION,
    decompose_prelu,
    fold_constant_nodes,
    fuse_zero_pads_into_convs,
    zero_negligible_weights,
)
from fetoolkit.backends.onnx_backend import META_CONTRACT, META_MODEL, META_SOURCE_SHA256, OnnxEmbedder
from fetoolkit.backends.onnx_graph import count_ops
from fetoolkit.backends.quantize import META_CALIBRATION, convert_fp16, equalize_channels, quantize_int8, split_prelus
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
    from fetoolkit.jobs.export import run

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


def test_export_runs_with_no_flags_and_matches_torch(
    arcface_export: tuple[Path, dict], aligned_faces: np.ndarray
) -> None:
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
    inits = [
        numpy_helper.from_array(w, "w"),
        numpy_helper.from_array(slope, "slope"),
        numpy_helper.from_array(np.array([0, 0, 0, 0, 0, 0, 1, 1], np.int64), "p_raw"),
    ]
    nodes = [
        helper.make_node("Identity", ["p_raw"], ["pads"]),  # a constant chain the folder must evaluate
        helper.make_node("Pad", ["x", "pads"], ["xp"], mode="constant"),
        helper.make_node("Conv", ["xp", "w"], ["y"], strides=[2, 2], kernel_shape=[3, 3]),
        helper.make_node("PRelu", ["y", "slope"], ["z"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["n", 4, 4, 4])],
        inits,
    )
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


def test_int8_keeps_metadata_and_dynamic_batch(
    arcface_export: tuple[Path, dict], aligned_faces: np.ndarray, tmp_path: Path
) -> None:
    src = arcface_export[0]
    contract = get_model_spec("arcface").contract
    calib = contract.preprocess(aligned_faces[::2])  # 20 real faces: image 1 of s1..s20
    dst = quantize_int8(src, tmp_path / "a.int8.onnx", calib, describe="20 test faces")
    meta, src_meta = _meta(dst), _meta(src)
    for key in (META_CONTRACT, META_MODEL, META_SOURCE_SHA256, META_EMBED_DIM):
        assert meta[key] == src_meta[key], key
    assert meta[META_PRECISION] == "int8"
    cal = json.loads(meta[META_CALIBRATION])
    assert cal["n_faces"] == 20 and cal["faces"] == "20 test faces" and cal["per_channel"] and cal["format"] == "QDQ"
    assert cal["prelus_split"] == cal["prelus_one_pass"] == 33  # every PReLU of the sirius MobileFaceNet
    assert cal["regions_equalized"] > 33
    assert cal["weight_bits"] == 7 and cal["quantized_on"]["int8_kernels"] in ("vnni", "avx2")
    model = onnx.load(str(dst))
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param
    assert any(n.op_type == "QuantizeLinear" for n in model.graph.node)
    emb = OnnxEmbedder(dst, batch_size=7)
    got, ref = emb.embed(aligned_faces), OnnxEmbedder(src).embed(aligned_faces)
    assert got.shape == ref.shape
    # The accuracy guard: on the 20 faces that did not calibrate (image 2 of s1..s20). This recipe
    # (7-bit weights, one-pass PReLUs with the form chosen per channel) gives min 0.9898 / mean
    # 0.9951 on both kernel families (AMD EPYC natively, and forced to AVX2;
    # test_int8_on_both_kernel_families); the split PReLUs it replaced 0.9918 / 0.9949 (Xeon, both
    # families), the one-pass form with every channel on the negative side 0.9828 / 0.9924. With
    # 8-bit weights 0.993 / 0.997 on VNNI but 0.968 / 0.985 on AVX2. Without the channel
    # equalisation 0.88 / 0.92 (TAR -0.018), without the PReLU split 0.981 / 0.991, the plain
    # onnxruntime recipe 0.86 / 0.91 (TAR -0.040). The slow test checks TAR itself.
    held_out = cosines(got[1::2], ref[1::2])
    assert held_out.min() >= 0.985 and held_out.mean() >= 0.993, (held_out.min(), held_out.mean())


@pytest.mark.parametrize("weight_bits", [7, 8])
def test_int8_on_both_kernel_families(
    arcface_export: tuple[Path, dict], aligned_faces: np.ndarray, tmp_path: Path, weight_bits: int
) -> None:
    """The int8 file on VNNI kernels and on AVX2-only kernels (forced by CPUID on a VNNI machine).

    7-bit weights (the default): the same embeddings on both (no int16 saturation is possible:
    2 x 255 x 64 < 32767), so the accuracy guard holds everywhere. 8-bit weights: fine on VNNI,
    measurably worse on AVX2 (measured min 0.966 / mean 0.983, see test above), and opening the
    file there logs a warning that says so.
    """
    from _isa import embed_on

    from fetoolkit.cpu import int8_kind

    contract = get_model_spec("arcface").contract
    dst = quantize_int8(
        arcface_export[0],
        tmp_path / f"a.w{weight_bits}.onnx",
        contract.preprocess(aligned_faces[::2]),
        describe="20 test faces",
        weight_bits=weight_bits,
    )
    ref = OnnxEmbedder(arcface_export[0]).embed(aligned_faces)[1::2]
    avx2, warning = embed_on("avx2", dst, aligned_faces, tmp_path)
    held_avx2 = cosines(avx2[1::2], ref)
    if weight_bits == 7:
        assert held_avx2.min() >= 0.985 and held_avx2.mean() >= 0.993, (held_avx2.min(), held_avx2.mean())
        assert "without VNNI" not in warning
    else:
        assert held_avx2.mean() < 0.99, held_avx2.mean()  # saturation: 0.983 measured
        assert "runs on a CPU without VNNI" in warning and "weight_bits=7" in warning
    if int8_kind() == "vnni":
        native, warning = embed_on("native", dst, aligned_faces, tmp_path)
        held = cosines(native[1::2], ref)
        assert held.min() >= 0.985 and held.mean() >= 0.993, (held.min(), held.mean())
        assert not warning
        if weight_bits == 7:  # integer arithmetic is exact on both: only the float requantisation may differ
            assert cosines(native, avx2).min() >= 0.9999


@pytest.mark.parametrize("one_pass", [True, False])
def test_int8_graph_runs_all_int8_in_onnxruntime(
    arcface_export: tuple[Path, dict], aligned_faces: np.ndarray, tmp_path: Path, one_pass: bool
) -> None:
    """The speed guard: after onnxruntime's fusions the int8 sirius graph is QLinearConv and
    QLinearAdd only (no QLinearMul, no float op between a Dequantize and a Quantize): the
    elementwise PReLU passes that made int8 slower than fp32 on two threads are gone."""
    contract = get_model_spec("arcface").contract
    dst = quantize_int8(
        arcface_export[0],
        tmp_path / "a.int8.onnx",
        contract.preprocess(aligned_faces[::4]),
        describe="10 test faces",
        one_pass=one_pass,
    )
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    so.log_severity_level = 3
    ort.InferenceSession(str(dst), so, providers=["CPUExecutionProvider"])
    ops = count_ops(onnx.load(str(tmp_path / "optimized.onnx")))
    assert set(ops) <= {"QLinearConv", "QLinearAdd", "QuantizeLinear", "DequantizeLinear", "Transpose", "Flatten"}, ops
    assert ops["QuantizeLinear"] == 1 and ops["DequantizeLinear"] == 1, ops  # the graph input and output only
    # 52 model Convs, one 1x1 depthwise Conv per one-pass PReLU (two per split one); an Add per
    # PReLU and per residual
    assert ops["QLinearConv"] == 52 + (1 if one_pass else 2) * 33 and ops["QLinearAdd"] == 33 + 12, ops


def _prelu_graph(slopes: np.ndarray, *, native: bool, sink: str, rng: np.random.Generator) -> onnx.ModelProto:
    """x -> Conv(3x3, 4 -> C) -> PReLU(slopes) -> sink: ``dw`` (Conv 3x3 depthwise), ``conv``
    (Conv 1x1 to 5 channels), ``dw+conv`` (both read the PReLU) or ``output`` (a graph output)."""
    c = len(slopes)
    w = rng.standard_normal((c, 4, 3, 3)).astype(np.float32)
    b = rng.standard_normal(c).astype(np.float32)
    a = slopes.astype(np.float32).reshape(c, 1, 1)
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b"), numpy_helper.from_array(a, "a")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], name="conv")]
    if native:
        nodes.append(helper.make_node("PRelu", ["y", "a"], ["t"], name="prelu"))
    else:  # the form ``decompose_prelu`` writes
        inits.append(numpy_helper.from_array((1.0 - a.astype(np.float64)).astype(np.float32), "one_minus_a"))
        nodes += [
            helper.make_node("Mul", ["y", "a"], ["lin"], name="lin"),
            helper.make_node("Relu", ["y"], ["r"], name="relu"),
            helper.make_node("Mul", ["r", "one_minus_a"], ["pos"], name="pos"),
            helper.make_node("Add", ["lin", "pos"], ["t"], name="add"),
        ]
    outputs = []
    if "dw" in sink:
        inits.append(numpy_helper.from_array(rng.standard_normal((c, 1, 3, 3)).astype(np.float32), "wd"))
        nodes.append(helper.make_node("Conv", ["t", "wd"], ["zd"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=c))
        outputs.append(helper.make_tensor_value_info("zd", TensorProto.FLOAT, ["n", c, 6, 6]))
    if "conv" in sink:
        inits.append(numpy_helper.from_array(rng.standard_normal((5, c, 1, 1)).astype(np.float32), "wp"))
        nodes.append(helper.make_node("Conv", ["t", "wp"], ["zp"], kernel_shape=[1, 1]))
        outputs.append(helper.make_tensor_value_info("zp", TensorProto.FLOAT, ["n", 5, 6, 6]))
    if sink == "output":
        outputs.append(helper.make_tensor_value_info("t", TensorProto.FLOAT, ["n", c, 6, 6]))
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4, 6, 6])], outputs, inits
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def _run_all(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})


# Slopes of both signs, 0 (ReLU), 1 (identity), and > 1 (the sirius model has them up to ~9):
# the channels with a > 1 need the sign folded into the next Conv.
SLOPES = np.array([-9.4, -1.0, 0.0, 0.25, 1.0, 2.5, 8.9])


@pytest.mark.parametrize("native", [False, True])
@pytest.mark.parametrize("sink", ["dw", "conv", "dw+conv"])
def test_split_prelus_and_equalize_are_exact(native: bool, sink: str) -> None:
    rng = np.random.default_rng(3)
    model = _prelu_graph(SLOPES, native=native, sink=sink, rng=rng)
    x = rng.standard_normal((8, 4, 6, 6)).astype(np.float32) * 3
    want = _run_all(model, x)
    assert split_prelus(model) == 1
    ops = [n.op_type for n in model.graph.node]
    assert "Mul" not in ops and "PRelu" not in ops and ops.count("Conv") == 4 + sink.count("+"), ops
    onnx.checker.check_model(model)
    for got, ref in zip(_run_all(model, x), want):
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
    # Equalisation: the PReLU's input (read by the two 1x1 depthwise Convs) and its output.
    assert equalize_channels(model, x) == 2
    onnx.checker.check_model(model)
    for got, ref in zip(_run_all(model, x), want):
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("sink", ["dw", "conv", "dw+conv"])
def test_one_pass_prelus_and_equalize_are_exact(sink: str) -> None:
    """The int8 recipe's PReLU form: the one-pass PReLU's 1x1 depthwise Conv is a per-channel
    scale inside the equalised region (its input and output share one scale per channel)."""
    from fetoolkit.backends.prelu import one_pass_prelus

    rng = np.random.default_rng(6)
    model = _prelu_graph(SLOPES, native=True, sink=sink, rng=rng)
    x = rng.standard_normal((8, 4, 6, 6)).astype(np.float32) * 3
    want = _run_all(model, x)
    assert split_prelus(model) == 1
    ones = np.ones(len(SLOPES))
    assert one_pass_prelus(model, {"y": (ones, ones)}) == 1  # both sides chosen (see test_prelu)
    assert equalize_channels(model, x) == 1
    onnx.checker.check_model(model)
    for got, ref in zip(_run_all(model, x), want):
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-3)


def test_split_prelu_needing_a_sign_is_kept_when_a_non_conv_reads_it() -> None:
    rng = np.random.default_rng(4)
    model = _prelu_graph(SLOPES, native=False, sink="output", rng=rng)
    assert split_prelus(model) == 0  # a > 1 somewhere and nothing to fold the sign into
    assert [n.op_type for n in model.graph.node].count("Mul") == 2
    model = _prelu_graph(np.array([-2.0, 0.0, 0.5, 1.0]), native=True, sink="output", rng=rng)
    x = rng.standard_normal((2, 4, 6, 6)).astype(np.float32)
    want = _run_all(model, x)
    assert split_prelus(model) == 1  # every slope <= 1: no sign needed
    np.testing.assert_allclose(_run_all(model, x)[0], want[0], rtol=1e-5, atol=1e-5)


def test_int8_of_a_prelu_graph_tracks_fp32(tmp_path: Path) -> None:
    """The whole recipe on the hand-built graph (slopes up to +-9): int8 close to fp32."""
    rng = np.random.default_rng(5)
    model = _prelu_graph(SLOPES, native=False, sink="dw+conv", rng=rng)
    x = rng.standard_normal((64, 4, 6, 6)).astype(np.float32)
    onnx.save(model, str(tmp_path / "g.onnx"))
    dst = quantize_int8(tmp_path / "g.onnx", tmp_path / "g.int8.onnx", x[:32], describe="random")
    cal = json.loads(_meta(dst)[META_CALIBRATION])
    # one region: the one-pass PReLU's input and output share one scale per channel
    assert cal["prelus_split"] == 1 and cal["prelus_one_pass"] == 1 and cal["regions_equalized"] == 1
    got = ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"]).run(None, {"x": x[32:]})
    for g, r in zip(got, _run_all(model, x[32:])):
        assert cosines(g.reshape(len(g), -1), r.reshape(len(r), -1)).min() > 0.99


def test_fp16_keeps_metadata_and_accuracy(
    arcface_export: tuple[Path, dict], aligned_faces: np.ndarray, tmp_path: Path
) -> None:
    src = arcface_export[0]
    dst = convert_fp16(src, tmp_path / "a.fp16.onnx")
    meta = _meta(dst)
    assert meta[META_PRECISION] == "fp16" and meta[META_CONTRACT] == _meta(src)[META_CONTRACT]
    assert onnx.load(str(dst)).graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    got, ref = OnnxEmbedder(dst).embed(aligned_faces), OnnxEmbedder(src).embed(aligned_faces)
    assert cosines(got, ref).min() >= 0.999


def test_int8_without_faces_is_refused(tmp_path: Path) -> None:
    from fetoolkit.models.variants import export_variant

    with pytest.raises(ValueError, match="calibration faces"):
        export_variant("arcface", weights=None, out=tmp_path / "x.onnx", precision="int8")
    with pytest.raises(ValueError, match="precision must be one of"):
        export_variant("arcface", weights=None, out=tmp_path / "x.onnx", precision="int4")
    with pytest.raises(ValueError, match="int8_prelu must be"):
        export_variant(
            "arcface",
            weights=None,
            out=tmp_path / "x.onnx",
            precision="int8",
            calibration=np.zeros((1, 3, 112, 112), np.float32),
            int8_prelu="fused",
        )


@pytest.mark.slow
@pytest.mark.parametrize("model", ["arcface", "mobilefacenet512"])
def test_export_job_int8_on_orl(model: str, tmp_path: Path) -> None:
    """The Hydra job end to end: int8 calibrated on ORL image 10 of each subject, cost measured,
    held to the project's bound: TAR@FAR=1e-3 and 10-fold accuracy within 0.005 of torch fp32,
    on all pairs and on the pairs that use no calibration image."""
    from fetoolkit.jobs.export import run

    cfg = compose_cfg(
        "export", [f"model={model}", "precision=int8", f"out={tmp_path / 'm.int8.onnx'}", "pipeline.progress=false"]
    )
    summary = run(cfg, tmp_path / "run")
    assert summary["calibration"]["n_faces"] == 40
    assert "s1/10.pgm" in summary["calibration"]["faces"]
    cost = summary["accuracy_cost"]
    assert cost["n_enrolled"] == 400 and cost["verification_held_out"]["n_images_excluded"] == 40
    for v in (cost["verification"], cost["verification_held_out"]):
        assert v["tar_ref"] is not None and v["tar_cand"] is not None
        assert v["tar_delta"] >= -0.005, v
        assert v["accuracy_delta"] >= -0.005, v
    assert cost["pass"], cost["violations"]
    # 7-bit weights: 0.9945 (arcface) / 0.9880 (mobilefacenet512), the same on VNNI and AVX2 kernels
    # (8-bit weights: 0.996 / 0.992 on VNNI, 0.983 for arcface on AVX2); TAR and accuracy above are the bound.
    assert cost["embeddings"]["cosine_mean"] >= 0.985, cost["embeddings"]
    cal = json.loads(_meta(tmp_path / "m.int8.onnx")[META_CALIBRATION])
    assert cal["n_faces"] == 40 and cal["prelus_split"] == 33 and cal["weight_bits"] == 7
    assert summary["calibration"]["weight_bits"] == 7 and summary["machine"]["cpu"]
