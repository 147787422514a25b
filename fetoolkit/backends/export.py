"""Export a torch face model to ONNX with its input contract in ``metadata_props``."""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from pathlib import Path

import onnx
import torch
import torch.nn as nn

from fetoolkit.backends.onnx_backend import META_CONTRACT, META_MODEL, META_SOURCE_SHA256
from fetoolkit.types import InputContract

log = logging.getLogger(__name__)


def export_onnx(module: nn.Module, contract: InputContract, path: str | Path, *, name: str,
                source_sha256: str | None, opset: int = 17) -> Path:
    """Write ``module`` as an ONNX file with a dynamic batch axis, checked by ``onnx.checker``.

    The file records ``fetoolkit.contract`` (JSON input contract), ``fetoolkit.model`` and
    ``fetoolkit.source_sha256`` in ``metadata_props``, so ``OnnxEmbedder`` needs no flags.
    Written to a temporary file and renamed, so a crash never leaves half a model.

    Args:
        module: NCHW float32 ``[N, 3, H, W]`` -> ``[N, D]`` model.
        contract: its input contract (layout NCHW).
        path: destination ``.onnx``.
        name: registry name recorded in the file.
        source_sha256: sha256 of the weights the module was loaded from.
        opset: ONNX opset.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = contract.size
    dummy = torch.zeros(2, 3, h, w)
    module = module.eval()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    os.close(fd)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(
                module, (dummy,), tmp, input_names=["input"], output_names=["embedding"],
                opset_version=opset, dynamic_axes={"input": {0: "batch"}, "embedding": {0: "batch"}},
                do_constant_folding=True, dynamo=False,
            )
        model = onnx.load(tmp)
        for key, value in ((META_CONTRACT, contract.to_json()), (META_MODEL, name),
                           (META_SOURCE_SHA256, source_sha256 or "")):
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.checker.check_model(model, full_check=True)
        onnx.save(model, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    log.info("exported %s to %s", name, path)
    return path
