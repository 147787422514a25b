"""Embedding quality: norm statistics, per-image quality scores, error-versus-reject curves.

Pure numpy: arrays in, arrays or frozen dataclasses out; no torch, no I/O, no printing.

Quality scores (each float32 ``[N]`` in ``[0, 1]``, higher = better):

* :func:`quality_norm` -- the raw embedding's norm (MagFace, Meng et al. CVPR 2021, shows that
  with a margin loss the feature norm grows with recognisability; AdaFace, Kim et al. CVPR 2022,
  finds the same for plain ArcFace-trained networks). Squashed as
  ``tanh(rms / RMS_REF)`` where ``rms = ||x|| / sqrt(D)``; the squash is monotone, so the ranking
  (which is all an error-versus-reject curve sees) is the norm's.
* :func:`quality_magnitude_diversity` -- the "original design": magnitude (the squashed norm
  above) times diversity (the normalised entropy of the embedding's energy over its components,
  ``H(x_i^2 / ||x||^2) / log D``: 1 when the energy is spread evenly, 0 when one component holds
  it all), combined as their geometric mean ``sqrt(m * d)``.
* :func:`quality_flip_consistency` -- cosine between the embeddings of a crop and of its
  mirror image, clipped to ``[0, 1]``; a robustness score in the spirit of SER-FIQ (Terhorst et
  al. CVPR 2020) that needs one extra forward pass instead of many dropout passes.
* :func:`quality_centroid_distance` -- distance of the normalised embedding from the mean
  embedding of a reference set, ``(1 - cos) / 2``: hard-to-recognise faces collapse towards a
  common "unrecognisable identity" cluster near the mean (Deng et al., "Recognizability
  Embedding Enhancement", CVPR 2022, ERS score). Needs a reference mean, so it is a data-set
  level score, not a per-image one.

:func:`face_quality` is the project's default per-image score (the HTTP service calls it); it
is :func:`quality_norm`, chosen by the error-versus-reject curves (figures in its docstring).

Error-versus-reject curves (:func:`error_vs_reject`, Grother and Tabassi 2007; ISO/IEC
29794-1): drop the lowest-quality fraction of *images*, keep the pairs whose two images both
remain, and measure FNMR at a threshold fixed beforehand (the one giving the target FAR on all
pairs). A useful quality score makes FNMR fall as images are rejected; a random one leaves it
flat.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fetoolkit.jsonutil import json_float

__all__ = [
    "RMS_REF",
    "ErcCurve",
    "GenuineSpread",
    "NormSummary",
    "diversity",
    "embedding_norms",
    "erc_area",
    "error_vs_reject",
    "face_quality",
    "genuine_spread",
    "norm_summary",
    "quality_centroid_distance",
    "quality_flip_consistency",
    "quality_magnitude_diversity",
    "quality_norm",
]

#: Per-component RMS mapped to ``tanh(1) = 0.76`` by the magnitude squash. The median raw
#: embedding of the sirius MobileFaceNet on ORL has rms 5.0 (norm 69 over 192 components);
#: other models land elsewhere on the scale, which changes the values, not their ranking.
RMS_REF = 5.0


def _check_raw(raw: Any) -> np.ndarray:
    x = np.asarray(raw)
    if x.ndim != 2 or x.shape[1] < 2:
        raise ValueError(f"raw embeddings must be [N, D] with D >= 2, got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"raw embeddings must be floating point, got dtype {x.dtype}")
    if not np.isfinite(x).all():
        raise ValueError(
            "raw embeddings contain NaN or infinite values (failed images must be left out before scoring quality)"
        )
    return x.astype(np.float64, copy=False)


def embedding_norms(raw: np.ndarray) -> np.ndarray:
    """L2 norm of each raw embedding (before normalisation).

    Args:
        raw: float ``[N, D]``.

    Returns:
        float32 ``[N]``.
    """
    return np.linalg.norm(_check_raw(raw), axis=1).astype(np.float32)


@dataclass(frozen=True)
class NormSummary:
    """Distribution of raw embedding norms (all floats; NaN when there are no embeddings).

    Attributes:
        n: number of embeddings.
        mean, std, min, p05, median, p95, max: of the norms.
        rms_median: median norm divided by ``sqrt(D)`` (the scale :data:`RMS_REF` refers to).
    """

    n: int
    mean: float
    std: float
    min: float
    p05: float
    median: float
    p95: float
    max: float
    rms_median: float

    def to_dict(self) -> dict[str, Any]:
        return {k: (json_float(v) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def norm_summary(raw: np.ndarray) -> NormSummary:
    """Summary of the raw embedding norms of ``raw`` float ``[N, D]`` (``N`` may be 0)."""
    x = np.asarray(raw)
    if x.ndim == 2 and x.shape[0] == 0:
        nan = math.nan
        return NormSummary(0, nan, nan, nan, nan, nan, nan, nan, nan)
    n = embedding_norms(x).astype(np.float64)
    q = np.quantile(n, [0.0, 0.05, 0.5, 0.95, 1.0])
    return NormSummary(
        int(n.size),
        float(n.mean()),
        float(n.std()),
        float(q[0]),
        float(q[1]),
        float(q[2]),
        float(q[3]),
        float(q[4]),
        float(q[2] / math.sqrt(x.shape[1])),
    )


def diversity(raw: np.ndarray) -> np.ndarray:
    """Normalised entropy of each embedding's energy over its components.

    ``p_i = x_i^2 / ||x||^2``; returns ``-sum p_i log p_i / log D``, float32 ``[N]`` in ``[0, 1]``
    (0 for an all-zero embedding).
    """
    x = _check_raw(raw)
    e = x * x
    tot = e.sum(axis=1, keepdims=True)
    p = np.divide(e, tot, out=np.zeros_like(e), where=tot > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.where(p > 0, p * np.log(p), 0.0).sum(axis=1)
    return np.clip(h / math.log(x.shape[1]), 0.0, 1.0).astype(np.float32)


def quality_norm(raw: np.ndarray, *, rms_ref: float = RMS_REF) -> np.ndarray:
    """Norm-based quality (MagFace-style): ``tanh(||x|| / sqrt(D) / rms_ref)``.

    Args:
        raw: float ``[N, D]`` embeddings before L2 normalisation.
        rms_ref: per-component RMS mapped to 0.76 (see :data:`RMS_REF`).

    Returns:
        float32 ``[N]`` in ``[0, 1]``, monotone in the norm.
    """
    x = _check_raw(raw)
    rms = np.linalg.norm(x, axis=1) / math.sqrt(x.shape[1])
    return np.tanh(rms / float(rms_ref)).astype(np.float32)


def quality_magnitude_diversity(raw: np.ndarray, *, rms_ref: float = RMS_REF) -> np.ndarray:
    """The original design's score: geometric mean of magnitude and diversity.

    ``sqrt(quality_norm(raw) * diversity(raw))``: a face needs both a large raw embedding and
    energy spread over many components to score high.

    Returns:
        float32 ``[N]`` in ``[0, 1]``.
    """
    return np.sqrt(quality_norm(raw, rms_ref=rms_ref) * diversity(raw)).astype(np.float32)


def _unit(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, n, out=np.zeros_like(x), where=n > 0)


def quality_flip_consistency(raw: np.ndarray, raw_flipped: np.ndarray) -> np.ndarray:
    """Cosine between each crop's embedding and its mirror image's, clipped to ``[0, 1]``.

    Args:
        raw: float ``[N, D]`` embeddings of the crops (raw or normalised).
        raw_flipped: float ``[N, D]`` embeddings of the horizontally flipped crops.

    Returns:
        float32 ``[N]``.
    """
    a, b = _check_raw(raw), _check_raw(raw_flipped)
    if a.shape != b.shape:
        raise ValueError(f"raw and raw_flipped differ in shape: {a.shape} vs {b.shape}")
    cos = np.einsum("ij,ij->i", _unit(a), _unit(b))
    return np.clip(cos, 0.0, 1.0).astype(np.float32)


def quality_centroid_distance(raw: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
    """Distance from the mean embedding, ``(1 - cos(x, mean)) / 2`` (ERS-style).

    Args:
        raw: float ``[N, D]`` embeddings (raw or normalised).
        reference: float ``[M, D]`` embeddings whose normalised mean is the centre; ``raw``
            itself when None.

    Returns:
        float32 ``[N]`` in ``[0, 1]``; higher = farther from the "average face" = better.
    """
    x = _unit(_check_raw(raw))
    ref = x if reference is None else _unit(_check_raw(reference))
    if ref.shape[1] != x.shape[1]:
        raise ValueError(f"reference has D={ref.shape[1]}, raw has D={x.shape[1]}")
    c = ref.mean(axis=0)
    c = c / max(float(np.linalg.norm(c)), 1e-12)
    return np.clip((1.0 - x @ c) / 2.0, 0.0, 1.0).astype(np.float32)


def face_quality(raw: np.ndarray, *, rms_ref: float = RMS_REF) -> np.ndarray:
    """The project's default per-image quality score: :func:`quality_norm`.

    Chosen by error-versus-reject curves (area = mean FNMR at the FAR=1e-3 threshold over 0-20%
    of the images rejected; lower is better):

    * ORL with a quarter of the crops degraded (``python -m fetoolkit.eval model=arcface
      pipeline.degrade=0.25``; FNMR 0.346 without rejection): norm 0.239, magnitude+diversity
      0.254, centroid distance 0.287, flip consistency 0.287, detector confidence 0.340 (blind
      here by construction: the crops are degraded after detection), diversity 0.354 (chance).
      ``model=mobilefacenet512`` (FNMR 0.276): norm 0.161, magnitude+diversity 0.162, flip
      0.197, diversity 0.242, detector 0.265, centroid 0.272. The norm also ranks a blurred,
      noisy, dark or 16-pixel copy of an ORL face below the original (``tests/test_quality.py``).
    * Clean ORL (``python -m fetoolkit.eval model=arcface``; FNMR 0.010): flip consistency
      0.0054, magnitude+diversity 0.0058, norm 0.0059 -- equal within the noise of 18 errors --
      detector confidence 0.0086, centroid distance 0.0103, diversity 0.0118.

    The original design's diversity term adds nothing (alone it is chance); flip consistency
    needs a second forward pass and centroid distance a reference set; the norm needs neither.

    Args:
        raw: float32 ``[N, D]`` embeddings before L2 normalisation (``Embedder.embed_raw``).
        rms_ref: the model's typical per-component RMS (mapped to 0.76). Norms differ by orders of
            magnitude between models, so pass the model's own (``ModelSpec.quality_rms_ref``:
            the median on clean ORL); the default is the sirius MobileFaceNet's.

    Returns:
        float32 ``[N]`` in ``[0, 1]``, higher = better. Values are comparable within one model;
        across models only when each uses its own ``rms_ref``.

    Raises:
        ValueError: not ``[N, D]`` floats, or NaN / infinite values.
    """
    return quality_norm(raw, rms_ref=rms_ref)


# --------------------------------------------------------------------------------------------
# Error versus reject
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ErcCurve:
    """An error-versus-reject curve.

    Attributes:
        reject: float64 ``[K]`` fraction of images rejected (lowest quality first).
        fnmr: float64 ``[K]`` FNMR of the remaining genuine pairs at ``threshold`` (NaN when none
            remain).
        fmr: float64 ``[K]`` FMR of the remaining impostor pairs at ``threshold`` (NaN when none).
        n_genuine: int64 ``[K]`` genuine pairs remaining.
        n_impostor: int64 ``[K]`` impostor pairs remaining.
        threshold: the fixed score threshold (accept when ``score >= threshold``).
    """

    reject: np.ndarray
    fnmr: np.ndarray
    fmr: np.ndarray
    n_genuine: np.ndarray
    n_impostor: np.ndarray
    threshold: float

    def to_dict(self) -> dict[str, Any]:
        def fl(a: np.ndarray) -> list[float | None]:
            return [json_float(float(v)) for v in a]

        return {
            "reject": fl(self.reject),
            "fnmr": fl(self.fnmr),
            "fmr": fl(self.fmr),
            "n_genuine": [int(v) for v in self.n_genuine],
            "n_impostor": [int(v) for v in self.n_impostor],
            "threshold": float(self.threshold),
        }


DEFAULT_REJECT = tuple(np.round(np.arange(0.0, 0.301, 0.01), 2))


def error_vs_reject(
    scores: np.ndarray,
    labels: np.ndarray,
    idx_a: np.ndarray,
    idx_b: np.ndarray,
    quality: np.ndarray,
    threshold: float,
    reject: Sequence[float] = DEFAULT_REJECT,
) -> ErcCurve:
    """Error-versus-reject curve: reject the lowest-quality images, watch FNMR at a fixed threshold.

    At reject fraction ``r`` the ``floor(r * N)`` images with the lowest quality are dropped
    (ties broken by image index, so the curve is deterministic), and every pair using one of
    them is left out. FNMR = remaining genuine pairs with ``score < threshold`` / remaining
    genuine pairs; FMR likewise for impostors with ``score >= threshold``.

    Args:
        scores: float ``[P]`` pair scores.
        labels: bool ``[P]``, True = genuine.
        idx_a, idx_b: int ``[P]`` image indices of each pair, into ``quality``.
        quality: float ``[N]`` per-image quality (higher = better); must be finite.
        threshold: fixed decision threshold (typically ``threshold_at_far`` on all pairs).
        reject: fractions in ``[0, 1)``.

    Returns:
        :class:`ErcCurve`. Cost: one argsort of ``N`` and ``P`` plus O(P) work.
    """
    s = np.asarray(scores, np.float64)
    y = np.asarray(labels).astype(bool)
    a = np.asarray(idx_a, np.int64)
    b = np.asarray(idx_b, np.int64)
    q = np.asarray(quality, np.float64)
    if not (s.shape == y.shape == a.shape == b.shape) or s.ndim != 1:
        raise ValueError("scores, labels, idx_a and idx_b must be 1-D of the same length")
    if q.ndim != 1 or not np.isfinite(q).all():
        raise ValueError("quality must be a finite 1-D array [N]")
    if s.size and (min(a.min(), b.min()) < 0 or max(a.max(), b.max()) >= q.size):
        raise ValueError(f"pair indices must lie in 0..{q.size - 1}")
    r = np.asarray(reject, np.float64)
    if r.ndim != 1 or ((r < 0) | (r >= 1)).any():
        raise ValueError("reject fractions must lie in [0, 1)")
    if not math.isfinite(threshold):
        raise ValueError(f"threshold must be finite, got {threshold}")
    n = q.size
    rank = np.empty(n, np.int64)
    rank[np.lexsort((np.arange(n), q))] = np.arange(n)  # 0 = worst
    pair_rank = np.minimum(rank[a], rank[b])  # the pair survives while both images do
    k = np.floor(r * n + 1e-9).astype(np.int64)  # images dropped
    # Pairs surviving at k: pair_rank >= k. Count with a histogram over pair_rank.
    err = np.where(y, s < threshold, s >= threshold)

    def surviving(mask: np.ndarray) -> np.ndarray:
        hist = np.bincount(pair_rank[mask], minlength=n)
        tail = np.concatenate([np.cumsum(hist[::-1])[::-1], [0]])  # tail[k] = #pairs with rank >= k
        return tail[k]

    ng, ni = surviving(y), surviving(~y)
    eg, ei = surviving(y & err), surviving(~y & err)
    with np.errstate(invalid="ignore", divide="ignore"):
        fnmr = np.where(ng > 0, eg / np.maximum(ng, 1), np.nan)
        fmr = np.where(ni > 0, ei / np.maximum(ni, 1), np.nan)
    return ErcCurve(
        r, fnmr.astype(np.float64), fmr.astype(np.float64), ng.astype(np.int64), ni.astype(np.int64), float(threshold)
    )


def erc_area(curve: ErcCurve, max_reject: float = 0.2) -> float:
    """Area under the FNMR-versus-reject curve up to ``max_reject``, divided by ``max_reject``.

    The mean FNMR over the rejection range: lower = a more useful quality score. NaN when the
    curve has no finite point in the range.
    """
    sel = (curve.reject <= max_reject + 1e-12) & np.isfinite(curve.fnmr)
    if sel.sum() < 2:
        return math.nan
    x, yv = curve.reject[sel], curve.fnmr[sel]
    return float(np.trapezoid(yv, x) / (x[-1] - x[0]))


# --------------------------------------------------------------------------------------------
# Consistency of genuine scores per subject
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GenuineSpread:
    """Spread of the genuine scores within each subject (e.g. across ORL's lighting changes).

    Attributes:
        subjects: subject ids, ascending.
        mean: per subject, mean genuine score.
        std: per subject, population std of the genuine scores (NaN for fewer than 2 pairs).
        min: per subject, lowest genuine score.
        n_pairs: per subject, genuine pairs.
    """

    subjects: tuple[int, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    min: tuple[float, ...]
    n_pairs: tuple[int, ...]

    def summary(self, worst: int = 5) -> dict[str, Any]:
        """JSON-ready: median and max of the per-subject std, the ``worst`` subjects by std."""
        std = np.asarray(self.std)
        ok = np.isfinite(std)
        order = np.argsort(-np.where(ok, std, -np.inf))[: min(worst, int(ok.sum()))]
        return {
            "n_subjects": len(self.subjects),
            "std_median": float(np.median(std[ok])) if ok.any() else None,
            "std_max": float(std[ok].max()) if ok.any() else None,
            "mean_median": float(np.median(self.mean)) if self.mean else None,
            "worst": [
                {
                    "subject": int(self.subjects[i]),
                    "std": float(self.std[i]),
                    "mean": float(self.mean[i]),
                    "min": float(self.min[i]),
                    "n_pairs": int(self.n_pairs[i]),
                }
                for i in order
            ],
        }


def genuine_spread(scores: np.ndarray, labels: np.ndarray, subject: np.ndarray) -> GenuineSpread:
    """Per-subject statistics of the genuine scores.

    Args:
        scores: float ``[P]``.
        labels: bool ``[P]``, True = genuine.
        subject: int ``[P]`` subject id of each pair (its first image's identity).

    Returns:
        :class:`GenuineSpread` over the subjects that have genuine pairs.
    """
    s = np.asarray(scores, np.float64)
    y = np.asarray(labels).astype(bool)
    sub = np.asarray(subject, np.int64)
    if not (s.shape == y.shape == sub.shape) or s.ndim != 1:
        raise ValueError("scores, labels and subject must be 1-D of the same length")
    sg, ug = s[y], sub[y]
    ids, inv, cnt = np.unique(ug, return_inverse=True, return_counts=True)
    tot = np.bincount(inv, sg, minlength=ids.size)
    mean = tot / np.maximum(cnt, 1)
    var = np.bincount(inv, (sg - mean[inv]) ** 2, minlength=ids.size) / np.maximum(cnt, 1)
    std = np.where(cnt >= 2, np.sqrt(var), np.nan)
    mn = np.full(ids.size, np.inf)
    np.minimum.at(mn, inv, sg)
    return GenuineSpread(
        tuple(int(i) for i in ids),
        tuple(float(v) for v in mean),
        tuple(float(v) for v in std),
        tuple(float(v) for v in mn),
        tuple(int(c) for c in cnt),
    )
