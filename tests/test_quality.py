"""Quality scores, error-versus-reject curves and the genuine-score spread.

Each function is checked against an independent computation (loops, pandas); the default score
is checked on real ORL faces: degraded copies of a face must score lower, and rejecting the
lowest-quality images of a mixed set must lower FNMR.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from fetoolkit.data.protocols import all_pairs
from fetoolkit.eval_run import run
from fetoolkit.metrics import quality as qm
from fetoolkit.models.factory import create_embedder
from fetoolkit.pipeline import DEGRADATIONS, degrade

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def compose_eval(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose("eval", overrides=overrides)


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def test_norms_and_summary() -> None:
    x = _rng().normal(size=(50, 16)).astype(np.float32) * np.arange(1, 51, dtype=np.float32)[:, None]
    n = qm.embedding_norms(x)
    assert n.dtype == np.float32 and n.shape == (50,)
    ref = [math.sqrt(sum(float(v) ** 2 for v in row)) for row in x]
    np.testing.assert_allclose(n, ref, rtol=1e-6)
    s = qm.norm_summary(x)
    assert s.n == 50 and s.min == pytest.approx(min(ref), rel=1e-6) and s.max == pytest.approx(max(ref), rel=1e-6)
    assert s.median == pytest.approx(float(np.median(ref)), rel=1e-6)
    assert s.rms_median == pytest.approx(float(np.median(ref)) / 4.0, rel=1e-6)
    assert qm.norm_summary(np.zeros((0, 16), np.float32)).to_dict()["median"] is None


def test_diversity_against_a_loop() -> None:
    x = _rng(1).normal(size=(5, 8))
    for row, d in zip(x, qm.diversity(x)):
        p = [v * v / sum(w * w for w in row) for v in row]
        assert d == pytest.approx(-sum(q * math.log(q) for q in p) / math.log(8), rel=1e-5)
    one_hot, flat = np.eye(8)[:1], np.ones((1, 8)) * -3.0
    assert qm.diversity(one_hot)[0] == 0.0 and qm.diversity(flat)[0] == pytest.approx(1.0)
    assert qm.diversity(np.zeros((1, 8)))[0] == 0.0


def test_norm_and_original_scores() -> None:
    x = _rng(2).normal(size=(30, 64)).astype(np.float32) * _rng(3).uniform(0.5, 20, size=(30, 1)).astype(np.float32)
    q = qm.quality_norm(x)
    rms = np.sqrt((x.astype(np.float64) ** 2).sum(1) / 64)
    np.testing.assert_allclose(q, np.tanh(rms / qm.RMS_REF), rtol=1e-5)
    assert (np.argsort(q, kind="stable") == np.argsort(rms, kind="stable")).all()  # monotone in the norm
    md = qm.quality_magnitude_diversity(x)
    np.testing.assert_allclose(md, np.sqrt(q * qm.diversity(x)), rtol=1e-6)
    assert ((0 <= md) & (md <= 1)).all()


def test_flip_and_centroid_scores() -> None:
    x = _rng(4).normal(size=(6, 10))
    assert np.allclose(qm.quality_flip_consistency(x, 3 * x), 1.0)
    assert np.allclose(qm.quality_flip_consistency(x, -x), 0.0)
    with pytest.raises(ValueError, match="differ in shape"):
        qm.quality_flip_consistency(x, x[:, :5])
    ref = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    c = qm.quality_centroid_distance(np.array([[1.0, 1.0, 0], [-1.0, -1.0, 0], [0, 0, 5.0]]), ref)
    np.testing.assert_allclose(c, [0.0, 1.0, 0.5], atol=1e-6)


def test_face_quality_contract() -> None:
    """What the HTTP service relies on: raw [N, D] float32 -> float32 [N] in [0, 1]."""
    x = _rng(5).normal(size=(7, 192)).astype(np.float32) * 5
    q = qm.face_quality(x)
    assert q.dtype == np.float32 and q.shape == (7,) and ((0 <= q) & (q <= 1)).all()
    np.testing.assert_array_equal(q, qm.quality_norm(x))
    assert qm.face_quality(x[:1]).shape == (1,) and qm.face_quality(np.zeros((1, 8), np.float32))[0] == 0.0
    for bad in (x[0], np.full((1, 8), np.nan, np.float32), x.astype(np.int32)):
        with pytest.raises(ValueError):
            qm.face_quality(bad)


def _erc_brute(scores, labels, a, b, q, thr, r):
    order = sorted(range(len(q)), key=lambda i: (q[i], i))
    gone = set(order[: int(math.floor(r * len(q) + 1e-9))])
    keep = [k for k in range(len(scores)) if a[k] not in gone and b[k] not in gone]
    gen = [k for k in keep if labels[k]]
    imp = [k for k in keep if not labels[k]]
    fnmr = sum(scores[k] < thr for k in gen) / len(gen) if gen else float("nan")
    fmr = sum(scores[k] >= thr for k in imp) / len(imp) if imp else float("nan")
    return fnmr, fmr, len(gen), len(imp)


def test_error_vs_reject_against_brute_force() -> None:
    rng = _rng(6)
    ids = rng.integers(0, 12, size=60)
    p = all_pairs(ids)
    scores = rng.normal(np.where(p.labels, 0.6, 0.1), 0.25)
    q = np.round(rng.random(60), 1)  # many ties
    rej = [0.0, 0.1, 0.25, 0.5, 0.9]
    c = qm.error_vs_reject(scores, p.labels, p.idx_a, p.idx_b, q, 0.4, rej)
    for k, r in enumerate(rej):
        fnmr, fmr, ng, ni = _erc_brute(scores, p.labels, p.idx_a, p.idx_b, q, 0.4, r)
        assert (c.n_genuine[k], c.n_impostor[k]) == (ng, ni)
        assert c.fnmr[k] == pytest.approx(fnmr, nan_ok=True) and c.fmr[k] == pytest.approx(fmr, nan_ok=True)
    with pytest.raises(ValueError, match="reject"):
        qm.error_vs_reject(scores, p.labels, p.idx_a, p.idx_b, q, 0.4, [1.0])
    with pytest.raises(ValueError, match="indices"):
        qm.error_vs_reject(scores, p.labels, p.idx_a, p.idx_b, q[:10], 0.4)


def test_erc_area_by_hand() -> None:
    c = qm.ErcCurve(
        np.array([0.0, 0.1, 0.2, 0.3]),
        np.array([0.04, 0.02, 0.02, 0.0]),
        np.zeros(4),
        np.ones(4, np.int64),
        np.ones(4, np.int64),
        0.5,
    )
    # trapezoids over 0..0.2: (0.04+0.02)/2*0.1 + 0.02*0.1 = 0.005, / 0.2
    assert qm.erc_area(c, 0.2) == pytest.approx(0.025)


def test_genuine_spread_against_pandas() -> None:
    rng = _rng(7)
    scores = rng.random(200)
    labels = rng.random(200) < 0.6
    subject = rng.integers(0, 9, 200)
    g = qm.genuine_spread(scores, labels, subject)
    ref = pd.DataFrame({"s": scores[labels], "sub": subject[labels]}).groupby("sub")["s"]
    assert list(g.subjects) == list(ref.std(ddof=0).index)
    np.testing.assert_allclose(g.std, ref.std(ddof=0).to_numpy(), rtol=1e-10)
    np.testing.assert_allclose(g.min, ref.min().to_numpy())
    np.testing.assert_allclose(g.mean, ref.mean().to_numpy(), rtol=1e-10)
    summ = g.summary(worst=3)
    assert [w["subject"] for w in summ["worst"]] == list(ref.std(ddof=0).sort_values(ascending=False).index[:3])


@pytest.fixture(scope="module")
def arcface():
    return create_embedder("arcface")


@pytest.fixture(scope="module")
def clean_quality(aligned_faces: np.ndarray, arcface) -> np.ndarray:
    return qm.face_quality(arcface.embed_raw(aligned_faces))


@pytest.mark.parametrize("kind", DEGRADATIONS)
def test_default_quality_ranks_degraded_faces_lower(
    aligned_faces: np.ndarray, arcface, clean_quality: np.ndarray, kind: str
) -> None:
    """On real ORL crops, a blurred/noisy/dark/low-resolution copy scores lower than the original."""
    q0 = clean_quality
    q1 = qm.face_quality(arcface.embed_raw(degrade(aligned_faces, kind)))
    assert np.mean(q1 < q0) >= 0.9, (kind, np.mean(q1 < q0))


def test_erc_on_mixed_quality_orl() -> None:
    """A quarter of ORL degraded: rejecting by the default score removes most errors; diversity alone does not.

    Also the measurement behind the choice of the default:
    ``python -m fetoolkit.eval model=arcface pipeline.degrade=0.25`` (quality.erc in results.json).
    """
    cfg = compose_eval(
        [
            "model=arcface",
            "dataset=orl",
            "pipeline.progress=false",
            "pipeline.degrade=0.25",
            "stats.n_boot=0",
            "quality.flip=false",
        ]
    )
    res = run(cfg, None)
    assert res["n_degraded"] == 100
    erc = res["quality"]["erc"]
    area = {k: v["erc_area"] for k, v in erc["scores"].items()}
    assert erc["fnmr_no_reject"] > 0.1  # the degradations do cost accuracy
    at20 = erc["scores"]["norm"]["fnmr_at_reject"]["0.2"]
    assert at20 < 0.5 * erc["fnmr_no_reject"], (at20, erc["fnmr_no_reject"])
    assert area["norm"] < 0.8 * erc["fnmr_no_reject"], (area, erc["fnmr_no_reject"])
    assert area["norm"] < min(area["diversity"], area["centroid_distance"]), area
    assert area["diversity"] > 0.9 * erc["fnmr_no_reject"]  # diversity alone is no better than chance


@pytest.mark.parametrize("name, backend", [("arcface", "torch"), ("mobilefacenet512", "torch"), ("sface", "onnx")])
def test_registered_quality_scale_is_the_models_own(name: str, backend: str, aligned_faces: np.ndarray) -> None:
    """Each real model's ``quality_rms_ref`` is the median RMS of its raw embeddings on aligned ORL
    faces (registered from the 400-face eval; these are 40 of them), so a typical clean face scores
    near tanh(1) = 0.76 whatever the model's norm scale (which spans 30x between these models)."""
    from fetoolkit.models.registry import get_model_spec

    ref = get_model_spec(name).quality_rms_ref
    assert ref is not None
    raw = create_embedder(name, backend=backend).embed_raw(aligned_faces)
    rms = np.linalg.norm(raw, axis=1) / math.sqrt(raw.shape[1])
    assert abs(float(np.median(rms)) / ref - 1.0) < 0.1, (float(np.median(rms)), ref)
    q = qm.face_quality(raw, rms_ref=ref)
    assert 0.6 < float(np.median(q)) < 0.9
