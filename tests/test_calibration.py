"""Calibration: the maps and measures against independent implementations (bob.measure's published
Cllr / min Cllr, scikit-learn's IsotonicRegression, LogisticRegression, calibration_curve,
brier_score_loss and log_loss), the out-of-fold protocol, and the figures on real ORL faces."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss
from sklearn.metrics import log_loss as sk_log_loss

from fetoolkit.decision.calibrate import CalibrationCfg, calibrate, fold_plan
from fetoolkit.figures import StatsCfg
from fetoolkit.metrics import calibration as cm
from fetoolkit.metrics.subjects import subject_codes
from tests._bob_reference import bob_cllr, bob_min_cllr


def _scores(seed: int = 0, n_gen: int = 300, n_imp: int = 3000) -> tuple[np.ndarray, np.ndarray]:
    """Cosine-like scores: genuine around 0.6, impostor around 0.1, overlapping tails."""
    rng = np.random.default_rng(seed)
    s = np.concatenate([rng.normal(0.6, 0.15, n_gen), rng.normal(0.1, 0.12, n_imp)]).clip(-0.99, 0.99)
    y = np.concatenate([np.ones(n_gen, bool), np.zeros(n_imp, bool)])
    return s, y


@pytest.fixture(scope="module")
def orl_pairs(orl_embedded):
    """(scores, labels, subject_a, subject_b) of every ORL pair, arcface, MTCNN crops."""
    data, es = orl_embedded
    emb = es.normalized()
    p = data.roc
    s = np.einsum("ij,ij->i", emb[p.idx_a], emb[p.idx_b]).astype(np.float64)
    ids = data.identities
    return s, p.labels, ids[p.idx_a], ids[p.idx_b]


def test_cllr_equals_bob_measure() -> None:
    s, y = _scores()
    llr = cm.fit_calibration(s, y, "logistic").llr(s)
    assert cm.cllr(llr, y) == pytest.approx(bob_cllr(llr[~y], llr[y]), rel=1e-12)
    # an uninformative system (LLR 0 everywhere) costs exactly one bit
    assert cm.cllr(np.zeros_like(s), y) == pytest.approx(1.0, abs=1e-15)


def test_cllr_min_equals_bob_measure_on_synthetic_and_orl_scores(orl_pairs) -> None:
    s, y = _scores(1)
    assert cm.cllr_min(s, y) == pytest.approx(bob_min_cllr(s[~y], s[y]), rel=1e-9)
    os_, oy = orl_pairs[0], orl_pairs[1]
    assert cm.cllr_min(os_, oy) == pytest.approx(bob_min_cllr(os_[~oy], os_[oy]), rel=1e-6)


def test_cllr_min_is_the_floor_of_every_monotone_map() -> None:
    s, y = _scores(2)
    floor = cm.cllr_min(s, y)
    for method in cm.METHODS:
        assert cm.cllr(cm.fit_calibration(s, y, method).llr(s), y) >= floor - 1e-12
    # the PAV map itself reaches it
    x, llr = cm.pav_llr(s, y)
    assert cm.cllr(llr[np.searchsorted(x, s)], y) == pytest.approx(floor, rel=1e-12)


def test_runs_give_the_pair_by_pair_pav() -> None:
    """score_runs pools label runs before PAV: the same Cllr_min as PAV over every distinct score,
    under arbitrary weights and with ties of mixed labels."""
    rng = np.random.default_rng(3)
    s, y = _scores(3)
    s = np.round(s, 2)  # ties, some of them mixed
    w = rng.integers(0, 4, s.size).astype(np.float64)
    x, llr = cm.pav_llr(s, y, w)
    used = w > 0
    per_score = cm.cllr(llr[np.searchsorted(x, s[used])], y[used], w[used])
    assert cm.cllr_min(s, y, w) == pytest.approx(per_score, rel=1e-10)


def test_isotonic_map_equals_scikit_learn() -> None:
    s, y = _scores(4)
    w = np.where(y, 0.5 / y.sum(), 0.5 / (~y).sum())  # prior-weighted: each class one half
    p_sk = IsotonicRegression(out_of_bounds="clip").fit(s, y.astype(float), sample_weight=w).predict(s)
    x, llr = cm.pav_llr(s, y)
    ours = llr[np.searchsorted(x, s)]
    inside = (p_sk > 0) & (p_sk < 1)
    assert inside.sum() > 0.3 * s.size
    np.testing.assert_allclose(ours[inside], np.log(p_sk[inside] / (1 - p_sk[inside])), rtol=1e-9, atol=1e-9)
    assert np.isposinf(ours[p_sk == 1]).all() and np.isneginf(ours[p_sk == 0]).all()
    # the fitted map agrees inside and bounds the pure blocks: finite, monotone
    cal = cm.fit_calibration(s, y, "isotonic")
    mapped = cal.llr(s)
    np.testing.assert_allclose(mapped[inside], ours[inside], rtol=1e-9, atol=1e-9)
    assert np.isfinite(mapped).all()
    order = np.argsort(s)
    assert (np.diff(mapped[order]) >= -1e-12).all()


def test_logistic_map_equals_scikit_learn_balanced_logistic_regression() -> None:
    s, y = _scores(5)
    lr = LogisticRegression(C=np.inf, class_weight="balanced", tol=1e-12, max_iter=10_000).fit(s[:, None], y)
    cal = cm.fit_calibration(s, y, "logistic")
    assert cal.params["a"] == pytest.approx(lr.coef_[0, 0], rel=1e-5)
    assert cal.params["b"] == pytest.approx(lr.intercept_[0], rel=1e-5)


def test_beta_map_keeps_non_negative_slopes_and_beats_nothing() -> None:
    s, y = _scores(6)
    cal = cm.fit_calibration(s, y, "beta")
    assert cal.params["a"] >= 0 and cal.params["b"] >= 0
    assert cm.cllr(cal.llr(s), y) < 0.5
    round_trip = cm.Calibration.from_dict(cal.to_dict())
    np.testing.assert_array_equal(round_trip.llr(s), cal.llr(s))


def test_reliability_brier_log_loss_equal_scikit_learn() -> None:
    s, y = _scores(7)
    llr = cm.fit_calibration(s, y, "logistic").llr(s)
    p = cm.llr_to_p(llr, float(y.mean()))
    frac, mean = calibration_curve(y, p, n_bins=10, strategy="uniform")
    r = cm.reliability(p, y, 10)
    np.testing.assert_allclose(r.frac_genuine, frac, rtol=1e-12)
    np.testing.assert_allclose(r.mean_p, mean, rtol=1e-12)
    assert r.count.sum() == y.size
    ece = float(np.sum(r.count / y.size * np.abs(frac - mean)))
    assert cm.ece(p, y, 10) == pytest.approx(ece, rel=1e-12)
    assert cm.brier(p, y) == pytest.approx(brier_score_loss(y, p), rel=1e-12)
    assert cm.log_loss(p, y) == pytest.approx(sk_log_loss(y, p), rel=1e-9)


def test_llr_to_p_is_bayes_rule() -> None:
    assert float(cm.llr_to_p(0.0, 0.25)) == pytest.approx(0.25)
    # LR 9 at prior 0.1: posterior odds 9 * 1/9 = 1
    assert float(cm.llr_to_p(math.log(9.0), 0.1)) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="prior"):
        cm.llr_to_p(0.0, 1.0)


def test_folds_are_subject_disjoint_and_score_every_pair_once(orl_pairs) -> None:
    _, y, sa, sb = orl_pairs
    subj = subject_codes(sa, sb)
    plan, described = fold_plan(y, subj, 5, seed=0)
    assert "subject-disjoint" in described
    seen = np.zeros(y.size, np.int64)
    for train, test in plan:
        seen += test
        test_subjects = set(np.concatenate([subj.a[test], subj.b[test]]).tolist())
        train_subjects = set(np.concatenate([subj.a[train], subj.b[train]]).tolist())
        assert not test_subjects & train_subjects
        assert y[train].any() and (~y[train]).any()
    assert (seen == 1).all()


def test_orl_out_of_fold_calibration_meets_the_bar(orl_pairs) -> None:
    """Issue 32's bar on real faces: out-of-fold Cllr < 0.1, Cllr_min <= Cllr, ECE <= 0.02, and the
    figures equal the independent implementations' on the same (out-of-fold) LLRs."""
    s, y, sa, sb = orl_pairs
    c = calibrate(s, y, CalibrationCfg(), StatsCfg(n_boot=200), subjects=(sa, sb))
    assert c is not None
    f = c.figures
    assert f["cllr"] < 0.1
    assert f["cllr_min"] <= f["cllr"]
    assert f["ece"] <= 0.02
    assert f["cllr"] == pytest.approx(bob_cllr(c.llr[~y], c.llr[y]), rel=1e-9)
    assert f["cllr_min"] == pytest.approx(bob_min_cllr(s[~y], s[y]), rel=1e-6)
    frac, mean = calibration_curve(y, c.p_same, n_bins=10, strategy="uniform")
    counts = np.bincount(np.clip((c.p_same * 10).astype(int), 0, 9), minlength=10)
    assert f["ece"] == pytest.approx(float(np.sum(counts[counts > 0] / y.size * np.abs(frac - mean))), rel=1e-9)
    assert f["brier"] == pytest.approx(brier_score_loss(y, c.p_same), rel=1e-9)
    # every interval holds its estimate's order of magnitude and is ordered
    for k in ("cllr", "cllr_min", "brier", "log_loss"):
        lo, hi = c.intervals[k]
        assert lo <= f[k] <= hi, k
    assert c.ci_method == "subject"
    s_ = c.summary()
    assert {"method", "fit_on", "prior", "cllr", "cllr_min", "ece", "brier", "log_loss"} <= set(s_)


