"""MTCNN without torch: facenet-pytorch's P/R/O nets in onnxruntime, its pipeline in numpy.

``OnnxMTCNNDetector`` gives the detections of ``MTCNNDetector`` (facenet-pytorch's
``detect_face``) without importing torch, which costs about 520 MB of RSS in the service.
Only the three small nets run in onnxruntime; everything around them is reproduced in numpy,
operation by operation in float32, so that the numbers fed to the nets are bit-identical to
facenet-pytorch's and the remaining differences come from the convolutions alone
(onnxruntime and torch sum in different orders: about 1e-6 relative):

* image pyramid: the same scales (``12 / min_face_size * factor**k`` while the shorter side
  stays >= 12 px), resized to ``int(side * scale + 1)``;
* resampling: torch's ``interpolate(mode="area")`` is adaptive average pooling, output pixel
  ``i`` averaging input ``[floor(i*In/Out), ceil((i+1)*In/Out))``. The window sums are exact
  integers here (taken from a summed-area table of the uint8 image), and are divided as
  torch does, ``sum / kh / kw`` in float32 (``sum / (kh*kw)`` differs in the last bit);
  ``cv2.INTER_AREA`` is a different filter for non-integer ratios;
* normalisation ``(x - 127.5) * 0.0078125`` in float32;
* PNet boxes ``floor((2*(x, y) + 1) / scale)``, ``floor((2*(x, y) + 12) / scale)`` in float32;
* non-maximum suppression: torchvision's ``nms`` (IoU without ``+1``, stable descending score
  order, suppression when IoU > threshold compared in float64) per scale (0.5), over all
  scales (0.7) and after RNet (0.7); after ONet facenet-pytorch's own numpy NMS ("Min": overlap
  over the smaller area, ``+1`` in widths, ``np.argsort`` order, kept when ``<=`` threshold);
* box regression (widths ``x2 - x1`` after PNet, ``x2 - x1 + 1`` after RNet and ONet),
  squaring (``rerec``), truncation and clipping to the image (``pad``), crops without padding,
  landmarks ``(x2 - x1 + 1) * l + x1 - 1`` computed from the boxes before ONet's regression.

The ONNX files are exported from the weights that ship in the facenet-pytorch wheel, once, in a
child process (``python -m fetoolkit.jobs.mtcnn_cache``), so the calling process never imports
torch; they are cached under ``cache_home() / "mtcnn"``.

Measured (``tests/test_mtcnn_onnx.py``): the same faces on all 400 ORL images, the wild photos
and a 100-face mosaic; boxes within 2e-4 px, landmarks 1.3e-4 px, scores 5e-7. Known, rare
differences from facenet-pytorch (none seen there):

* a PNet/RNet/ONet probability within ~1e-6 of a threshold, or two candidates whose scores tie
  in one implementation and not in the other, may keep a different candidate;
* given more than 1,000 boxes, torchvision's ``batched_nms`` takes another path that re-sorts
  its result with torch's unstable sort; exactly tied scores may then come out in another
  order than the stable order used here (the 100-face mosaic takes that path and matches);
* facenet-pytorch fails on images whose shorter side is below ``min_face_size`` (no pyramid
  scale: ``torch.cat`` of an empty list, a ``ValueError`` in torch 2.14), and (a boolean mask
  of the wrong length) when a candidate box lies wholly outside the image, so that its crop is
  empty; here the first returns ``[]`` and the second drops that candidate.
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
from typing import TYPE_CHECKING, Any

import numpy as np

from fetoolkit.detect.base import DetectorCfg, check_image
from fetoolkit.hub import atomic_path, cache_home, sha256_file
from fetoolkit.types import Detection

if TYPE_CHECKING:
    import onnxruntime as ort

__all__ = ["EXPORT_VERSION", "OnnxMTCNNDetector", "ensure_mtcnn_onnx", "export_mtcnn_onnx"]

log = logging.getLogger(__name__)

#: Bumped whenever the exported graphs change; part of every file name.
EXPORT_VERSION = 1
OPSET = 17
NETS = ("pnet", "rnet", "onet")
MANIFEST = "manifest.json"
#: Output names of each net, in facenet-pytorch's return order.
OUTPUTS = {"pnet": ("reg", "prob"), "rnet": ("reg", "prob"), "onet": ("reg", "landmarks", "prob")}
#: Widths of the R/ONet outputs, in ``OUTPUTS`` order.
OUTPUT_WIDTHS = {"rnet": (4, 2), "onet": (4, 10, 2)}
#: Candidates per RNet / ONet call (bounds the input tensor to about 7 MB).
CHUNK = {"rnet": 1024, "onet": 256}
EXPORT_COMMAND = (sys.executable, "-m", "fetoolkit.jobs.mtcnn_cache")

_ensure_lock = threading.Lock()


# --------------------------------------------------------------------------------------------
# Files: export (in a process that may import torch) and the cache
# --------------------------------------------------------------------------------------------


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

    PReLU is written as ``Relu(y) + (-a) * Relu(-y)``, which gives exactly torch's values (the
    one product is the same ``a * y``) and runs in onnxruntime's blocked layout.

    Returns:
        ``{net: path}``.
    """
    import warnings

    import onnx
    import torch
    from facenet_pytorch.models.mtcnn import ONet, PNet, RNet

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
            n_prelu = _decompose_prelu_exact(model)
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
        log.info("exported %s (%d PReLUs rewritten) to %s", net, n_prelu, path)
        paths[net] = path
    _write_json_atomic(out / MANIFEST, {"export_version": EXPORT_VERSION, "files": names, "source_sha256": shas})
    return paths


