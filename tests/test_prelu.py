"""The PReLU forms of ``fetoolkit.backends.prelu``: each rewrite against the native ``PRelu``
graph in onnxruntime, and the matchers on the rewrites, read through both graph views (the int8
pass's dict maps and the importer's ``OnnxGraph``).

Oracle: onnxruntime running the native ``PRelu`` graph; the slopes that built the graph.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from fetoolkit.backends.onnx_graph import graph_maps
from fetoolkit.backends.prelu import (
    GraphLookup,
    match_decomposed,
    match_split,
    one_pass_forms,
    one_pass_prelus,
    rewrite_prelus,
    split_prelu_inputs,
    split_prelus,
)
from fetoolkit.models.onnx_reader import OnnxGraph

# Both signs, 0 (ReLU), 1 (identity) and > 1 (the split form needs a sign there).
SLOPES = np.array([-9.4, -1.0, 0.0, 0.25, 1.0, 2.5, 8.9], np.float32)


def _prelu_graph(with_t_output: bool) -> onnx.ModelProto:
    """x [N, 4, 6, 6] -> Conv 3x3 -> y -> PRelu(y, SLOPES [C, 1, 1]) -> t -> Conv 1x1 -> z [N, 5, 6, 6]."""
    rng = np.random.default_rng(0)
    c = len(SLOPES)
    inits = [
        numpy_helper.from_array(rng.standard_normal((c, 4, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(SLOPES.reshape(c, 1, 1), "slope"),
        numpy_helper.from_array(rng.standard_normal((5, c, 1, 1)).astype(np.float32), "wp"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("PRelu", ["y", "slope"], ["t"], name="prelu"),
        helper.make_node("Conv", ["t", "wp"], ["z"], kernel_shape=[1, 1], name="sink"),
    ]
    outputs = [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["n", 5, 6, 6])]
    if with_t_output:
        outputs.append(helper.make_tensor_value_info("t", TensorProto.FLOAT, ["n", c, 6, 6]))
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4, 6, 6])], outputs, inits
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})


def _lookups(model: onnx.ModelProto) -> list[GraphLookup]:
    """The int8 pass's view (initializers only) and the importer's (``OnnxGraph``, folding)."""
    producer, consumers = graph_maps(model.graph.node)
    consts = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    reader = OnnxGraph(model.graph, 17)

    def value(name: str) -> np.ndarray | None:
        t = reader.const(name)
        return None if t is None else t.value

    return [
        GraphLookup(producer.get, lambda t: consumers.get(t, []), consts.get),
        GraphLookup(reader.producer.get, lambda t: reader.consumers.get(t, []), value),
    ]


X = np.random.default_rng(1).standard_normal((3, 4, 6, 6)).astype(np.float32) * 3


@pytest.mark.parametrize("form", ["decomposed", "exact"])
def test_rewrite_computes_prelu(form: str) -> None:
    model = _prelu_graph(with_t_output=True)
    want = _run(model, X)
    assert (want[1] < 0).any() and (want[1] > 0).any()
    assert rewrite_prelus(model, form) == 1  # type: ignore[arg-type]
    assert "PRelu" not in {n.op_type for n in model.graph.node}
    onnx.checker.check_model(model)
    got = _run(model, X)
    if form == "exact":  # the one product is torch's (and onnxruntime's PRelu's) a * y
        np.testing.assert_array_equal(got[1], want[1])
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-4)
    found = [match_decomposed(n, look) for look in _lookups(model) for n in model.graph.node]
    assert sum(f is not None for f in found) == (2 if form == "decomposed" else 0)  # one per view
    for f in filter(None, found):
        a = numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == f.a))
        assert f.y == "y" and np.array_equal(a.reshape(-1), SLOPES)


def test_split_computes_prelu_and_is_matched_with_its_sign() -> None:
    model = _prelu_graph(with_t_output=False)
    want = _run(model, X)
    assert split_prelus(model) == 1
    assert {n.op_type for n in model.graph.node} == {"Conv", "Relu", "Add"}
    onnx.checker.check_model(model)
    np.testing.assert_allclose(_run(model, X)[0], want[0], rtol=1e-5, atol=1e-4)
    add = next(n for n in model.graph.node if n.op_type == "Add")
    for look in _lookups(model):
        found = match_split(add, look)
        assert found is not None and match_decomposed(add, look) is None
        np.testing.assert_allclose(found.slope, SLOPES, rtol=1e-6)
        np.testing.assert_array_equal(found.sign, np.where(SLOPES > 1, -1.0, 1.0))


def test_decomposed_with_a_second_reader_is_not_a_prelu() -> None:
    model = _prelu_graph(with_t_output=True)
    rewrite_prelus(model, "decomposed")
    add = next(n for n in model.graph.node if n.op_type == "Add")
    assert all(match_decomposed(add, look) is not None for look in _lookups(model))
    relu = next(n for n in model.graph.node if n.op_type == "Relu")
    model.graph.node.append(helper.make_node("Identity", [relu.output[0]], ["relu_copy"]))  # a second reader
    assert all(match_decomposed(add, look) is None for look in _lookups(model))


def test_one_pass_forms_follow_the_slope() -> None:
    """A slope near 0 keeps the negative side (the positive side would scale its input's rounding
    by ``(1 - a)/a``); a large ``|a|`` takes the positive side (on the negative side ``y' = y``
    would span ``1/|a|`` of the result's range). Same ranges on both sides of ``y``."""
    ones = np.ones(len(SLOPES))
    positive = one_pass_forms(SLOPES, ones, ones)
    assert positive.tolist() == [True, False, False, False, False, True, True]
    # a slope of exactly 0 cannot be the positive side (k = 0 would erase y)
    assert not one_pass_forms(np.zeros(3), np.ones(3), np.ones(3)).any()
    # a channel that never goes negative on the calibration faces: the negative side costs nothing
    assert not one_pass_forms(np.array([-9.4]), np.ones(1), np.zeros(1)).any()


@pytest.mark.parametrize("sides", ["negative", "chosen"])
def test_one_pass_computes_prelu(sides: str) -> None:
    """From the split form: one 1x1 depthwise Conv, its Relu and the Add per PReLU, the sign
    (and on the positive side the slope) folded into the Conv writing ``y``; same output."""
    model = _prelu_graph(with_t_output=False)
    want = _run(model, X)
    assert split_prelus(model) == 1
    assert split_prelu_inputs(model) == ["y"]
    ranges = None if sides == "negative" else {"y": (np.ones(len(SLOPES)), np.ones(len(SLOPES)))}
    assert one_pass_prelus(model, ranges) == 1
    ops = [n.op_type for n in model.graph.node]
    assert sorted(ops) == ["Add", "Conv", "Conv", "Conv", "Relu"], ops
    onnx.checker.check_model(model)
    np.testing.assert_allclose(_run(model, X)[0], want[0], rtol=1e-4, atol=1e-4)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    w = next(v for k, v in inits.items() if k.endswith("_onepass_w")).reshape(-1)
    positive = np.zeros(len(SLOPES), bool) if ranges is None else one_pass_forms(SLOPES, *ranges["y"])
    want_w = np.where(positive, (1 - SLOPES) / np.where(positive, SLOPES, 1), SLOPES - 1)
    np.testing.assert_allclose(w, want_w, rtol=1e-6)


def test_one_pass_keeps_a_prelu_whose_input_has_another_reader() -> None:
    model = _prelu_graph(with_t_output=False)
    split_prelus(model)
    model.graph.node.append(helper.make_node("Identity", ["y"], ["y_copy"]))  # a second reader of y
    model.graph.output.append(helper.make_tensor_value_info("y_copy", TensorProto.FLOAT, None))
    assert one_pass_prelus(model) == 0
    assert [n.op_type for n in model.graph.node].count("Conv") == 4  # still split


def test_one_pass_needs_a_conv_to_fold_into() -> None:
    """A slope > 1 needs ``k = -1`` folded into the producer: not possible from a graph input."""
    model = _prelu_graph(with_t_output=False)
    split_prelus(model)
    g = model.graph
    conv = next(n for n in g.node if n.name == "conv")
    g.node.remove(conv)
    g.input.append(helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", len(SLOPES), 6, 6]))
    assert one_pass_prelus(model) == 0