def test_the_bootstrap_at_unit_weights_is_the_point_estimate(orl_pairs) -> None:
    """The batched weighted sums of the bootstrap compute the same measures as the metric functions."""
    from fetoolkit.decision.calibrate import _batch_measures, _Design, _measures

    s, y, _, _ = orl_pairs
    llr = cm.fit_calibration(s, y, "logistic").llr(s)
    p = cm.llr_to_p(llr, 0.3)
    point = _measures(s, y, llr, p, 10)
    (batched,) = list(_batch_measures(np.ones((1, s.size)), _Design.of(s, y, llr, p, 10)))
    for k, v in point.items():
        assert batched[k] == pytest.approx(v, rel=1e-9), k


def test_out_of_fold_llrs_never_see_their_pairs() -> None:
    """A map fitted and scored on the same pairs flatters the figures; out-of-fold does not: on
    isotonic, whose in-sample map is the PAV itself (Cllr = Cllr_min), out-of-fold must cost more."""
    s, y = _scores(8, 200, 2000)
    subjects = np.concatenate([np.repeat(np.arange(40), 5), np.arange(2000) % 40])
    other = np.concatenate([np.repeat(np.arange(40), 5), (np.arange(2000) + 1 + np.arange(2000) // 40) % 40])
    c = calibrate(s, y, CalibrationCfg(method="isotonic"), StatsCfg(n_boot=0), subjects=(subjects, other))
    assert c is not None and c.figures["cllr"] > c.figures["cllr_min"] + 1e-4


def test_a_dev_set_fits_the_map_there() -> None:
    s, y = _scores(9)
    ds, dy = _scores(10)
    c = calibrate(s, y, CalibrationCfg(method="logistic"), StatsCfg(n_boot=0), dev=(ds, dy, None), dev_name="d.csv")
    assert c is not None and c.fit_on.startswith("dev")
    np.testing.assert_allclose(c.llr, cm.fit_calibration(ds, dy, "logistic").llr(s))


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="calibration.method"):
        CalibrationCfg(method="platt")
    with pytest.raises(ValueError, match="folds"):
        CalibrationCfg(folds=2)
    s, y = _scores()
    with pytest.raises(ValueError, match="non-finite"):
        cm.fit_calibration(np.where(np.arange(s.size) == 0, np.nan, s), y, "logistic")
    assert calibrate(s, y, CalibrationCfg(method="none"), StatsCfg(n_boot=0)) is None
