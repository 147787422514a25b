"""Five-point alignment onto the ArcFace 112x112 template.

Pure functions: a least-squares similarity transform (rotation, uniform scale, translation;
no reflection) from the detected landmarks to the template, then a bilinear warp.
"""

from __future__ import annotations

import cv2
import numpy as np

#: ArcFace template for a 112x112 crop, (x, y): left eye, right eye, nose, mouth left, mouth right.
ARCFACE_TEMPLATE = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)


def estimate_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform mapping ``src`` points onto ``dst`` points.

    The closed-form solution of Umeyama (1991) restricted to proper rotations.

    Args:
        src: float ``[K, 2]`` source points (x, y), K >= 2.
        dst: float ``[K, 2]`` target points.

    Returns:
        float64 ``[2, 3]`` affine matrix ``M`` with ``dst ~= M[:, :2] @ src + M[:, 2]``.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or src.shape[0] < 2:
        raise ValueError(f"need two [K, 2] point sets with K >= 2, got {src.shape} and {dst.shape}")
    if not (np.isfinite(src).all() and np.isfinite(dst).all()):
        raise ValueError("landmarks contain NaN or inf")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    var_s = (s**2).sum() / len(src)
    if var_s <= 1e-12:
        raise ValueError("landmarks are degenerate (all at one point)")
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:  # would be a reflection: flip the weakest axis
        sign[-1] = -1.0
    rot = u @ np.diag(sign) @ vt
    scale = (sig * sign).sum() / var_s
    m = np.empty((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m


def warp(image: np.ndarray, matrix: np.ndarray, size: tuple[int, int] = (112, 112)) -> np.ndarray:
    """Warp ``image`` with a forward ``[2, 3]`` affine ``matrix`` into a ``size`` = (H, W) crop.

    Bilinear interpolation, black outside the image. ``image``: uint8 ``[H, W, 3]``;
    returns uint8 ``[size[0], size[1], 3]``.
    """
    return cv2.warpAffine(
        np.ascontiguousarray(image),
        matrix,
        (size[1], size[0]),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )


def align(image: np.ndarray, landmarks: np.ndarray, size: tuple[int, int] = (112, 112)) -> np.ndarray:
    """Align one face onto the ArcFace template.

    Args:
        image: uint8 ``[H, W, 3]`` RGB.
        landmarks: float ``[5, 2]`` (x, y) in image coordinates, template order.
        size: output (H, W); the template is scaled from 112x112 when it differs.

    Returns:
        uint8 ``[size[0], size[1], 3]`` RGB crop.
    """
    template = ARCFACE_TEMPLATE * np.array([size[1] / 112.0, size[0] / 112.0])
    return warp(image, estimate_similarity(np.asarray(landmarks).reshape(5, 2), template), size)


def resize_whole(image: np.ndarray, size: tuple[int, int] = (112, 112)) -> np.ndarray:
    """No alignment: the whole image resized to ``size`` (the ``no_align`` baseline)."""
    return cv2.resize(np.ascontiguousarray(image), (size[1], size[0]), interpolation=cv2.INTER_AREA)
