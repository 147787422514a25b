"""Alignment: the similarity fit against transforms built by hand, and the warp."""

from __future__ import annotations

import numpy as np
import pytest

from fetoolkit.detect.align import ARCFACE_TEMPLATE, align, estimate_similarity, warp


def similarity(scale: float, angle_deg: float, tx: float, ty: float) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    r = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return np.hstack([r, [[tx], [ty]]])


@pytest.mark.parametrize(
    "scale,angle,tx,ty", [(1.0, 0.0, 0.0, 0.0), (0.37, 12.0, -20.0, 5.5), (2.5, -170.0, 300.0, 41.0)]
)
def test_recovers_exact_similarity(scale: float, angle: float, tx: float, ty: float) -> None:
    src = np.random.default_rng(0).uniform(0, 200, size=(5, 2))
    m = similarity(scale, angle, tx, ty)
    dst = src @ m[:, :2].T + m[:, 2]
    np.testing.assert_allclose(estimate_similarity(src, dst), m, atol=1e-9)


def test_least_squares_with_noise_beats_perturbed_fit() -> None:
    rng = np.random.default_rng(1)
    src = rng.uniform(0, 100, size=(5, 2))
    m = similarity(0.8, 30.0, 10.0, -4.0)
    dst = src @ m[:, :2].T + m[:, 2] + rng.normal(0, 0.5, size=(5, 2))
    fit = estimate_similarity(src, dst)

    def sse(mm: np.ndarray) -> float:
        return float(((src @ mm[:, :2].T + mm[:, 2] - dst) ** 2).sum())

    for _ in range(50):  # any small move of the fitted similarity's parameters does worse
        d = rng.normal(0, 1e-3, 4)
        a, b = fit[0, 0] + d[0], fit[1, 0] + d[1]
        other = np.array([[a, -b, fit[0, 2] + d[2]], [b, a, fit[1, 2] + d[3]]])
        assert sse(other) >= sse(fit) - 1e-9


def test_no_reflection_for_mirrored_points() -> None:
    src = ARCFACE_TEMPLATE.copy()
    mirrored = src * np.array([-1.0, 1.0])  # a mirror image: no similarity maps one onto the other exactly
    m = estimate_similarity(src, mirrored)
    assert np.linalg.det(m[:, :2]) > 0, "the fit must be a rotation, never a reflection"


def test_degenerate_and_bad_input_refused() -> None:
    with pytest.raises(ValueError, match="degenerate"):
        estimate_similarity(np.ones((5, 2)), ARCFACE_TEMPLATE)
    with pytest.raises(ValueError, match="NaN"):
        estimate_similarity(np.full((5, 2), np.nan), ARCFACE_TEMPLATE)
    with pytest.raises(ValueError):
        estimate_similarity(np.ones((5, 3)), ARCFACE_TEMPLATE)


def test_align_puts_landmarks_on_template() -> None:
    """Draw dots at known landmarks of a rotated, scaled face; after align they sit on the template."""
    h, w = 300, 400
    m = similarity(1.9, 25.0, 120.0, 40.0)
    landmarks = ARCFACE_TEMPLATE @ m[:, :2].T + m[:, 2]
    img = np.zeros((h, w, 3), np.uint8)
    for x, y in landmarks:
        img[int(round(y)) - 3 : int(round(y)) + 4, int(round(x)) - 3 : int(round(x)) + 4] = 255
    crop = align(img, landmarks)
    assert crop.shape == (112, 112, 3) and crop.dtype == np.uint8
    for x, y in ARCFACE_TEMPLATE:
        patch = crop[int(y) - 1 : int(y) + 2, int(x) - 1 : int(x) + 2]
        assert patch.mean() > 150, f"no dot at template point ({x:.1f}, {y:.1f})"
    assert crop.mean() < 40  # and little else


def test_warp_identity_keeps_pixels() -> None:
    img = np.random.default_rng(2).integers(0, 256, (112, 112, 3), dtype=np.uint8)
    out = warp(img, np.array([[1.0, 0, 0], [0, 1.0, 0]]))
    np.testing.assert_array_equal(out, img)
