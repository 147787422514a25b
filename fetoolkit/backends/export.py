"""Export a torch face model to ONNX with its input contract in ``metadata_props``.

``export_onnx`` writes an fp32 file with a dynamic batch axis and runs three graph passes on
what the TorchScript exporter emits (each exact: the outputs are the same numbers up to float
rounding, which ``tests/test_export.py`` checks against torch):

1. constant folding of the shape arithmetic torch writes for ``F.pad`` (a ``ConstantOfShape``/
   ``Concat``/``Slice``/``Transpose``/``Cast`` chain per pad), evaluated with ``onnx.reference``;
2. a zero ``Pad`` feeding only Convs is folded into their (possibly asymmetric) ``pads``, so
   the TensorFlow "SAME" padding of the sirius MobileFaceNet needs no extra op;
3. ``PRelu(y, a)`` after a Conv is written as ``Conv1x1dw(y, s*a) + Relu(Conv1x1dw(y, s*(1-a)))``
   (``prelu="split"``, the default; ``fetoolkit.backends.prelu.split_prelus``: ``s = -1`` on
   the channels with ``a > 1``, the sign folded into the input channels of the Convs that read
   the result, so the Relu branch's weight is never negative). onnxruntime's ``PRelu`` kernel
   cannot run in its blocked NCHWc layout (a slow broadcast kernel plus two layout reorders per
   PReLU); the split form is two NCHWc depthwise passes, the first with its Relu fused and the
   second with the Add fused. ``prelu="decomposed"`` (``a * y + (1 - a) * relu(y)``: ``Mul``,
   ``Relu``, ``Mul``, ``Add``) is the previous form: onnxruntime runs it in three passes (the
   Relu stays apart, as ``y`` has two readers). On the sirius MobileFaceNet at batch 2, one
   thread, against the naive tflite2onnx conversion (``make bench``): split 1.99x, decomposed
   1.63x with AVX-512; 1.63x and 1.46x on AVX2 kernels.
   ``fetoolkit.models.onnx_import`` reads both forms back as PReLUs, bit-exactly;
4. float32 weights with ``|w| < 1e-15`` (``NEGLIGIBLE_WEIGHT``) are set to 0. The faceplugin
   MobileFaceNet has hundreds of dead channels whose weights are 1e-20..1e-38 (8,938 of them
   denormal); they keep producing denormal activations, on which x86 arithmetic is ~100x
   slower, and onnxruntime ran that model 4-9x slower. Such a weight adds less than 1e-12 to
   a sum of O(1) terms, below float32 resolution: on all 400 aligned ORL faces the outputs
   were bit-identical with and without them (and ``fetoolkit.parity`` checks every export).

Metadata keys (all strings): ``fetoolkit.contract`` (JSON ``InputContract``),
``fetoolkit.model``, ``fetoolkit.source_sha256``, ``fetoolkit.embed_dim``,
``fetoolkit.precision`` (``fp32`` here; ``fetoolkit.backends.quantize`` writes ``fp16``/``int8``)
and ``fetoolkit.export`` (JSON: opset, PReLU form, exporter version).
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
import onnx
import torch
import torch.nn as nn
from onnx import helper, numpy_helper

from fetoolkit.backends.onnx_backend import EXPORT_VERSION
from fetoolkit.backends.onnx_graph import (  # noqa: F401
    META_CONTRACT,
    META_EMBED_DIM,
    META_EXPORT,
    META_MODEL,
    META_PRECISION,
    META_SOURCE_SHA256,
    NEVER_FOLD,
    graph_maps,
    opset_of,
    pad_attributes,
    remove_unused_initializers,
    set_metadata,
    zero_pads_hw,
)
from fetoolkit.backends.prelu import rewrite_prelus, split_prelus
from fetoolkit.hub import atomic_path
from fetoolkit.types import InputContract

log = logging.getLogger(__name__)


#: Weights smaller than this in magnitude are written as 0 (see pass 4 in the module docstring).
NEGLIGIBLE_WEIGHT = 1e-15

PreluForm = Literal["split", "decomposed", "native"]
PRELU_FORMS: tuple[str, ...] = ("split", "decomposed", "native")


def export_onnx(
    module: nn.Module,
    contract: InputContract,
    path: str | Path,
    *,
    name: str,
    source_sha256: str | None,
    opset: int = 17,
    prelu: PreluForm = "split",
) -> Path:
    """Write ``module`` as an ONNX file with a dynamic batch axis, checked by ``onnx.checker``.

    The file records the input contract, the model name, the embedding size and the source
    weights' sha256 in ``metadata_props`` (see the module docstring), so ``OnnxEmbedder``
    needs no flags. Written to a temporary file and renamed, so a crash never leaves half a
    model.

    Args:
        module: NCHW float32 ``[N, 3, H, W]`` -> ``[N, D]`` model.
        contract: its input contract (layout NCHW).
        path: destination ``.onnx``.
        name: registry name recorded in the file.
        source_sha256: sha256 of the weights the module was loaded from.
        opset: ONNX opset.
        prelu: ``"split"`` (fastest in onnxruntime, see the module docstring), ``"decomposed"``
            (the four plain ops) or ``"native"`` (one ``PRelu`` node per PReLU, as torch writes it).

    Returns:
        ``path``.
    """
    if prelu not in PRELU_FORMS:
        raise ValueError(f"prelu must be one of {PRELU_FORMS}, got {prelu!r}")
    if contract.layout != "NCHW":
        raise ValueError(f"our torch modules take NCHW input; the contract says {contract.layout}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = contract.size
    dummy = torch.zeros(2, 3, h, w)
    module = module.eval()
    with atomic_path(path) as tmp:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            out_shape = tuple(module(dummy).shape)
            if out_shape != (2, contract.embed_dim):
                raise ValueError(
                    f"{name}: the module returns {list(out_shape)} for 2 faces, the contract says "
                    f"[N, {contract.embed_dim}]"
                )
            torch.onnx.export(
                module,
                (dummy,),
                tmp,
                input_names=["input"],
                output_names=["embedding"],
                opset_version=opset,
                dynamic_axes={"input": {0: "batch"}, "embedding": {0: "batch"}},
                do_constant_folding=True,
                dynamo=False,
            )
        model = onnx.load(tmp)
        dims = model.graph.output[0].type.tensor_type.shape.dim
        if len(dims) == 2 and not dims[1].HasField("dim_value"):  # the exporter leaves it symbolic
            dims[1].ClearField("dim_param")
            dims[1].dim_value = contract.embed_dim
        n_folded = fold_constant_nodes(model)
        n_pads = fuse_zero_pads_into_convs(model)
        n_prelu = decompose_prelu(model) if prelu != "native" else 0
        if prelu == "split":
            n_prelu = split_prelus(model)
        n_zeroed = zero_negligible_weights(model)
        remove_unused_initializers(model)
        log.debug(
            "%s: folded %d constant nodes, %d Pad nodes into Convs, rewrote %d PReLUs, zeroed %d negligible weights",
            name,
            n_folded,
            n_pads,
            n_prelu,
            n_zeroed,
        )
        export_info = {
            "opset": opset,
            "prelu": prelu,
            "weights_zeroed_below": NEGLIGIBLE_WEIGHT,
            "n_weights_zeroed": n_zeroed,
            "exporter": f"torch {torch.__version__} (TorchScript)",
            "fetoolkit_export_version": EXPORT_VERSION,
        }
        set_metadata(
            model,
            {
                META_CONTRACT: contract.to_json(),
                META_MODEL: name,
                META_SOURCE_SHA256: source_sha256 or "",
                META_EMBED_DIM: str(contract.embed_dim),
                META_PRECISION: "fp32",
                META_EXPORT: json.dumps(export_info, sort_keys=True),
            },
        )
        onnx.checker.check_model(model, full_check=True)
        onnx.save(model, str(tmp))
    log.info("exported %s to %s", name, path)
    return path


# --------------------------------------------------------------------------------------------
# Graph passes (in place; each returns how many nodes it changed)
# --------------------------------------------------------------------------------------------


def fold_constant_nodes(model: onnx.ModelProto, max_elements: int = 1 << 16) -> int:
    """Replace every default-domain node whose inputs are all small constants by initializers.

    ``Constant`` nodes become initializers too. Evaluated with ``onnx.reference`` at the
    model's opset; a node it cannot evaluate is kept.
    """
    from onnx.reference import ReferenceEvaluator

    g = model.graph
    opset = opset_of(model) or 13
    consts: dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    graph_inputs = {i.name for i in g.input}
    kept: list[onnx.NodeProto] = []
    new_inits: list[onnx.TensorProto] = []
    folded = 0
    for node in g.node:
        values: dict[str, np.ndarray] | None = {}
        if node.op_type in NEVER_FOLD or node.domain not in ("", "ai.onnx") or len(node.output) != 1:
            values = None
        else:
            for name in node.input:
                if not name:
                    continue
                if name not in consts or name in graph_inputs:  # an input may override an initializer
                    values = None
                    break
                values[name] = consts[name]
        if (
            values is None
            or (not node.input and node.op_type != "Constant")
            or any(v.size > max_elements for v in values.values())
        ):
            kept.append(node)
            continue
        if node.op_type == "Constant":
            attr = next((a for a in node.attribute if a.name == "value"), None)
            if attr is None:
                kept.append(node)
                continue
            out = numpy_helper.to_array(attr.t)
        else:
            inputs = [
                helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), None)
                for n, v in values.items()
            ]
            sub = helper.make_graph([node], "fold", inputs, [helper.make_tensor_value_info(node.output[0], 0, None)])
            try:
                (out,) = ReferenceEvaluator(sub, opsets={"": opset}).run(None, values)
            except Exception as e:  # an op the reference runtime lacks: keep the node
                log.debug("not folding %s node %r: %s", node.op_type, node.name, e)
                kept.append(node)
                continue
        out = np.asarray(out)
        consts[node.output[0]] = out
        new_inits.append(numpy_helper.from_array(out, node.output[0]))
        folded += 1
    del g.node[:]
    g.node.extend(kept)
    g.initializer.extend(new_inits)
    return folded


def fuse_zero_pads_into_convs(model: onnx.ModelProto) -> int:
    """Fold ``Pad`` nodes (constant mode, value 0, H/W pads only) into the Convs they feed.

    Only Pads whose every consumer is a Conv (as its data input, ``auto_pad`` unset) are
    folded; ONNX Conv ``pads`` may be asymmetric, so TensorFlow "SAME" padding fits.
    """
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    _, consumers = graph_maps(g.node)
    outputs = {o.name for o in g.output}
    drop: list[onnx.NodeProto] = []
    for node in g.node:
        if node.op_type != "Pad" or node.output[0] in outputs:
            continue
        mode, pads, value = pad_attributes(node)
        if mode != "constant":
            continue
        if pads is None:  # opset >= 11: pads, value and axes are inputs
            if len(node.input) < 2 or node.input[1] not in inits or (len(node.input) > 3 and node.input[3]):
                continue
            pads = [int(p) for p in numpy_helper.to_array(inits[node.input[1]]).reshape(-1)]
            if len(node.input) > 2 and node.input[2]:
                if node.input[2] not in inits:
                    continue
                value = float(numpy_helper.to_array(inits[node.input[2]]).reshape(-1)[0])
        hw = zero_pads_hw(mode, pads, value)  # [top, left, bottom, right]
        if hw is None:
            continue
        users = consumers.get(node.output[0], [])
        if not users or any(u.op_type != "Conv" or u.input[0] != node.output[0] for u in users):
            continue
        if any(
            helper.get_attribute_value(a) not in (b"NOTSET", "NOTSET")
            for u in users
            for a in u.attribute
            if a.name == "auto_pad"
        ):
            continue
        for conv in users:
            attr = next((a for a in conv.attribute if a.name == "pads"), None)
            old = list(attr.ints) if attr is not None else [0, 0, 0, 0]
            new = [a + b for a, b in zip(old, hw)]
            if attr is not None:
                conv.attribute.remove(attr)
            conv.attribute.append(helper.make_attribute("pads", new))
            conv.input[0] = node.input[0]
        drop.append(node)
    for node in drop:
        g.node.remove(node)
    return len(drop)


def decompose_prelu(model: onnx.ModelProto) -> int:
    """Rewrite ``PRelu(y, a)`` (constant float32 slope) as ``Add(Mul(y, a), Mul(Relu(y), 1 - a))``.

    Exact in real arithmetic (``fetoolkit.backends.prelu``, form ``"decomposed"``); in place,
    returns how many.
    """
    return rewrite_prelus(model, "decomposed")


def zero_negligible_weights(model: onnx.ModelProto, threshold: float = NEGLIGIBLE_WEIGHT) -> int:
    """Set float32 initializer values with ``0 < |w| < threshold`` to 0 in place; returns how many.

    The default threshold covers every denormal (``< 1.2e-38``) and the dead channels of
    vendor files (see pass 4 in the module docstring).
    """
    count = 0
    for k, init in enumerate(model.graph.initializer):
        if init.data_type != onnx.TensorProto.FLOAT:
            continue
        w = numpy_helper.to_array(init)
        small = (w != 0) & (np.abs(w) < threshold)
        if small.any():
            count += int(small.sum())
            model.graph.initializer[k].CopyFrom(numpy_helper.from_array(np.where(small, np.float32(0), w), init.name))
    return count