def _decompose_prelu_exact(model: Any) -> int:
    """Rewrite each ``PRelu(y, a)`` with a constant slope as ``Relu(y) + Relu(-y) * (-a)``, in place.

    Exact: for ``y > 0`` it is ``y + 0``, for ``y < 0`` it is ``0 + (-y) * (-a) = a * y``,
    the same float32 product torch's PReLU computes (the outputs were bit-identical to the
    ``PRelu`` graph's). onnxruntime's ``PRelu`` cannot run in its NCHWc layout and costs two
    reorders each: this form ran PNet ~20 % and ONet ~1.5-2x faster at 1 thread. (The
    ``a*y + (1-a)*relu(y)`` form of ``fetoolkit.backends.export`` is as fast but rounds
    ``y > 0``.) Returns how many were rewritten.
    """
    from onnx import helper, numpy_helper

    from fetoolkit.backends.onnx_graph import remove_unused_initializers

    g = model.graph
    inits = {i.name: i for i in g.initializer}
    nodes: list[Any] = []
    count = 0
    for node in g.node:
        slope_init = inits.get(node.input[1]) if node.op_type == "PRelu" else None
        if slope_init is None:
            nodes.append(node)
            continue
        y, out = node.input[0], node.output[0]
        neg_slope = -numpy_helper.to_array(slope_init)
        base = f"{out}_prelu"
        g.initializer.append(numpy_helper.from_array(neg_slope, f"{base}_negslope"))
        # -1 shaped like the slope (per channel), not a scalar: onnxruntime then keeps the Mul
        # in its NCHWc layout (a scalar made ONet ~2x slower here).
        g.initializer.append(numpy_helper.from_array(-np.ones_like(neg_slope), f"{base}_minus1"))
        nodes += [
            helper.make_node("Relu", [y], [f"{base}_pos"], name=f"{node.name}_pos"),
            helper.make_node("Mul", [y, f"{base}_minus1"], [f"{base}_negy"], name=f"{node.name}_negy"),
            helper.make_node("Relu", [f"{base}_negy"], [f"{base}_negrelu"], name=f"{node.name}_negrelu"),
            helper.make_node("Mul", [f"{base}_negrelu", f"{base}_negslope"], [f"{base}_neg"], name=f"{node.name}_neg"),
            helper.make_node("Add", [f"{base}_pos", f"{base}_neg"], [out], name=f"{node.name}_add"),
        ]
        count += 1
    del g.node[:]
    g.node.extend(nodes)
    remove_unused_initializers(model)
    return count


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True))


def _expected_files(model_dir: Path) -> dict[str, Path]:
    """``{net: path}`` the cache should hold: named from the installed facenet-pytorch weights,
    or (without facenet-pytorch) from the folder's manifest."""
    try:
        shas = {net: sha256_file(p) for net, p in facenet_weights().items()}
        return {net: model_dir / name for net, name in onnx_file_names(shas).items()}
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
        return {net: model_dir / data["files"][net] for net in NETS}


