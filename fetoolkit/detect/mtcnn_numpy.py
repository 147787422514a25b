"""MTCNN's pipeline around its three nets, in numpy: pure functions, float32 unless said otherwise.

Each function reproduces one step of facenet-pytorch's ``detect_face`` operation by operation
(see :mod:`fetoolkit.detect.mtcnn_onnx` for what is matched and how closely), so the numbers fed
to the nets are bit-identical to facenet-pytorch's. Nothing here imports torch or onnxruntime.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "area_bins",
    "crop_bounds",
    "crop_resize_area",
    "integral_image",
    "landmarks_to_image",
    "nms",
    "nms_min",
    "normalise",
    "pnet_boxes",
    "pyramid_scales",
    "regress",
    "resize_area",
    "square",
]


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
