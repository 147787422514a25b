"""sirius-ai MobileFaceNet: our PyTorch port vs. the vendor's TFLite graph.

The reference is the original ``MobileFaceNet.tflite`` run by the TFLite interpreter
(``ai_edge_litert``) on real aligned faces; the port is ``mobilefacenet_sirius()`` loaded
with ``state_dict_from_tflite``. Nothing here is a stored expected output.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from fetoolkit.models.convert import state_dict_from_tflite
from fetoolkit.models.mobilefacenet import SIRIUS_CONFIG, MobileFaceNet, mobilefacenet_sirius
from fetoolkit.types import InputContract

COS_MIN = 0.9999

# The vendor's input contract (sirius-ai MobileFaceNet_TF): RGB, (x - 127.5) / 128.
SIRIUS_NHWC = InputContract(mean=(127.5,) * 3, std=(128.0,) * 3, layout="NHWC", embed_dim=192)


def run_tflite(path: Path, x: np.ndarray) -> np.ndarray:
    """Run the vendor graph on float32 NHWC ``x`` ``[N, 112, 112, 3]`` -> ``[N, D]``.

    The file's batch is fixed (2) and resizing fails in its RESHAPE, so we feed it batches of
    its own size, padding the last one with copies of the last face.
    """
    interpreter_mod = pytest.importorskip("ai_edge_litert.interpreter")
    interp = interpreter_mod.Interpreter(model_path=str(path))
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    out = interp.get_output_details()[0]
    batch = int(inp["shape"][0])
    n = len(x)
    pad = (-n) % batch
    xp = np.concatenate([x, np.repeat(x[-1:], pad, axis=0)]) if pad else x
    outs = []
    for i in range(0, len(xp), batch):
        interp.set_tensor(inp["index"], np.ascontiguousarray(xp[i : i + batch], np.float32))
        interp.invoke()
        outs.append(interp.get_tensor(out["index"]).copy())
    return np.concatenate(outs)[:n]


def run_torch(module: torch.nn.Module, x_nhwc: np.ndarray) -> np.ndarray:
    """Our module on the same float32 NHWC input (transposed to NCHW) -> ``[N, D]``."""
    module.eval()
    with torch.no_grad():
        return module(torch.from_numpy(np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2)))).numpy()


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two ``[N, D]`` arrays."""
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def sirius_inputs(aligned_faces: np.ndarray) -> np.ndarray:
    """float32 NHWC ``[N, 112, 112, 3]``: the aligned faces under the vendor's contract."""
    assert aligned_faces.dtype == np.uint8 and aligned_faces.shape[1:] == (112, 112, 3)
    return SIRIUS_NHWC.preprocess(aligned_faces)


@pytest.fixture(scope="module")
def sirius_reference(sirius_tflite: Path, sirius_inputs: np.ndarray) -> np.ndarray:
    """The vendor graph's raw embeddings, float32 ``[N, 192]``."""
    ref = run_tflite(sirius_tflite, sirius_inputs)
    assert ref.shape == (len(sirius_inputs), 192)
    return ref


@pytest.fixture(scope="module")
def sirius_state_dict(sirius_tflite: Path) -> dict[str, torch.Tensor]:
    return state_dict_from_tflite(sirius_tflite, mobilefacenet_sirius())


def test_sirius_port_matches_tflite_on_real_faces(
    sirius_state_dict: dict[str, torch.Tensor],
    sirius_inputs: np.ndarray,
    sirius_reference: np.ndarray,
) -> None:
    model = mobilefacenet_sirius()
    model.load_state_dict(sirius_state_dict, strict=True)
    ours = run_torch(model, sirius_inputs)
    assert ours.shape == sirius_reference.shape and ours.dtype == np.float32

    cos = cosines(ours, sirius_reference)
    diff = np.abs(ours - sirius_reference)
    worst = int(cos.argmin())
    assert (cos >= COS_MIN).all(), (
        f"{int((cos < COS_MIN).sum())}/{len(cos)} faces below cosine {COS_MIN}: "
        f"min cos {cos.min():.9f} (1 - cos {1 - cos.min():.1e}, face {worst}), max abs diff {diff.max():.3e} "
        f"(reference max |x| {np.abs(sirius_reference).max():.2f})"
    )
    # Also guard against a degenerate pass: the faces must give different embeddings.
    ref_cross = cosines(sirius_reference[:-1], sirius_reference[1:])
    assert ref_cross.min() < 0.99, "reference embeddings do not vary across faces"


def test_parity_check_catches_symmetric_padding(
    sirius_state_dict: dict[str, torch.Tensor],
    sirius_inputs: np.ndarray,
    sirius_reference: np.ndarray,
) -> None:
    """Control: the same weights with PyTorch's symmetric padding must fail the bar."""
    wrong = MobileFaceNet(dataclasses.replace(SIRIUS_CONFIG, tf_same_padding=False))
    wrong.load_state_dict(sirius_state_dict, strict=True)
    cos = cosines(run_torch(wrong, sirius_inputs), sirius_reference)
    assert cos.min() < COS_MIN, f"symmetric padding still gives min cosine {cos.min():.6f}"


@pytest.mark.parametrize(
    ("change", "tflite_name", "our_key"),
    [
        # 3x3 stem with 32 instead of 64 channels: the first conv already disagrees.
        ({"stem_channels": 32}, "MobileFaceNet/Conv2d_0/weights/read", "conv1.conv.weight"),
        # 128-d instead of 192-d embedding: only the very last conv disagrees.
        (
            {"head_channels": (512, 128)},
            "MobileFaceNet/Logits/LinearConv1x1/weights/read",
            "linear.1.weight",
        ),
        # Missing the sirius stem's linear 1x1 conv: the layers shift by one.
        ({"stem_pointwise": False}, "MobileFaceNet/Conv/weights/read", "layers.0.expand.conv.weight"),
        # Same shapes, PyTorch padding: caught by the padding check, not the shapes.
        ({"tf_same_padding": False}, "MobileFaceNet/Conv2d_0/weights/read", "conv1.conv.weight"),
    ],
)
def test_wrong_module_raises_naming_tensor(sirius_tflite: Path, change: dict, tflite_name: str, our_key: str) -> None:
    module = MobileFaceNet(dataclasses.replace(SIRIUS_CONFIG, **change))
    with pytest.raises(ValueError) as err:
        state_dict_from_tflite(sirius_tflite, module)
    msg = str(err.value)
    assert repr(tflite_name) in msg and repr(our_key) in msg, msg


def test_extra_module_layer_raises_naming_key(sirius_tflite: Path) -> None:
    """A module with one more weighted layer than the file: the unfilled key is named."""
    module = mobilefacenet_sirius()
    module.linear.append(torch.nn.PReLU(192))
    with pytest.raises(ValueError, match=r"no tflite tensor for our key 'linear\.2\.weight'"):
        state_dict_from_tflite(sirius_tflite, module)


# The faceplugin MobileFaceNet (same module family, ONNX file) is tested with the one ONNX
# importer in tests/test_factory.py.