def ensure_mtcnn_onnx(model_dir: str | os.PathLike[str] | None = None) -> dict[str, Path]:
    """``{net: path}`` of the MTCNN ONNX files, exporting them first if missing.

    The export runs ``python -m fetoolkit.jobs.mtcnn_cache`` in a child process, so this
    process never imports torch. Raises ``RuntimeError`` naming that command if it fails.

    Args:
        model_dir: folder of the files; default ``cache_home() / "mtcnn"``.
    """
    folder = Path(model_dir) if model_dir is not None else cache_home() / "mtcnn"
    with _ensure_lock:
        paths = _expected_files(folder)
        if all(p.is_file() for p in paths.values()):
            return paths
        cmd = [*EXPORT_COMMAND] + ([] if model_dir is None else ["--out", str(folder)])
        log.info("exporting MTCNN to ONNX in a child process: %s", " ".join(cmd))
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(
                f"exporting MTCNN to ONNX failed (exit {proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-4000:]}"
            )
        missing = [str(p) for p in paths.values() if not p.is_file()]
        if missing:
            raise RuntimeError(f"{' '.join(cmd)} ran but did not write {missing}")
        return paths


# --------------------------------------------------------------------------------------------
# The numpy pipeline (pure functions; float32 unless said otherwise)
# --------------------------------------------------------------------------------------------


def pyramid_scales(height: int, width: int, min_face_size: int, factor: float) -> list[float]:
    """facenet-pytorch's scales: ``12 / min_face_size * factor**k`` while ``min(h, w) * scale >= 12``
    (the same float64 recurrences, so the same values to the last bit)."""
    m = 12.0 / min_face_size
    minl = min(height, width) * m
    scales: list[float] = []
    scale = m
    while minl >= 12:
        scales.append(scale)
        scale *= factor
        minl *= factor
    return scales


def integral_image(image: np.ndarray) -> np.ndarray:
    """Summed-area table of uint8 ``[H, W, 3]``: int ``[H + 1, W + 1, 3]``, ``t[y, x] = image[:y, :x].sum``.

    int32 when every sum fits, else int64.
    """
    h, w = image.shape[:2]
    dtype = np.int32 if 255 * h * w < 2**31 else np.int64
    table = np.zeros((h + 1, w + 1, 3), dtype)
    table[1:, 1:] = image
    # In place on the wider type: 5x faster than cumsum(dtype=...) straight from uint8.
    np.cumsum(table, axis=0, out=table)
    np.cumsum(table, axis=1, out=table)
    return table


