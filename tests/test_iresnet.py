"""IResNet in arcface_torch's layout and the loaders for its checkpoints and ONNX exports.

The oracle is ``_reference_iresnet`` (an independent IResNet written like arcface_torch's
``backbones/iresnet.py``, random weights and random BatchNorm statistics) and, for ONNX,
onnxruntime running the exported file. Nothing here compares against numbers produced by
the code under test.

Default run: layout checks for every depth; ``.pth`` round trips for r18/r34/r50/r100; ONNX
(arcface_torch ``torch2onnx.py`` style) for r18 and r100; unfolded BN with MXNet's eps on r18;
hand-built ONNX graphs for the Gemm/MatMul/PRelu/epsilon/folding rules; negative cases.
``-m slow`` adds r200, the ONNX round trip for r34/r50/r200 and the torch.export-based
exporter on r18.

Measured on the shared 2-core dev box (torch 2.14.1 CPU, wall clock, noisy): r100 legacy
ONNX export ~17 s, its import ~5 s, r100 forward of 2 images 0.3-5 s; the whole default run
~1.5-2 min, the slow extras ~2.5 min.
"""

from __future__ import annotations

import logging
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _reference_iresnet import (  # noqa: E402
    LAYERS,
    export_like_arcface_torch,
    randomize_,
    reference_iresnet,
)

from fetoolkit.models.checkpoints import (  # noqa: E402
    check_state_dict,
    load_pth_state_dict,
    load_weights_file,
)
from fetoolkit.models.iresnet import BN_EPS, IRESNET_BLOCKS, IResNet, iresnet  # noqa: E402
from fetoolkit.models.onnx_import import state_dict_from_onnx  # noqa: E402

logger = logging.getLogger(__name__)

DEPTHS = (18, 34, 50, 100, 200)
COS_MIN = 0.9999
SLOW = pytest.mark.slow


def _depth_params(default: tuple[int, ...]) -> list[object]:
    return [d if d in default else pytest.param(d, marks=SLOW) for d in DEPTHS]


# ----------------------------------------------------------------------------------------
# Shared cases: one randomised reference per depth, its output, its backbone.pth.
# ----------------------------------------------------------------------------------------


@dataclass
class Case:
    depth: int
    ref: nn.Module
    x: torch.Tensor  # float32 [2, 3, 112, 112] in [-1, 1]
    y: torch.Tensor  # reference output, float32 [2, 512]
    pth: Path
    onnx_path: Path | None = None


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Case]:
    return {}


def _case(cases: dict[int, Case], tmp_path_factory: pytest.TempPathFactory, depth: int) -> Case:
    if depth not in cases:
        ref = randomize_(reference_iresnet(depth), seed=depth)
        g = torch.Generator().manual_seed(1000 + depth)
        x = torch.rand((2, 3, 112, 112), generator=g) * 2 - 1
        with torch.no_grad():
            y = ref(x)
        pth = tmp_path_factory.mktemp(f"r{depth}") / "backbone.pth"
        torch.save(ref.state_dict(), pth)  # arcface_torch saves backbone.state_dict() like this
        cases[depth] = Case(depth, ref, x, y, pth)
    return cases[depth]


def _onnx_case(cases: dict[int, Case], tmp_path_factory: pytest.TempPathFactory, depth: int) -> Case:
    case = _case(cases, tmp_path_factory, depth)
    if case.onnx_path is None:
        case.onnx_path = export_like_arcface_torch(case.ref, case.pth.with_name("model.onnx"))
    return case


