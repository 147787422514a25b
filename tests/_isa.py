"""Run onnxruntime on a chosen int8 kernel family: this machine's own, or AVX2-only.

On a VNNI machine the AVX2 kernels are reached through ``fetoolkit.native.avx2_only_env``
(CPUID answered without AVX-512/VNNI/AMX, so onnxruntime picks the kernels an AMD Zen 3 runs);
on an AVX2-only machine they are simply the machine's own.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fetoolkit.backends.onnx_backend import OnnxEmbedder
from fetoolkit.cpu import int8_kind

_EMBED = """
import sys, numpy as np
from fetoolkit.backends.onnx_backend import OnnxEmbedder
from fetoolkit.cpu import int8_kind
assert int8_kind() == "avx2", int8_kind()
np.save(sys.argv[3], OnnxEmbedder(sys.argv[1]).embed(np.load(sys.argv[2])))
"""


def embed_on(kind: str, model: Path, faces: np.ndarray, work: Path) -> tuple[np.ndarray, str]:
    """(L2-normalised embeddings of ``faces`` by ``model`` on ``kind`` kernels, the warnings logged).

    ``kind``: ``"native"`` (this process) or ``"avx2"``. Skips, saying why, when AVX2 cannot be
    forced on a VNNI machine (no C compiler or no CPUID faulting).
    """
    if kind == "native" or (kind == "avx2" and int8_kind() == "avx2"):
        emb = OnnxEmbedder(model)
        return emb.embed(faces), emb.int8_warning or ""
    from fetoolkit.native import NativeUnavailable, avx2_only_env

    try:
        env = avx2_only_env()
    except NativeUnavailable as e:
        pytest.skip(f"the AVX2 int8 path cannot be forced on this VNNI machine: {e}")
    np.save(work / "faces.npy", faces)
    out = work / f"emb-{model.stem}.npy"
    res = subprocess.run(
        [sys.executable, "-c", _EMBED, str(model), str(work / "faces.npy"), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    return np.load(out), res.stderr
