"""The ONNX importer: an ONNX file of one of our networks into that module's state_dict.

- ``state_dict_from_onnx(path, module)``: rebuild ``module``'s state_dict from an ONNX file of
  the same network. It is the one ONNX importer of the project, for every architecture:
  IResNet exports (arcface_torch ``torch2onnx.py``, insightface's ``w600k_r50.onnx``/
  ``glintr100.onnx``, the torch.export-based exporter), the faceplugin MobileFaceNet
  ``fr_feature.onnx`` (BatchNorm folded into biased convs, depthwise convs, PReLU), and our
  own exports (``fetoolkit.backends.export``: zero ``Pad`` before a Conv, PReLU written as
  ``a * y + (1 - a) * relu(y)``).

Checkpoints and suffix dispatch are :mod:`fetoolkit.models.checkpoints`; the graph reading
(canonical order, constants, PReLU forms) is :mod:`fetoolkit.models.onnx_reader`.

How ONNX tensors are matched
----------------------------
Never by name: exporters rename (``onnx::Conv_1234``), fold BatchNorm into the previous
Conv/Gemm while keeping the *unfolded* name (the torch.export-based exporter writes the folded
kernel as ``0.weight``), and de-duplicate equal tensors behind ``Identity`` nodes. Instead:

1. The graph is ordered canonically: a post-order depth-first walk from the graph outputs,
   visiting each node's inputs left to right. For IResNet this is the forward order, with a
   block's residual branch (``Add`` input 0) before its shortcut (``Add`` input 1), which is
   also the module's registration (= ``state_dict``) order.
2. The weight-bearing nodes are collected in that order: ``Conv``, ``BatchNormalization``,
   ``PRelu``, ``Gemm`` and ``MatMul`` (+ the ``Add`` of its bias). Their constant inputs are
   resolved through initializers, ``Constant`` nodes and constant-only
   ``Identity``/``Unsqueeze``/``Squeeze``/``Reshape``/``Flatten``/``Cast`` nodes.
3. Our module's leaf layers with tensors (``Conv2d``, ``BatchNorm1d/2d``, ``PReLU``,
   ``Linear``) are walked in registration order and paired one by one with those nodes;
   every tensor's shape and every Conv's stride/padding/dilation/groups is checked. Any
   missing, extra or misshapen tensor raises ``ValueError`` naming the ONNX tensor (with its
   node) and our state_dict key.

Constant subgraphs (the ``ConstantOfShape``/``Concat``/``Slice`` chain torch writes for the
pads of ``nn.ZeroPad2d``) are evaluated with ``onnx.reference``. A zero ``Pad`` node feeding a
Conv counts as that Conv's padding, and our side adds an ``nn.ZeroPad2d`` registered right
before a ``Conv2d`` to the conv's own padding, so TensorFlow-style asymmetric "SAME" padding
(the sirius MobileFaceNet) is checked like any other. ``Add(Mul(y, a), Mul(Relu(y), b))`` with
``a + b = 1`` per channel is read as a PReLU with slope ``a``.

Folded BatchNorm
----------------
When our module has ``Conv2d``/``Linear`` followed by a BatchNorm but the graph's Conv/Gemm
output does not feed a ``BatchNormalization`` node, the exporter folded the BN into it
(``W' = W * g / sqrt(v + e)``, ``b' = beta + (b - m) * g / sqrt(v + e)``). The folded pair is
mapped back exactly as::

    layer.weight = W'
    layer.bias   = b'          (Linear/Conv with a bias; the BN then gets bias 0)
    bn.weight = 1, bn.bias = b' (Conv without a bias, e.g. every IResNet conv), or 0
    bn.running_mean = 0
    bn.running_var  = 1 - bn.eps, rounded so that float32((1 - eps) + eps) == 1.0

so that in eval mode ``bn(x) = (x - 0) / sqrt(1) * 1 + bias = x + bias`` with no rounding.
The original per-layer split of scale between conv and BN cannot be recovered (and need not
be: eval-mode outputs are identical). Training from such weights starts from a BN whose
running statistics are the identity; fine-tune with care.

BatchNorm epsilon
-----------------
An unfolded ``BatchNormalization`` whose ``epsilon`` differs from our BN's ``eps`` (MXNet
models use 2e-5, ours 1e-5) is mapped exactly by ``running_var += onnx_eps - our_eps``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from fetoolkit.models.onnx_reader import OnnxGraph, WeightOp, collect_ops

logger = logging.getLogger(__name__)

__all__ = ["state_dict_from_onnx"]


# ----------------------------------------------------------------------------------------
# Module side
# ----------------------------------------------------------------------------------------


@dataclass
class _Slot:
    """One leaf layer of our module with tensors."""

    prefix: str  # "layer1.0.conv1." ("" for a root-level layer)
    module: nn.Module
    kind: str  # "conv" | "bn" | "prelu" | "linear"
    pre_pad: tuple[int, int, int, int] = (0, 0, 0, 0)  # a ZeroPad2d right before a conv (l, r, t, b)

    def key(self, name: str = "weight") -> str:
        return f"{self.prefix}{name}"


def _module_slots(module: nn.Module) -> list[_Slot]:
    slots: list[_Slot] = []
    pending_pad = (0, 0, 0, 0)
    for name, sub in module.named_modules():
        if isinstance(sub, nn.ZeroPad2d):
            pending_pad = tuple(int(p) for p in sub.padding)  # (left, right, top, bottom)
            continue
        own = list(sub.named_parameters(recurse=False)) + list(sub.named_buffers(recurse=False))
        if not own:
            continue
        prefix = f"{name}." if name else ""
        if isinstance(sub, nn.Conv2d):
            kind = "conv"
        elif isinstance(sub, nn.modules.batchnorm._BatchNorm):
            kind = "bn"
        elif isinstance(sub, nn.PReLU):
            kind = "prelu"
        elif isinstance(sub, nn.Linear):
            kind = "linear"
        else:
            raise ValueError(
                f"state_dict_from_onnx cannot map {type(sub).__name__} at {prefix!r}: only "
                f"Conv2d, BatchNorm1d/2d, PReLU and Linear layers are supported"
            )
        if kind == "conv":
            slots.append(_Slot(prefix, sub, kind, pending_pad))  # type: ignore[arg-type]
            pending_pad = (0, 0, 0, 0)
        else:
            slots.append(_Slot(prefix, sub, kind))
    return slots


_KIND_NAMES = {
    "conv": "Conv",
    "bn": "BatchNormalization",
    "prelu": "PRelu",
    "linear": "Gemm/MatMul",
}


def _identity_var(eps: float, dtype: torch.dtype) -> torch.Tensor:
    """A scalar ``v`` with ``v + eps == 1`` exactly in ``dtype`` (so ``rsqrt(v + eps) == 1``)."""
    e = torch.tensor(eps, dtype=dtype)
    v = torch.tensor(1.0, dtype=dtype) - e
    one = torch.tensor(1.0, dtype=dtype)
    for _ in range(4):
        if v + e == one:
            break
        v = torch.nextafter(v, one if v + e < one else -one)
    return v


class _Mapper:
    """Pairs ``WeightOp``s with ``_Slot``s and writes the state_dict."""

    def __init__(self, module: nn.Module, path: Path) -> None:
        self.module = module
        self.path = path
        self.reference = module.state_dict()
        self.out: dict[str, torch.Tensor] = {}
        self.eps_shifted = 0  # BatchNorms whose ONNX epsilon differs from ours
        self.folded = 0  # BatchNorms found folded into the previous Conv/Gemm

    def put(self, key: str, value: np.ndarray | torch.Tensor, source: str) -> None:
        ref = self.reference[key]
        if isinstance(value, np.ndarray):
            t = torch.from_numpy(np.array(value, copy=True))
        else:
            t = value
        if tuple(t.shape) != tuple(ref.shape):
            raise ValueError(
                f"{source} has shape {list(t.shape)}, but our {key!r} has shape {list(ref.shape)} (in {self.path})"
            )
        self.out[key] = t.to(dtype=ref.dtype).clone()

    def put_tracked(self, slot: _Slot) -> None:
        key = slot.key("num_batches_tracked")
        if key in self.reference:
            self.out[key] = torch.zeros_like(self.reference[key])

    # -- one handler per kind ---------------------------------------------------------

    def conv(self, slot: _Slot, op: WeightOp) -> None:
        conv: nn.Conv2d = slot.module  # type: ignore[assignment]
        attrs = op.attrs
        if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            raise ValueError(f"{op.where()} uses auto_pad; only explicit pads are supported")
        w = op.tensors["weight"].value
        self.put(slot.key("weight"), w, op.where("weight"))
        k = tuple(conv.kernel_size)
        if isinstance(conv.padding, str):
            raise ValueError(f"our {slot.key()!r} uses padding={conv.padding!r}; only explicit padding is supported")
        ph, pw = conv.padding  # type: ignore[misc]
        left, right, top, bottom = slot.pre_pad
        # ONNX order: [H begin, W begin, H end, W end]; a Pad node before the Conv adds up.
        pre = list(attrs.get("pre_pads", [0, 0, 0, 0]))
        want = {
            "strides": list(conv.stride),
            "pads": [top + ph, left + pw, bottom + ph, right + pw],
            "dilations": list(conv.dilation),
            "group": conv.groups,
        }
        got = {
            "strides": list(attrs.get("strides", [1] * len(k))),
            "pads": [int(a) + int(b) for a, b in zip(attrs.get("pads", [0] * 2 * len(k)), pre)],
            "dilations": list(attrs.get("dilations", [1] * len(k))),
            "group": int(attrs.get("group", 1)),
        }
        for name in want:
            if want[name] != got[name]:
                raise ValueError(
                    f"{op.where()} has {name}={got[name]}, but our {slot.key()!r} has "
                    f"{name}={want[name]} (in {self.path})"
                )

    def bn(self, slot: _Slot, op: WeightOp) -> None:
        bn: nn.modules.batchnorm._BatchNorm = slot.module  # type: ignore[assignment]
        onnx_eps = float(op.attrs.get("epsilon", 1e-5))
        for role in ("weight", "bias", "running_mean"):
            self.put(slot.key(role), op.tensors[role].value, op.where(role))
        var = op.tensors["running_var"].value.astype(np.float64)
        if abs(onnx_eps - bn.eps) > 1e-12:
            # Same denominator: sqrt(var' + eps_ours) == sqrt(var + eps_onnx).
            var = var + onnx_eps - bn.eps
            self.eps_shifted += 1
            logger.debug(
                "%s: epsilon %.3g -> our %s eps %.3g, running_var shifted by %.3g",
                op.where(),
                onnx_eps,
                slot.prefix.rstrip("."),
                bn.eps,
                onnx_eps - bn.eps,
            )
            if (var < 0).any():
                raise ValueError(
                    f"{op.where('running_var')} with epsilon {onnx_eps} cannot be expressed "
                    f"with our {slot.key('running_var')!r} (eps {bn.eps}): negative variance"
                )
        self.put(slot.key("running_var"), var, op.where("running_var"))
        self.put_tracked(slot)

    def bn_identity(self, slot: _Slot, bias: np.ndarray | None, source: str) -> None:
        """Set a BN to ``x + bias`` (folded into the previous layer by the exporter)."""
        bn: nn.modules.batchnorm._BatchNorm = slot.module  # type: ignore[assignment]
        ref = self.reference
        dtype = ref[slot.key("weight")].dtype if bn.affine else ref[slot.key("running_var")].dtype
        n = bn.num_features
        if bias is not None and not bn.affine:
            raise ValueError(
                f"{source} carries a folded bias, but our {slot.prefix.rstrip('.')!r} has no affine bias to hold it"
            )
        if bn.affine:
            self.out[slot.key("weight")] = torch.ones(n, dtype=dtype)
            if bias is None:
                self.out[slot.key("bias")] = torch.zeros(n, dtype=dtype)
            else:
                self.put(slot.key("bias"), bias, source)
        if bn.track_running_stats:
            self.out[slot.key("running_mean")] = torch.zeros(n, dtype=dtype)
            self.out[slot.key("running_var")] = _identity_var(bn.eps, dtype).expand(n).clone()
            self.put_tracked(slot)

    def prelu(self, slot: _Slot, op: WeightOp) -> None:
        t = op.tensors["weight"]
        ref = self.reference[slot.key("weight")]
        # ONNX slopes broadcast against NCHW: [C, 1, 1] (torch legacy), [1, C, 1, 1]
        # (torch.export), [C] from older converters; torch keeps [C].
        if t.value.size != ref.numel():
            raise ValueError(
                f"{op.where()} has {t.value.size} slopes (shape {list(t.value.shape)}), but our "
                f"{slot.key()!r} has shape {list(ref.shape)} (in {self.path})"
            )
        self.put(slot.key("weight"), t.value.reshape(ref.shape), op.where())

    def linear(self, slot: _Slot, op: WeightOp) -> None:
        self.put(slot.key("weight"), op.tensors["weight"].value, op.where("weight"))


def state_dict_from_onnx(path: str | Path, module: nn.Module) -> dict[str, torch.Tensor]:
    """Rebuild ``module``'s state_dict from an ONNX export of the same network.

    Made for IResNet ONNX files (arcface_torch ``torch2onnx.py``: ``torch.onnx.export`` in
    eval mode, opset 11, input ``data``; insightface's ``w600k_r50.onnx``/``glintr100.onnx``;
    the torch.export-based exporter), with BatchNorm kept as ``BatchNormalization`` or folded
    into the previous Conv/Gemm. Works for any module made of ``Conv2d``, ``BatchNorm1d/2d``,
    ``PReLU`` and ``Linear`` whose registration order is its forward order. See the module
    docstring for the matching and folding rules.

    Args:
        path: the ``.onnx`` file (external data next to it is read too).
        module: the target module; only its structure is read, its weights are untouched.

    Returns:
        ``{key: tensor}`` with exactly ``module.state_dict()``'s keys, shapes and dtypes, in
        its order; load it with ``module.load_state_dict(sd, strict=True)``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not ONNX, or a tensor is missing, extra or misshapen (the
            message names the ONNX tensor, its node and our state_dict key).
    """
    import onnx

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX file {str(path)!r} does not exist")
    try:
        model = onnx.load(str(path))
    except Exception as e:  # onnx raises DecodeError / RuntimeError variants
        raise ValueError(f"{str(path)!r} is not a readable ONNX model: {e}") from e
    if not model.graph.node:  # onnx.load reads an empty or foreign file as an empty model
        raise ValueError(
            f"{str(path)!r} holds no ONNX graph ({path.stat().st_size} bytes): the file is empty, truncated "
            "or not an .onnx file; export it again or point model.weights at a good copy"
        )

    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=13)
    g = OnnxGraph(model.graph, opset)
    ops, used = collect_ops(g, path)
    slots = _module_slots(module)
    m = _Mapper(module, path)

    i = j = 0
    while j < len(slots):
        slot = slots[j]
        if i >= len(ops):
            last = ops[-1].where() if ops else "(none)"
            raise ValueError(
                f"our {slot.key()!r} ({type(slot.module).__name__}) has no ONNX counterpart: "
                f"the graph's weight-bearing nodes end at {last} (missing tensors in {path}; "
                f"a shallower network?)"
            )
        op = ops[i]
        if op.kind != slot.kind:
            raise ValueError(
                f"{op.where()} does not match our {slot.key()!r}: expected a "
                f"{_KIND_NAMES[slot.kind]} node for this {type(slot.module).__name__} (graph "
                f"and module layouts differ in {path})"
            )
        nxt = slots[j + 1] if j + 1 < len(slots) else None
        if slot.kind in ("conv", "linear"):
            getattr(m, slot.kind)(slot, op)
            bias = op.tensors.get("bias")
            has_bias = getattr(slot.module, "bias", None) is not None
            followed_by_bn = nxt is not None and nxt.kind == "bn"
            bn_node_follows = (
                i + 1 < len(ops)
                and ops[i + 1].kind == "bn"
                and ops[i + 1].node.input[0] == op.output
                and len(g.consumers.get(op.output, [])) == 1
            )
            if followed_by_bn and not bn_node_follows:
                # Folded: W' and b' sit in this node; our BN becomes x + (bias or 0).
                assert nxt is not None
                logger.debug("%s: BatchNorm folded into %s", nxt.prefix.rstrip("."), op.where())
                m.folded += 1
                if has_bias:
                    if bias is None:
                        zeros = np.zeros(tuple(m.reference[slot.key("bias")].shape), np.float32)
                        m.put(slot.key("bias"), zeros, op.where())
                    else:
                        m.put(slot.key("bias"), bias.value, op.where("bias"))
                    m.bn_identity(nxt, None, op.where())
                elif bias is None:
                    m.bn_identity(nxt, None, op.where())
                else:
                    m.bn_identity(nxt, bias.value, op.where("bias"))
                i += 1
                j += 2
                continue
            if has_bias:
                if bias is None:
                    raise ValueError(f"{op.where()} has no bias, but our {slot.key('bias')!r} expects one (in {path})")
                m.put(slot.key("bias"), bias.value, op.where("bias"))
            elif bias is not None and np.any(bias.value != 0):
                raise ValueError(
                    f"{op.where('bias')} is a non-zero bias, but our {slot.key()!r} has no bias "
                    f"and no BatchNorm after it to hold one (in {path})"
                )
        else:
            getattr(m, slot.kind)(slot, op)
        i += 1
        j += 1

    if i < len(ops):
        extra = ops[i]
        raise ValueError(
            f"{extra.where()} has no counterpart in our {type(module).__name__}: all "
            f"{len(slots)} layers are already mapped ({len(ops) - i} weight-bearing ONNX "
            f"node(s) left over in {path}; a deeper network?)"
        )
    unused = [
        name
        for name, init in g.initializers.items()
        if name not in used and int(np.prod(init.dims)) > 8 and g.consumers.get(name)
    ]
    if unused:
        raise ValueError(
            f"ONNX initializer {unused[0]!r} (shape {list(g.initializers[unused[0]].dims)}, "
            f"used by {g.consumers[unused[0]][0].op_type} node "
            f"{g.consumers[unused[0]][0].name!r}) has no counterpart in our "
            f"{type(module).__name__} ({len(unused)} such initializer(s) in {path})"
        )

    missing = [k for k in m.reference if k not in m.out]
    if missing:  # every slot writes all its keys; this guards future layer types
        raise ValueError(f"no ONNX tensor mapped to our {missing[0]!r} ({len(missing)} keys)")
    logger.info(
        "%s: mapped %d weight-bearing ONNX nodes onto %d layers (%d BatchNorms folded, %d "
        "with their epsilon's difference moved into running_var)",
        path,
        len(ops),
        len(slots),
        m.folded,
        m.eps_shifted,
    )
    return {k: m.out[k] for k in m.reference}