def _embed(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(x)


def _ort(path: Path, x: np.ndarray) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # torch2onnx leaves the output's batch dim at 1: ORT warns
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return sess.run(None, {name: x.astype(np.float32)})[0]


def _assert_same_embedding(got: torch.Tensor, want: torch.Tensor, what: str, rtol: float) -> None:
    got = torch.as_tensor(got).float()
    want = torch.as_tensor(want).float()
    assert got.shape == want.shape, f"{what}: shape {tuple(got.shape)} vs {tuple(want.shape)}"
    cos = F.cosine_similarity(got, want, dim=1)
    diff = (got - want).abs().max().item()
    scale = want.abs().max().item()
    logger.info("%s: min cosine %.8f, max |diff| %.3g (max |y| %.3g)", what, cos.min().item(), diff, scale)
    assert cos.min().item() >= COS_MIN, f"{what}: cosine {cos.tolist()} < {COS_MIN}"
    assert diff <= rtol * max(scale, 1.0), f"{what}: max |diff| {diff} vs max |y| {scale}"


# ----------------------------------------------------------------------------------------
# Layout
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", DEPTHS)
def test_layout_matches_arcface_torch(depth: int) -> None:
    ours = iresnet(depth)
    ref = reference_iresnet(depth)
    ours_sd, ref_sd = ours.state_dict(), ref.state_dict()
    assert list(ours_sd) == list(ref_sd), "state_dict keys or their order differ"
    for key, value in ref_sd.items():
        assert ours_sd[key].shape == value.shape, key
        assert ours_sd[key].dtype == value.dtype, key

    # Facts of arcface_torch's IResNet written out (not read from either implementation).
    assert IRESNET_BLOCKS[depth] == tuple(LAYERS[depth])
    blocks = {
        18: [2, 2, 2, 2],
        34: [3, 4, 6, 3],
        50: [3, 4, 14, 3],
        100: [3, 13, 30, 3],
        200: [6, 26, 60, 6],
    }[depth]
    for k, (n, planes) in enumerate(zip(blocks, (64, 128, 256, 512)), start=1):
        layer = getattr(ours, f"layer{k}")
        assert len(layer) == n
        first = layer[0]
        assert first.conv2.stride == (2, 2) and first.conv1.stride == (1, 1)
        assert first.downsample is not None and first.downsample[0].stride == (2, 2)
        assert first.downsample[0].kernel_size == (1, 1) and first.downsample[0].bias is None
        assert all(b.downsample is None for b in list(layer)[1:])
        assert all(b.prelu.weight.shape == (planes,) for b in layer)
    assert ours.conv1.weight.shape == (64, 3, 3, 3) and ours.conv1.bias is None
    assert ours.fc.weight.shape == (512, 512 * 7 * 7) and ours.fc.bias is not None
    assert ours.prelu.weight.shape == (64,)
    bns = [m for m in ours.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert all(m.eps == 1e-5 for m in bns) and BN_EPS == 1e-5
    assert isinstance(ours.features, nn.BatchNorm1d)
    assert torch.equal(ours.features.weight, torch.ones(512))
    assert not ours.features.weight.requires_grad
    assert "features.weight" in ours_sd


def test_forward_shape_and_input_check() -> None:
    model = iresnet(18).eval()
    with torch.no_grad():
        out = model(torch.zeros(2, 3, 112, 112))
    assert out.shape == (2, 512) and out.dtype == torch.float32
    with pytest.raises(ValueError, match=r"\[N, 3, 112, 112\]"):
        model(torch.zeros(1, 3, 96, 96))


# ----------------------------------------------------------------------------------------
# .pth checkpoints
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", _depth_params((18, 34, 50)))  # 100, 200: make test-slow
def test_pth_checkpoint_embeds_identically(depth: int, cases, tmp_path_factory) -> None:
    case = _case(cases, tmp_path_factory, depth)
    state = load_pth_state_dict(case.pth)
    ours = iresnet(depth)
    check_state_dict(ours, state)
    result = ours.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    _assert_same_embedding(_embed(ours, case.x), case.y, f"r{depth} .pth", rtol=1e-5)


def test_pth_nested_and_dataparallel_prefix(cases, tmp_path_factory, tmp_path: Path) -> None:
    case = _case(cases, tmp_path_factory, 18)
    inner = {f"module.{k}": v for k, v in case.ref.state_dict().items()}
    path = tmp_path / "checkpoint.pt"
    torch.save({"state_dict": inner, "epoch": 3, "lr": 0.1}, path)
    state = load_pth_state_dict(path)
    assert list(state) == list(case.ref.state_dict())
    ours = load_weights_file(iresnet(18), path)
    _assert_same_embedding(_embed(ours, case.x), case.y, "nested .pt", rtol=1e-5)

    torch.save({"model": case.ref.state_dict(), "optimizer": {"lr": 0.1}}, path)
    assert list(load_pth_state_dict(path)) == list(case.ref.state_dict())


def test_pth_missing_key_is_named(cases, tmp_path_factory, tmp_path: Path) -> None:
    state = dict(_case(cases, tmp_path_factory, 18).ref.state_dict())
    del state["layer2.1.bn2.running_var"]
    path = tmp_path / "backbone.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"missing keys \['layer2\.1\.bn2\.running_var'\]"):
        load_weights_file(iresnet(18), path)


def test_pth_wrong_shape_is_named(cases, tmp_path_factory, tmp_path: Path) -> None:
    state = dict(_case(cases, tmp_path_factory, 18).ref.state_dict())
    state["fc.weight"] = torch.zeros(256, 512 * 7 * 7)
    path = tmp_path / "backbone.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"fc\.weight: checkpoint \[256, 25088\] vs module \[512, 25088\]"):
        load_weights_file(iresnet(18), path)


def test_pth_wrong_depth_names_keys(cases, tmp_path_factory) -> None:
    state = load_pth_state_dict(_case(cases, tmp_path_factory, 18).pth)
    with pytest.raises(ValueError, match=r"missing keys \['layer1\.2\.bn1\.weight'"):
        check_state_dict(iresnet(34), state)


def test_pth_not_a_checkpoint(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"this is not a checkpoint\n" * 10)
    with pytest.raises(ValueError, match="not a PyTorch checkpoint"):
        load_pth_state_dict(junk)
    pickled_module = tmp_path / "module.pth"
    torch.save(nn.Linear(2, 2), pickled_module)
    with pytest.raises(ValueError, match="not a plain PyTorch state_dict"):
        load_pth_state_dict(pickled_module)
    not_tensors = tmp_path / "dict.pth"
    torch.save({"epoch": 3, "name": "x"}, not_tensors)
    with pytest.raises(ValueError, match="not a state_dict"):
        load_pth_state_dict(not_tensors)
    with pytest.raises(FileNotFoundError):
        load_pth_state_dict(tmp_path / "absent.pth")
    with pytest.raises(ValueError, match="don't know how to read"):
        load_weights_file(iresnet(18), tmp_path / "weights.h5")


def test_safetensors_dispatch(cases, tmp_path_factory, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    case = _case(cases, tmp_path_factory, 18)
    path = tmp_path / "backbone.safetensors"
    save_file({k: v.contiguous() for k, v in case.ref.state_dict().items()}, str(path))
    ours = load_weights_file(iresnet(18), path)
    _assert_same_embedding(_embed(ours, case.x), case.y, "safetensors", rtol=1e-5)


# ----------------------------------------------------------------------------------------
# ONNX exports as arcface_torch's torch2onnx.py writes them
# ----------------------------------------------------------------------------------------


def _bn_count(path: Path) -> int:
    return sum(n.op_type == "BatchNormalization" for n in onnx.load(str(path)).graph.node)


@pytest.mark.parametrize("depth", _depth_params((18,)))  # the same blocks, deeper: make test-slow
def test_onnx_export_embeds_identically(depth: int, cases, tmp_path_factory) -> None:
    case = _onnx_case(cases, tmp_path_factory, depth)
    proto = onnx.load(str(case.onnx_path))
    assert proto.graph.input[0].name == "data"
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) == 11
    # The exporter folded every Conv+BN pair: the loader's folded path is what is tested.
    n_bn = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in case.ref.modules())
    assert _bn_count(case.onnx_path) < n_bn / 2

    state = state_dict_from_onnx(case.onnx_path, iresnet(depth))
    ours = iresnet(depth)
    result = ours.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    got = _embed(ours, case.x)
    _assert_same_embedding(got, case.y, f"r{depth} ONNX -> ours vs reference", rtol=1e-4)

    y_ort = _ort(case.onnx_path, case.x.numpy())
    _assert_same_embedding(torch.from_numpy(y_ort), case.y, f"r{depth} ORT vs reference", rtol=1e-4)
    _assert_same_embedding(got, torch.from_numpy(y_ort), f"r{depth} ours vs ORT", rtol=1e-4)


def test_onnx_unfolded_bn_with_mxnet_epsilon(tmp_path: Path) -> None:
    """BN kept as BatchNormalization nodes, eps 2e-5 (MXNet-era) mapped onto our 1e-5."""
    ref = randomize_(reference_iresnet(18, bn_eps=2e-5), seed=7)
    with torch.no_grad():
        # Variances of ~1e-4 make eps (2e-5 vs 1e-5) matter; the gains are scaled down by
        # the same sqrt so activations keep their size.
        for m in ref.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_var.mul_(1e-4)
                m.weight.mul_(1e-2)
    path = export_like_arcface_torch(ref, tmp_path / "unfolded.onnx", do_constant_folding=False)
    n_bn = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in ref.modules())
    assert _bn_count(path) == n_bn
    eps = {
        round(a.f, 9)
        for n in onnx.load(str(path)).graph.node
        if n.op_type == "BatchNormalization"
        for a in n.attribute
        if a.name == "epsilon"
    }
    assert eps == {2e-5}

    x = torch.rand((2, 3, 112, 112), generator=torch.Generator().manual_seed(3)) * 2 - 1
    want = _embed(ref, x)
    ours = load_weights_file(iresnet(18), path)
    _assert_same_embedding(_embed(ours, x), want, "unfolded eps-2e-5 ONNX", rtol=1e-4)
    _assert_same_embedding(torch.from_numpy(_ort(path, x.numpy())), want, "unfolded ORT", rtol=1e-4)


