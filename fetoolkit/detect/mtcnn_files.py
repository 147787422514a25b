"""MTCNN's ONNX files: export from facenet-pytorch's weights, and the verified cache of them.

The files are exported from the ``.pt`` weights that ship in the facenet-pytorch wheel, once, in
a child process (``python -m fetoolkit.jobs.mtcnn_cache``), so the process that runs them never
imports torch. They live under ``cache_home() / "mtcnn"``, named after their source's sha256 and
:data:`EXPORT_VERSION`, each with a sidecar (``fetoolkit.hub.record_derived``) holding its own
size and sha256 and its source's; :func:`ensure_mtcnn_onnx` checks every file against its
sidecar before use and exports again when one is missing, damaged or foreign.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from fetoolkit.hub import atomic_path, cache_home, record_derived, sha256_file, verified_derived

__all__ = ["EXPORT_VERSION", "MANIFEST", "NETS", "OUTPUTS", "ensure_mtcnn_onnx", "export_mtcnn_onnx", "facenet_weights"]

log = logging.getLogger(__name__)

#: Bumped whenever the exported graphs change; part of every file name.
EXPORT_VERSION = 1
OPSET = 17
NETS = ("pnet", "rnet", "onet")
MANIFEST = "manifest.json"
#: Output names of each net, in facenet-pytorch's return order.
OUTPUTS = {"pnet": ("reg", "prob"), "rnet": ("reg", "prob"), "onet": ("reg", "landmarks", "prob")}
EXPORT_COMMAND = (sys.executable, "-m", "fetoolkit.jobs.mtcnn_cache")

_ensure_lock = threading.Lock()


def facenet_weights() -> dict[str, Path]:
    """``{net: path}`` of ``pnet.pt``, ``rnet.pt``, ``onet.pt`` in the installed facenet-pytorch.

    Found with ``importlib.util.find_spec``, which does not run the package (and so does not
    import torch). Raises ``FileNotFoundError`` when facenet-pytorch or a file is missing.
    """
    spec = importlib.util.find_spec("facenet_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("facenet-pytorch is not installed; it ships the MTCNN weights")
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    paths = {net: data / f"{net}.pt" for net in NETS}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"MTCNN weights missing from facenet-pytorch: {missing}")
    return paths


def onnx_file_names(source_sha256: dict[str, str]) -> dict[str, str]:
    """``{net: file name}``: ``pnet-<12 hex of the .pt's sha256>-v<EXPORT_VERSION>.onnx`` etc."""
    return {net: f"{net}-{source_sha256[net][:12]}-v{EXPORT_VERSION}.onnx" for net in NETS}