def area_bins(n_in: np.ndarray | int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Adaptive-average-pooling windows ``[floor(i*n_in/n_out), ceil((i+1)*n_in/n_out))``.

    Args:
        n_in: input length, an int or int64 ``[N]``.
        n_out: output length.

    Returns:
        int64 ``start, end``: ``[n_out]`` for an int ``n_in``, else ``[N, n_out]``.
    """
    i = np.arange(n_out, dtype=np.int64)
    n = np.asarray(n_in, dtype=np.int64)[..., None]
    return (i * n) // n_out, ((i + 1) * n + n_out - 1) // n_out


def _average(sums: np.ndarray, kh: np.ndarray, kw: np.ndarray) -> np.ndarray:
    """``sums / kh / kw`` in float32, as torch's adaptive average pooling divides (exact integer
    ``sums`` below 2**24; beyond, torch's float32 running sum may round differently)."""
    return sums.astype(np.float32) / kh.astype(np.float32) / kw.astype(np.float32)


def resize_area(table: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Whole image to ``[out_h, out_w, 3]`` float32 (0-255), torch ``interpolate(mode="area")``.

    Args:
        table: ``integral_image`` of the ``[H, W, 3]`` image.
    """
    h, w = table.shape[0] - 1, table.shape[1] - 1
    r0, r1 = area_bins(h, out_h)
    c0, c1 = area_bins(w, out_w)
    band = table[r1] - table[r0]  # [out_h, W + 1, 3]: column prefix sums of each row band
    sums = band[:, c1] - band[:, c0]
    return _average(sums, (r1 - r0)[:, None, None], (c1 - c0)[None, :, None])


def crop_resize_area(
    table: np.ndarray, y0: np.ndarray, y1: np.ndarray, x0: np.ndarray, x1: np.ndarray, size: int
) -> np.ndarray:
    """Crops ``image[y0:y1, x0:x1]`` each resized to ``[size, size, 3]`` as ``resize_area`` does.

    Args:
        table: ``integral_image`` of the image.
        y0, y1, x0, x1: int ``[N]`` crop bounds inside the image, ``y1 > y0``, ``x1 > x0``.
        size: output side.

    Returns:
        float32 ``[N, size, size, 3]`` (0-255).
    """
    r0, r1 = area_bins(y1 - y0, size)
    c0, c1 = area_bins(x1 - x0, size)
    kh, kw = (r1 - r0)[:, :, None, None], (c1 - c0)[:, None, :, None]
    r0, r1 = (r0 + y0[:, None])[:, :, None], (r1 + y0[:, None])[:, :, None]
    c0, c1 = (c0 + x0[:, None])[:, None, :], (c1 + x0[:, None])[:, None, :]
    sums = table[r1, c1] - table[r0, c1] - table[r1, c0] + table[r0, c0]
    return _average(sums, kh, kw)


def normalise(pixels: np.ndarray) -> np.ndarray:
    """float32 ``[..., H, W, 3]`` (0-255) -> float32 ``[..., 3, H, W]``, ``(x - 127.5) * 0.0078125``."""
    x = (pixels - np.float32(127.5)) * np.float32(0.0078125)
    return np.ascontiguousarray(np.moveaxis(x, -1, -3))


def pnet_boxes(
    reg: np.ndarray, prob: np.ndarray, scale: float, threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate boxes from one PNet output (facenet-pytorch's ``generateBoundingBox``).

    Args:
        reg: float32 ``[4, H', W']`` box regression.
        prob: float32 ``[H', W']`` face probability.
        scale: the pyramid scale of this output.
        threshold: keep cells with ``prob >= threshold``.

    Returns:
        float32 ``boxes [K, 4]`` (x1, y1, x2, y2 in image pixels, the 12 px cell at stride 2),
        ``scores [K]``, ``reg [K, 4]``, cells in row-major order.
    """
    ys, xs = np.nonzero(prob >= threshold)
    s = np.float32(scale)
    cell = np.stack([xs, ys], axis=1).astype(np.float32) * np.float32(2)
    boxes = np.concatenate([np.floor((cell + np.float32(1)) / s), np.floor((cell + np.float32(12)) / s)], axis=1)
    return boxes, prob[ys, xs], np.ascontiguousarray(reg[:, ys, xs].T)


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """Greedy NMS as torchvision's ``nms`` computes it on CPU.

    IoU without ``+1`` in float32, candidates in stable descending score order, a box
    suppressed when its IoU (compared in float64) with a kept box is ``> threshold``.

    Args:
        boxes: float32 ``[N, 4]``.
        scores: float32 ``[N]``.

    Returns:
        int64 ``[M]`` kept indices, highest score first.
    """
    x1, y1, x2, y2 = (np.ascontiguousarray(boxes[:, k]) for k in range(4))
    areas = (x2 - x1) * (y2 - y1)
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    zero = np.float32(0)
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(int(i))
        w = np.maximum(zero, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        h = np.maximum(zero, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = w * h
        iou = inter / (areas[i] + areas[rest] - inter)
        order = rest[~(iou.astype(np.float64) > threshold)]
    return np.asarray(keep, dtype=np.int64)


def nms_min(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """facenet-pytorch's final numpy NMS, "Min" method.

    Overlap = intersection / smaller area, widths with ``+1``, candidates taken from the end of
    ``np.argsort(scores)`` (numpy's default sort, as facenet-pytorch calls it), a box kept when
    its overlap ``<= threshold`` (float32 comparison, as there).

    Returns:
        int64 ``[M]`` kept indices, highest score first.
    """
    if boxes.size == 0:
        return np.zeros(0, np.int64)
    x1, y1, x2, y2 = (boxes[:, k].copy() for k in range(4))
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(scores)
    keep: list[int] = []
    while order.size:
        i, rest = order[-1], order[:-1]
        keep.append(int(i))
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        overlap = (w * h) / np.minimum(area[i], area[rest])
        order = rest[overlap <= threshold]
    return np.asarray(keep, dtype=np.int64)


def regress(boxes: np.ndarray, reg: np.ndarray, plus_one: bool) -> np.ndarray:
    """Apply box regression: ``x1 + reg0 * w`` etc., ``w = x2 - x1 (+ 1)``.

    PNet's step uses ``w = x2 - x1``, facenet-pytorch's ``bbreg`` (after R/ONet) ``x2 - x1 + 1``.

    Args:
        boxes: float32 ``[N, 4]``; reg: float32 ``[N, 4]``.

    Returns:
        float32 ``[N, 4]``.
    """
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    if plus_one:
        w, h = w + np.float32(1), h + np.float32(1)
    wh = np.stack([w, h, w, h], axis=1)
    return boxes + reg * wh


def square(boxes: np.ndarray) -> np.ndarray:
    """facenet-pytorch's ``rerec``: each box grown to a square of side ``max(w, h)`` about its centre.

    float32 ``[N, 4]`` -> float32 ``[N, 4]``.
    """
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    half = np.float32(0.5)
    x1 = boxes[:, 0] + w * half - side * half
    y1 = boxes[:, 1] + h * half - side * half
    return np.stack([x1, y1, x1 + side, y1 + side], axis=1)


def crop_bounds(boxes: np.ndarray, width: int, height: int) -> tuple[np.ndarray, ...]:
    """Crop windows of ``boxes`` as facenet-pytorch's ``pad`` and slicing give them.

    Coordinates truncated to int32, ``x1, y1`` raised to 1, ``x2, y2`` lowered to the image
    size; the crop is ``[y1 - 1, y2) x [x1 - 1, x2)`` (no zero padding).

    Returns:
        int64 ``y0, y1, x0, x1`` ``[N]`` and bool ``valid [N]`` (a non-empty window).
    """
    b = np.trunc(boxes).astype(np.int32).astype(np.int64)
    x0 = np.maximum(b[:, 0], 1) - 1
    y0 = np.maximum(b[:, 1], 1) - 1
    x1 = np.minimum(b[:, 2], width)
    y1 = np.minimum(b[:, 3], height)
    return y0, y1, x0, x1, (y1 > y0) & (x1 > x0)


def landmarks_to_image(boxes: np.ndarray, rel: np.ndarray) -> np.ndarray:
    """ONet's landmarks in image pixels: ``(x2 - x1 + 1) * l + x1 - 1`` (same for y).

    Args:
        boxes: float32 ``[N, 4]`` the boxes fed to ONet (before its regression).
        rel: float32 ``[N, 10]``, 5 x then 5 y.

    Returns:
        float32 ``[N, 5, 2]`` (x, y).
    """
    one = np.float32(1)
    w = (boxes[:, 2] - boxes[:, 0] + one)[:, None]
    h = (boxes[:, 3] - boxes[:, 1] + one)[:, None]
    px = w * rel[:, :5] + boxes[:, :1] - one
    py = h * rel[:, 5:] + boxes[:, 1:2] - one
    return np.stack([px, py], axis=2)


# --------------------------------------------------------------------------------------------
# The detector
# --------------------------------------------------------------------------------------------


class OnnxMTCNNDetector:
    """facenet-pytorch's MTCNN in onnxruntime + numpy: the same detections as ``MTCNNDetector``.

    Thread-safe without a lock: the onnxruntime sessions' ``run`` is, and ``detect`` keeps
    its state in local variables.

    Args:
        cfg: detector settings (default ``DetectorCfg()``).
        num_threads: onnxruntime intra-op threads per call.
        model_dir: folder of the ONNX files (default ``cache_home() / "mtcnn"``); exported into
            it, in a child process, when missing.
    """

    def __init__(self, cfg: DetectorCfg | None = None, *, num_threads: int = 1, model_dir: Path | None = None) -> None:
        import onnxruntime as ort

        from fetoolkit.backends.onnx_backend import session_options

        self.cfg = cfg or DetectorCfg()
        self.paths = ensure_mtcnn_onnx(model_dir)
        opts = session_options(num_threads)
        self._sessions: dict[str, ort.InferenceSession] = {
            net: ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
            for net, path in self.paths.items()
        }

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Detect faces in one image.

        Args:
            image: uint8 ``[H, W, 3]`` RGB, both sides >= 12 px (else ``ValueError``).

        Returns:
            Detections (float32 box ``[4]`` and landmarks ``[5, 2]``) sorted by score, highest
            first; empty when there is no face.
        """
        check_image(image)
        boxes, scores, points = self._detect_arrays(image)
        order = np.argsort(-scores, kind="stable")
        return [Detection(box=boxes[i].copy(), score=float(scores[i]), landmarks=points[i].copy()) for i in order]

    # -- stages ----------------------------------------------------------------------------

    def _detect_arrays(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """float32 ``boxes [N, 4]``, ``scores [N]``, ``landmarks [N, 5, 2]`` in facenet-pytorch's order."""
        h, w = image.shape[:2]
        t1, t2, t3 = self.cfg.thresholds
        table = integral_image(image)
        boxes, scores = self._stage_pnet(table, t1)
        no_face = (np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32))
        if len(boxes) == 0:
            return no_face
        boxes, scores = self._stage_rnet(table, boxes, w, h, t2)
        if len(boxes) == 0:
            return no_face
        return self._stage_onet(table, boxes, w, h, t3)

    def _stage_pnet(self, table: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
        """Image pyramid through PNet, NMS 0.5 per scale then 0.7 overall, regression, squaring.

        Returns:
            float32 square candidate ``boxes [N, 4]`` and their PNet ``scores [N]``.
        """
        h, w = table.shape[0] - 1, table.shape[1] - 1
        pnet = self._sessions["pnet"]
        all_boxes, all_scores, all_reg = [], [], []
        for scale in pyramid_scales(h, w, self.cfg.min_face_size, self.cfg.factor):
            x = normalise(resize_area(table, int(h * scale + 1), int(w * scale + 1)))[None]
            reg, prob = pnet.run(None, {"input": x})
            boxes, scores, cell_reg = pnet_boxes(reg[0], prob[0, 1], scale, threshold)
            pick = nms(boxes, scores, 0.5)
            all_boxes.append(boxes[pick])
            all_scores.append(scores[pick])
            all_reg.append(cell_reg[pick])
        if not all_boxes:  # shorter side < 12 / (12 / min_face_size): no scale (facenet-pytorch crashes)
            return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
        boxes, scores, reg = np.concatenate(all_boxes), np.concatenate(all_scores), np.concatenate(all_reg)
        pick = nms(boxes, scores, 0.7)
        return square(regress(boxes[pick], reg[pick], plus_one=False)), scores[pick]

    def _run_crops(
        self, net: str, table: np.ndarray, boxes: np.ndarray, width: int, height: int, size: int
    ) -> tuple[list[np.ndarray], np.ndarray]:
        """Crop ``boxes`` from the image, resize to ``size``, run ``net`` in chunks.

        Returns:
            the net's outputs (float32 ``[N, ...]`` each; rows of invalid crops are zeros) and
            bool ``valid [N]`` (a non-empty crop window).
        """
        y0, y1, x0, x1, valid = crop_bounds(boxes, width, height)
        idx = np.flatnonzero(valid)
        session = self._sessions[net]
        outs: list[list[np.ndarray]] = [[] for _ in OUTPUTS[net]]
        for start in range(0, len(idx), CHUNK[net]):
            k = idx[start : start + CHUNK[net]]
            x = normalise(crop_resize_area(table, y0[k], y1[k], x0[k], x1[k], size))
            for acc, out in zip(outs, session.run(None, {"input": x})):
                acc.append(out)
        results = []
        for acc, width_ in zip(outs, OUTPUT_WIDTHS[net]):
            full = np.zeros((len(boxes), width_), np.float32)
            if acc:
                full[idx] = np.concatenate(acc)
            results.append(full)
        return results, valid

    def _stage_rnet(
        self, table: np.ndarray, boxes: np.ndarray, width: int, height: int, threshold: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """RNet on 24 px crops: keep ``prob > threshold``, NMS 0.7, regression (+1), squaring."""
        (reg, prob), valid = self._run_crops("rnet", table, boxes, width, height, 24)
        scores = prob[:, 1]
        keep = (scores > threshold) & valid
        boxes, scores, reg = boxes[keep], scores[keep], reg[keep]
        pick = nms(boxes, scores, 0.7)
        return square(regress(boxes[pick], reg[pick], plus_one=True)), scores[pick]

    def _stage_onet(
        self, table: np.ndarray, boxes: np.ndarray, width: int, height: int, threshold: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """ONet on 48 px crops: keep ``prob > threshold``, landmarks, regression (+1), "Min" NMS 0.7."""
        (reg, rel, prob), valid = self._run_crops("onet", table, boxes, width, height, 48)
        scores = prob[:, 1]
        keep = (scores > threshold) & valid
        boxes, scores, reg, rel = boxes[keep], scores[keep], reg[keep], rel[keep]
        points = landmarks_to_image(boxes, rel)
        boxes = regress(boxes, reg, plus_one=True)
        pick = nms_min(boxes, scores, 0.7)
        return boxes[pick], scores[pick], points[pick]