@SLOW  # ~15 s; the folded-features rule it covers is also in test_onnx_rules_against_onnxruntime
def test_onnx_torch_export_based_exporter(tmp_path: Path) -> None:
    """The default (dynamo) exporter: opset 18, Reshape before Gemm, features folded into fc."""
    ref = randomize_(reference_iresnet(18), seed=11)
    x = torch.rand((2, 3, 112, 112), generator=torch.Generator().manual_seed(4)) * 2 - 1
    path = tmp_path / "dynamo.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(ref, (x[:1],), str(path), input_names=["input.1"], dynamo=True)
    ours = load_weights_file(iresnet(18), path)
    want = _embed(ref, x)
    _assert_same_embedding(_embed(ours, x), want, "torch.export ONNX", rtol=1e-4)
    _assert_same_embedding(torch.from_numpy(_ort(path, x[:1].numpy())), want[:1], "dynamo ORT", rtol=1e-4)


def test_onnx_too_shallow_file_names_tensor_and_key(cases, tmp_path_factory) -> None:
    path = _onnx_case(cases, tmp_path_factory, 18).onnx_path
    # r18 has 2 blocks in layer1, r34 3: our layer1.2 meets the file's layer2.0, whose conv1
    # is [128, 64, 3, 3] where ours is [64, 64, 3, 3].
    with pytest.raises(
        ValueError,
        match=r"ONNX tensor '[^']+' of Conv node '[^']*' has shape \[128, 64, 3, 3\], but our "
        r"'layer1\.2\.conv1\.weight' has shape \[64, 64, 3, 3\]",
    ):
        state_dict_from_onnx(path, iresnet(34))


