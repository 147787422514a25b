"""Template features: many images of one subject become one feature (IJB-B/C, galleries of 1:N).

The convention is insightface's IJB evaluation (``recognition/_evaluation_/ijb``), written here
vectorised (one sort, two ``reduceat``; no loop over templates):

1. per image the *raw* model output (before L2 normalisation); with the flip test (F) plus the
   raw output of the mirrored crop;
2. optionally (N) each image's feature L2-normalised, so that every image weighs the same (off:
   the raw norm, a quality signal, weighs the image; insightface's ``use_norm_score=True``);
3. optionally (D) each image's feature multiplied by its detector score (``faceness``);
4. the images of one media (the frames of one video, or one still) averaged;
5. the media features of a template summed, and the sum L2-normalised.

A template pair's score is the dot product of the two normalised template features.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["TemplateCfg", "Templates", "pair_dots", "template_features", "template_pair_scores"]


@dataclass(frozen=True)
class TemplateCfg:
    """How image features become template features (the IJB ablation's three flags).

    Attributes:
        flip: F, add the raw feature of the mirrored crop to each image's.
        normalize_images: N, L2-normalise each image's feature before averaging.
        faceness_weight: D, weigh each image by its detector score.
    """

    flip: bool = True
    normalize_images: bool = False
    faceness_weight: bool = False

    def code(self) -> str:
        """The ablation's short name: ``"F"``, ``"F+N"``, ``"N+D"``, ... ``"none"``."""
        parts = [k for k, on in (("F", self.flip), ("N", self.normalize_images), ("D", self.faceness_weight)) if on]
        return "+".join(parts) or "none"


@dataclass(frozen=True)
class Templates:
    """Which images make which template.

    Attributes:
        image_template: int64 ``[N]`` template index ``0..T-1`` of each image.
        image_media: int64 ``[N]`` media id of each image (images of one media are averaged first).
        ids: int64 ``[T]`` each template's id as the protocol files name it.
        faceness: float32 ``[N]`` detector score of each image (for D), or None.
    """

    image_template: np.ndarray
    image_media: np.ndarray
    ids: np.ndarray
    faceness: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = self.image_template.shape[0]
        if self.image_media.shape != (n,) or (self.faceness is not None and self.faceness.shape != (n,)):
            raise ValueError("image_template, image_media and faceness must be [N] arrays of one length")
        if n and (self.image_template.min() < 0 or self.image_template.max() >= len(self.ids)):
            raise ValueError(f"template indices must lie in 0..{len(self.ids) - 1}")

    def __len__(self) -> int:
        return int(len(self.ids))


def _group_sums(x: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows of ``x`` summed per distinct row of ``keys`` int64 ``[n, k]``: (sums float64 ``[g, D]``,
    counts ``[g]``, the distinct keys ``[g, k]``)."""
    order = np.lexsort(keys.T[::-1])
    ks = keys[order]
    new = np.ones(len(ks), bool)
    new[1:] = (ks[1:] != ks[:-1]).any(axis=1)
    starts = np.flatnonzero(new)
    sums = np.add.reduceat(x[order], starts, axis=0, dtype=np.float64)
    counts = np.diff(np.append(starts, len(ks)))
    return sums, counts, ks[starts]


def template_features(
    raw: np.ndarray, raw_flip: np.ndarray | None, ok: np.ndarray, templates: Templates, cfg: TemplateCfg
) -> tuple[np.ndarray, np.ndarray]:
    """Template features by the convention of the module docstring.

    Args:
        raw: float32 ``[N, D]`` raw image features (rows where ``ok`` is False are ignored).
        raw_flip: float32 ``[N, D]`` raw features of the mirrored crops (needed when ``cfg.flip``).
        ok: bool ``[N]``, the images that enrolled.
        templates: which image belongs to which template and media.
        cfg: the F / N / D flags.

    Returns:
        ``(features float32 [T, D] L2-normalised, NaN rows for templates without an enrolled image;
        ok bool [T])``.
    """
    if cfg.flip and raw_flip is None:
        raise ValueError("the flip test (F) needs the mirrored crops' features")
    if cfg.faceness_weight and templates.faceness is None:
        raise ValueError("faceness weighting (D) needs each image's detector score")
    n, d = raw.shape
    if ok.shape != (n,) or templates.image_template.shape != (n,):
        raise ValueError(f"raw [N, D], ok [N] and the templates' images must agree: {raw.shape}, {ok.shape}")
    t_count = len(templates)
    out = np.full((t_count, d), np.nan, np.float32)
    t_ok = np.zeros(t_count, bool)
    sel = np.flatnonzero(ok)
    if sel.size == 0:
        return out, t_ok
    # float32 per image (469k x 512 of IJB-C: 1 GB), float64 sums
    x = raw[sel].astype(np.float32)
    if cfg.flip:
        assert raw_flip is not None
        x += raw_flip[sel]
    if cfg.normalize_images:
        x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    if cfg.faceness_weight:
        assert templates.faceness is not None
        x *= templates.faceness[sel, None].astype(np.float32)
    keys = np.stack([templates.image_template[sel], templates.image_media[sel]], axis=1)
    media_sum, media_n, media_key = _group_sums(x, keys)
    media_mean = media_sum / media_n[:, None]
    t_sum, _, t_key = _group_sums(media_mean, media_key[:, :1])
    t_idx = t_key[:, 0]
    norm = np.maximum(np.linalg.norm(t_sum, axis=1, keepdims=True), 1e-12)
    out[t_idx] = (t_sum / norm).astype(np.float32)
    t_ok[t_idx] = True
    return out, t_ok


def pair_dots(feats: np.ndarray, idx_a: np.ndarray, idx_b: np.ndarray, chunk: int = 1 << 16) -> np.ndarray:
    """Dot product of the rows ``idx_a`` and ``idx_b`` of ``feats`` float32 ``[U, D]``: float64 ``[P]``.

    In chunks of ``chunk`` pairs, so that 15 million IJB-C template pairs never gather two
    ``[P, D]`` matrices (30 GB at D = 512).
    """
    out = np.empty(len(idx_a), np.float64)
    for s in range(0, len(idx_a), chunk):
        a, b = feats[idx_a[s : s + chunk]], feats[idx_b[s : s + chunk]]
        out[s : s + chunk] = np.einsum("ij,ij->i", a, b)
    return out


def template_pair_scores(feats: np.ndarray, idx_a: np.ndarray, idx_b: np.ndarray, block: int = 2048) -> np.ndarray:
    """Scores of template pairs: float64 ``[P]``, the dot products of rows of ``feats`` float32 ``[T, D]``.

    A protocol that compares a good share of all template pairs (IJB-C: 15.6 million of the 267
    million pairs of 23,124 templates) is scored from blocks of the Gram matrix ``feats @ feats.T``
    (one BLAS product per ``block`` rows, then a gather): the matrix product costs ~10 ns per entry
    where a gathered pair costs ~2.5 us (two scattered 2 KB rows), so it wins from one pair in a few
    hundred. Sparse protocols use :func:`pair_dots`. Rows of templates without an enrolled image
    (NaN) give NaN scores either way.
    """
    t = feats.shape[0]
    if len(idx_a) * 256 < t * t:
        return pair_dots(feats, idx_a, idx_b)
    out = np.empty(len(idx_a), np.float64)
    order = np.argsort(idx_a, kind="stable")
    sorted_a = idx_a[order]
    bounds = np.searchsorted(sorted_a, np.arange(0, t + block, block))
    for k in range(len(bounds) - 1):
        lo, hi = bounds[k], bounds[k + 1]
        if lo == hi:
            continue
        rows = feats[k * block : (k + 1) * block] @ feats.T  # [block, T] float32
        sel = order[lo:hi]
        out[sel] = rows[idx_a[sel] - k * block, idx_b[sel]]
    return out