def export_mtcnn_onnx(out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Export facenet-pytorch's PNet, RNet and ONet to ONNX files in ``out_dir``.

    Imports torch (here only). Each file is written to a temporary name, checked with
    ``onnx.checker`` and renamed into place; a ``manifest.json`` naming them is written last.

    Graphs (float32, NCHW, RGB input normalised as ``(x - 127.5) / 128``):

    * ``pnet``: ``input [N, 3, H, W]`` (N, H, W dynamic, H, W >= 12) -> ``reg [N, 4, H', W']``
      (box regression) and ``prob [N, 2, H', W']`` (softmax; channel 1 is "face"),
      ``H' = ceil((H - 2) / 2) - 4``;
    * ``rnet``: ``input [N, 3, 24, 24]`` -> ``reg [N, 4]``, ``prob [N, 2]``;
    * ``onet``: ``input [N, 3, 48, 48]`` -> ``reg [N, 4]``, ``landmarks [N, 10]`` (5 x then
      5 y, relative to the box), ``prob [N, 2]``.

    PReLU is written as ``Relu(y) + (-a) * Relu(-y)`` (``fetoolkit.backends.prelu``, form
    ``"exact"``), which gives exactly torch's values (the one product is the same ``a * y``) and
    runs in onnxruntime's blocked layout.

    Returns:
        ``{net: path}``.
    """
    import warnings

    import onnx
    import torch
    from facenet_pytorch.models.mtcnn import ONet, PNet, RNet

    from fetoolkit.backends.onnx_graph import remove_unused_initializers
    from fetoolkit.backends.prelu import rewrite_prelus

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sources = facenet_weights()
    shas = {net: sha256_file(p) for net, p in sources.items()}
    names = onnx_file_names(shas)
    builders = {"pnet": PNet, "rnet": RNet, "onet": ONet}
    dummies = {"pnet": torch.zeros(1, 3, 31, 27), "rnet": torch.zeros(2, 3, 24, 24), "onet": torch.zeros(2, 3, 48, 48)}
    paths: dict[str, Path] = {}
    for net in NETS:
        module = builders[net](pretrained=False)
        module.load_state_dict(torch.load(sources[net], map_location="cpu", weights_only=True))
        module.eval()
        dynamic = {"input": {0: "batch", 2: "height", 3: "width"}} if net == "pnet" else {"input": {0: "batch"}}
        for name in OUTPUTS[net]:
            dynamic[name] = {0: "batch", 2: "out_height", 3: "out_width"} if net == "pnet" else {0: "batch"}
        path = out / names[net]
        with atomic_path(path) as tmp:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
                torch.onnx.export(
                    module,
                    (dummies[net],),
                    tmp,
                    input_names=["input"],
                    output_names=list(OUTPUTS[net]),
                    opset_version=OPSET,
                    dynamic_axes=dynamic,
                    do_constant_folding=True,
                    dynamo=False,
                )
            model = onnx.load(tmp)
            n_prelu = rewrite_prelus(model, "exact")
            remove_unused_initializers(model)
            meta = {
                "fetoolkit.model": f"facenet-pytorch MTCNN {net}",
                "fetoolkit.source_sha256": shas[net],
                "fetoolkit.export": json.dumps(
                    {
                        "opset": OPSET,
                        "mtcnn_export_version": EXPORT_VERSION,
                        "exporter": f"torch {torch.__version__} (TorchScript)",
                        "prelu": "relu(y) + (-a) * relu(-y)",
                    },
                    sort_keys=True,
                ),
            }
            for key, value in meta.items():
                entry = model.metadata_props.add()
                entry.key, entry.value = key, value
            onnx.checker.check_model(model, full_check=True)
            onnx.save(model, str(tmp))
        record_derived(path, shas[net], f"fetoolkit.detect.mtcnn_files v{EXPORT_VERSION} (torch {torch.__version__})")
        log.info("exported %s (%d PReLUs rewritten) to %s", net, n_prelu, path)
        paths[net] = path
    _write_json_atomic(out / MANIFEST, {"export_version": EXPORT_VERSION, "files": names, "source_sha256": shas})
    return paths


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True))


def _expected_files(model_dir: Path) -> dict[str, tuple[Path, str]]:
    """``{net: (path, source sha256)}`` the cache should hold: named from the installed
    facenet-pytorch weights, or (without facenet-pytorch) from the folder's manifest."""
    try:
        shas = {net: sha256_file(p) for net, p in facenet_weights().items()}
    except FileNotFoundError:
        manifest = model_dir / MANIFEST
        if not manifest.is_file():
            raise FileNotFoundError(
                f"no MTCNN ONNX files in {model_dir} (no {MANIFEST}), and facenet-pytorch, "
                "whose weights they are exported from, is not installed"
            ) from None
        data = json.loads(manifest.read_text())
        if data.get("export_version") != EXPORT_VERSION:
            raise FileNotFoundError(
                f"{manifest} is export version {data.get('export_version')}, this code "
                f"reads {EXPORT_VERSION}, and facenet-pytorch is not installed to re-export"
            ) from None
        return {net: (model_dir / data["files"][net], data["source_sha256"][net]) for net in NETS}
    return {net: (model_dir / name, shas[net]) for net, name in onnx_file_names(shas).items()}


def ensure_mtcnn_onnx(model_dir: str | os.PathLike[str] | None = None) -> dict[str, Path]:
    """``{net: path}`` of the MTCNN ONNX files, exporting them first if missing or not verified.

    Every file is checked against its sidecar (size, sha256, the sha256 of the ``.pt`` it was
    exported from): 8 ms per call here with the ``.pt`` files hashed too (4 MB in all; once per
    detector created); a missing, damaged or foreign file is logged with its name and the three
    are exported again.

    The export runs ``python -m fetoolkit.jobs.mtcnn_cache`` in a child process, so this
    process never imports torch. Raises ``RuntimeError`` naming that command if it fails.

    Args:
        model_dir: folder of the files; default ``cache_home() / "mtcnn"``.
    """
    folder = Path(model_dir) if model_dir is not None else cache_home() / "mtcnn"
    with _ensure_lock:
        expected = _expected_files(folder)
        paths = {net: path for net, (path, _) in expected.items()}
        if all(verified_derived(path, source) is not None for path, source in expected.values()):
            return paths
        cmd = [*EXPORT_COMMAND] + ([] if model_dir is None else ["--out", str(folder)])
        log.info("exporting MTCNN to ONNX in a child process: %s", " ".join(cmd))
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(
                f"exporting MTCNN to ONNX failed (exit {proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-4000:]}"
            )
        bad = [str(path) for path, source in expected.values() if verified_derived(path, source) is None]
        if bad:
            raise RuntimeError(f"{' '.join(cmd)} ran but did not write verified files {bad}")
        return paths