def test_onnx_too_deep_file_names_tensor_and_key(cases, tmp_path_factory) -> None:
    path = _onnx_case(cases, tmp_path_factory, 18).onnx_path
    shallower = IResNet((2, 2, 2, 1))
    # Our bn2 takes the file's layer4.1.bn1 (both 512); then our fc meets layer4.1.conv1.
    with pytest.raises(ValueError, match=r"ONNX tensor '[^']+' of Conv node .* does not match our 'fc\.weight'"):
        state_dict_from_onnx(path, shallower)


# ----------------------------------------------------------------------------------------
# Hand-built ONNX graphs: one rule each, onnxruntime as the oracle
# ----------------------------------------------------------------------------------------


def _init(name: str, value: np.ndarray) -> TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype=np.float32), name)


def _save_graph(path: Path, nodes: list, inits: list, out_dim: int, opset: int = 13) -> Path:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, out_dim])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _tiny_module() -> nn.Sequential:
    return nn.Sequential(
        nn.BatchNorm2d(3, eps=1e-5),
        nn.Conv2d(3, 4, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(4, eps=1e-5),
        nn.PReLU(4),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 5),
        nn.BatchNorm1d(5, eps=1e-5),
    )


def _tiny_graph(
    path: Path,
    rng: np.random.Generator,
    linear: str,
    slope_shape: tuple[int, ...],
    final_bn: bool = True,
) -> Path:
    """BN(eps 2e-5, tiny var) -> Conv(+folded bias) -> PRelu -> Flatten -> linear [-> BN].

    Without ``final_bn`` the module's BatchNorm1d reads as folded into the linear layer.
    """
    u = lambda lo, hi, *shape: rng.uniform(lo, hi, size=shape).astype(np.float32)  # noqa: E731
    inits = [
        _init("s0", u(0.5, 1.5, 3)),
        _init("b0", u(-0.3, 0.3, 3)),
        _init("m0", u(-0.3, 0.3, 3)),
        _init("v0", u(1e-6, 1e-5, 3)),
        _init("cw", u(-0.5, 0.5, 4, 3, 3, 3)),
        _init("cb", u(-0.5, 0.5, 4)),
        _init("slope", u(0.05, 0.4, *slope_shape)),
        _init("s1", u(0.5, 1.5, 5)),
        _init("b1", u(-0.3, 0.3, 5)),
        _init("m1", u(-0.3, 0.3, 5)),
        _init("v1", u(0.5, 2.0, 5)),
    ]
    nodes = [
        helper.make_node("BatchNormalization", ["x", "s0", "b0", "m0", "v0"], ["h0"], epsilon=2e-5),
        helper.make_node("Conv", ["h0", "cw", "cb"], ["h1"], strides=[2, 2], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        helper.make_node("PRelu", ["h1", "slope"], ["h2"]),
        helper.make_node("Flatten", ["h2"], ["h3"], axis=1),
    ]
    if linear == "gemm_transB0":
        inits += [_init("fw", u(-0.2, 0.2, 64, 5)), _init("fb", u(-0.2, 0.2, 5))]
        nodes.append(helper.make_node("Gemm", ["h3", "fw", "fb"], ["h4"], alpha=0.5, beta=2.0, transB=0))
    elif linear == "matmul_add":
        inits += [_init("fw", u(-0.2, 0.2, 64, 5)), _init("fb", u(-0.2, 0.2, 5))]
        nodes += [
            helper.make_node("MatMul", ["h3", "fw"], ["h4a"]),
            helper.make_node("Add", ["h4a", "fb"], ["h4"]),
        ]
    else:
        raise AssertionError(linear)
    if final_bn:
        bn = helper.make_node("BatchNormalization", ["h4", "s1", "b1", "m1", "v1"], ["y"], epsilon=1e-5)
        nodes.append(bn)
    else:
        nodes.append(helper.make_node("Identity", ["h4"], ["y"]))
        inits = [i for i in inits if i.name not in ("s1", "b1", "m1", "v1")]
    return _save_graph(path, nodes, inits, 5)


@pytest.mark.parametrize(
    "linear,slope_shape,final_bn",
    [
        ("gemm_transB0", (4, 1, 1), True),
        ("matmul_add", (1, 4, 1, 1), True),
        ("gemm_transB0", (1, 4, 1, 1), False),
        ("matmul_add", (4, 1, 1), False),
    ],
)
def test_onnx_rules_against_onnxruntime(
    tmp_path: Path, linear: str, slope_shape: tuple[int, ...], final_bn: bool
) -> None:
    rng = np.random.default_rng(5)
    path = _tiny_graph(tmp_path / "tiny.onnx", rng, linear, slope_shape, final_bn)
    x = rng.uniform(-1, 1, size=(1, 3, 8, 8)).astype(np.float32)
    want = _ort(path, x)
    module = _tiny_module()
    module.load_state_dict(state_dict_from_onnx(path, module), strict=True)
    got = _embed(module, torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_onnx_epsilon_shift_value(tmp_path: Path) -> None:
    """The eps-2e-5 BatchNorm's variance is shifted by +1e-5 to fit our eps 1e-5."""
    rng = np.random.default_rng(5)
    path = _tiny_graph(tmp_path / "tiny.onnx", rng, "gemm_transB0", (4, 1, 1))
    module = _tiny_module()
    state = state_dict_from_onnx(path, module)
    var = onnx.numpy_helper.to_array(next(i for i in onnx.load(str(path)).graph.initializer if i.name == "v0"))
    np.testing.assert_allclose(state["0.running_var"].numpy(), var + 2e-5 - 1e-5, rtol=1e-6)


def test_onnx_extra_and_missing_nodes_are_named(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    path = _tiny_graph(tmp_path / "tiny.onnx", rng, "gemm_transB0", (4, 1, 1))
    shorter = nn.Sequential(*list(_tiny_module())[:4])  # no Flatten/Linear/BN1d
    with pytest.raises(ValueError, match=r"ONNX tensor 'fw' of Gemm node .* has no counterpart"):
        state_dict_from_onnx(path, shorter)
    longer = nn.Sequential(*_tiny_module(), nn.PReLU(5))
    with pytest.raises(ValueError, match=r"our '7\.weight' \(PReLU\) has no ONNX counterpart"):
        state_dict_from_onnx(path, longer)
    wrong = _tiny_module()
    wrong[3] = nn.PReLU(1)
    with pytest.raises(ValueError, match=r"ONNX tensor 'slope' of PRelu node .* 4 slopes .* our '3\.weight'"):
        state_dict_from_onnx(path, wrong)
    strided = _tiny_module()
    strided[1] = nn.Conv2d(3, 4, 3, stride=1, padding=1, bias=False)
    with pytest.raises(ValueError, match=r"ONNX tensor 'cw' of Conv node .* strides=\[2, 2\], but our '1\.weight'"):
        state_dict_from_onnx(path, strided)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a protobuf")
    with pytest.raises(ValueError, match="not a readable ONNX model"):
        state_dict_from_onnx(bad, shorter)


# ----------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------


def test_registry_records() -> None:
    from fetoolkit.models.registry import build_arch, get_model_spec

    for depth in DEPTHS:
        spec = get_model_spec(f"arcface_r{depth}")
        assert spec.arch == f"iresnet{depth}" and spec.weights is None
        c = spec.contract
        assert (c.size, c.color, c.mean, c.std, c.layout, c.embed_dim) == (
            (112, 112),
            "RGB",
            (127.5,) * 3,
            (127.5,) * 3,
            "NCHW",
            512,
        )
    model = build_arch("iresnet50")
    assert isinstance(model, IResNet) and model.blocks == (3, 4, 14, 3)
    r50 = get_model_spec("arcface_r50").releases
    r100 = get_model_spec("arcface_r100").releases
    assert r50["buffalo_l"].filename == "w600k_r50.onnx" and r50["buffalo_l"].format == "onnx"
    assert r100["antelopev2"].filename == "glintr100.onnx"
    assert r100["onnx_zoo_arcfaceresnet100_8"].filename == "arcfaceresnet100-8.onnx"
    for releases in (r50, r100):
        assert releases["ms1mv3"].filename == "backbone.pth" and releases["ms1mv3"].format == "pth"
        assert releases["glint360k"].format == "pth"
        assert all(w.kind == "url" and w.sha256 is None for w in releases.values())
