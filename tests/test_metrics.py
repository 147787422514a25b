"""Verification metrics: against scikit-learn, brute-force references and hand-worked cases."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from fetoolkit.metrics import verification as vm

# ---------------------------------------------------------------------------------------------
# helpers and brute-force references
# ---------------------------------------------------------------------------------------------


def random_pairs(n: int, seed: int, decimals: int | None = 2, sep: float = 1.0):
    """Scores with many ties (rounded), labels with both classes, 10 folds."""
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.4
    y[:2] = [True, False]
    s = rng.normal(size=n) + sep * y
    if decimals is not None:
        s = np.round(s, decimals)
    f = rng.integers(0, 10, n)
    f[:10] = np.arange(10)
    return s, y, f


def brute_rates(s: np.ndarray, y: np.ndarray):
    """FAR, FRR at +inf then every distinct score descending, by direct counting."""
    th = np.concatenate([[np.inf], np.unique(s)[::-1]])
    far = np.array([np.mean(s[~y] >= t) for t in th])
    frr = np.array([np.mean(s[y] < t) for t in th])
    return th, far, frr


def brute_eer(s: np.ndarray, y: np.ndarray) -> float:
    """Walk the thresholds until FAR >= FRR; interpolate linearly from the previous point."""
    th, far, frr = brute_rates(s, y)
    for i in range(1, th.size):
        if far[i] >= frr[i]:
            d0, d1 = far[i - 1] - frr[i - 1], far[i] - frr[i]
            t = -d0 / (d1 - d0)
            return far[i - 1] + t * (far[i] - far[i - 1])
    raise AssertionError("no crossing")


def bisect_eer(s: np.ndarray, y: np.ndarray) -> float:
    """Independent: root of tpr(x) = 1 - x on sklearn's piecewise-linear ROC, by bisection."""
    fpr, tpr, _ = sk_roc_curve(y, s, drop_intermediate=False)
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if np.interp(mid, fpr, tpr) + mid - 1.0 < 0:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def brute_kfold(s: np.ndarray, y: np.ndarray, f: np.ndarray):
    """LFW k-fold by trying every candidate threshold; ties -> lower median of the maximisers."""
    accs, thrs = [], []
    for k in np.unique(f):
        tr, te = f != k, f == k
        u = np.unique(s[tr])
        if u.size > 1:
            cands = np.concatenate([[u[0] - (u[1] - u[0]) / 2], (u[:-1] + u[1:]) / 2, [u[-1] + (u[-1] - u[-2]) / 2]])
        else:
            cands = np.array([u[0] - 0.5, u[0] + 0.5])
        train_acc = np.array([np.mean((s[tr] >= c) == y[tr]) for c in cands])
        best = np.flatnonzero(train_acc == train_acc.max())
        c = cands[best[(best.size - 1) // 2]]
        accs.append(np.mean((s[te] >= c) == y[te]))
        thrs.append(c)
    return np.array(accs), np.array(thrs)


# ---------------------------------------------------------------------------------------------
# ROC, AUC, DET
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("decimals", [0, 1, 2, None])
def test_roc_and_auc_match_sklearn_with_ties(seed: int, decimals: int | None) -> None:
    s, y, _ = random_pairs(300 + 37 * seed, seed, decimals)
    curve = vm.roc_curve(s, y.astype(int))
    fpr, tpr, th = sk_roc_curve(y, s, drop_intermediate=False)
    assert curve.thresholds.dtype == np.float64 and curve.thresholds[0] == np.inf
    np.testing.assert_array_equal(curve.thresholds, th)
    np.testing.assert_allclose(curve.far, fpr, rtol=0, atol=1e-15)
    np.testing.assert_allclose(curve.tar, tpr, rtol=0, atol=1e-15)
    assert (curve.n_genuine, curve.n_impostor) == (int(y.sum()), int((~y).sum()))
    assert vm.auc(curve) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    # the report's integer-summed AUC agrees too
    assert vm.verification_report(s, y, np.arange(s.size) % 2).auc == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_det_curve_is_roc_with_frr() -> None:
    s, y, _ = random_pairs(200, 1)
    roc, det = vm.roc_curve(s, y), vm.det_curve(s, y)
    np.testing.assert_array_equal(det.far, roc.far)
    np.testing.assert_array_equal(det.frr, 1.0 - roc.tar)
    np.testing.assert_array_equal(det.thresholds, roc.thresholds)
    assert det.frr[0] == 1.0 and det.frr[-1] == 0.0


# ---------------------------------------------------------------------------------------------
# EER
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("decimals", [0, 1, 3])
def test_eer_matches_brute_force_and_bisection(seed: int, decimals: int) -> None:
    s, y, _ = random_pairs(150 + 11 * seed, seed, decimals)
    got = vm.eer(s, y)
    assert got.eer == pytest.approx(brute_eer(s, y), abs=1e-12)
    assert got.eer == pytest.approx(bisect_eer(s, y), abs=1e-9)
    # the threshold lies between the scores of the two bracketing ROC points
    th, far, frr = brute_rates(s, y)
    i = int(np.argmax(far >= frr))
    assert th[i] <= got.threshold <= th[i - 1]


def test_hand_worked_seven_pairs() -> None:
    # Descending: .9G .8G .7I .6G .4I .3G .2I -> G = 4, I = 3.
    # ROC (far, tar): inf (0,0); .9 (0,1/4); .8 (0,1/2); .7 (1/3,1/2); .6 (1/3,3/4);
    #                 .4 (2/3,3/4); .3 (2/3,1); .2 (1,1).
    # FAR - FRR: -1, -3/4, -1/2, -1/6, +1/12 ... -> crossing between .7 and .6,
    # t = (1/6) / (1/6 + 1/12) = 2/3: FAR = 1/3, FRR = 1/2 + 2/3 * (1/4 - 1/2) = 1/3 -> EER 1/3,
    # threshold = .7 + 2/3 * (.6 - .7) = 0.6333...
    # AUC = genuine-above-impostor pairs / 12 = (3 + 3 + 2 + 1) / 12 = 0.75.
    s = np.array([0.9, 0.8, 0.7, 0.6, 0.4, 0.3, 0.2])
    y = np.array([1, 1, 0, 1, 0, 1, 0])
    e = vm.eer(s, y)
    assert e.eer == pytest.approx(1 / 3, abs=1e-12)
    assert e.threshold == pytest.approx(0.7 - 0.2 / 3, abs=1e-12)
    assert vm.auc(vm.roc_curve(s, y)) == pytest.approx(0.75, abs=1e-12)
    # FAR <= 1/3 allows 1 impostor: the lowest such threshold is .6 -> TAR 3/4, FAR 1/3.
    t = vm.tar_at_far(s, y, 1 / 3)
    assert (t.tar, t.threshold, t.achieved_far, t.reason) == (0.75, 0.6, pytest.approx(1 / 3), None)
    assert vm.threshold_at_far(s, y, 0.5) == 0.6  # still one impostor (floor(1.5) = 1)
    # FAR <= 0.2 with 3 impostors: 3 * 0.2 < 1 -> not measurable.
    t = vm.tar_at_far(s, y, 0.2)
    assert math.isnan(t.tar) and math.isnan(t.threshold) and "1/3" in t.reason
    # FAR <= 1: threshold .2 accepts everything.
    assert vm.tar_at_far(s, y, 1.0).threshold == 0.2


def test_perfectly_separable() -> None:
    # genuine .9 .8, impostors .3 .1; folds 0 1 0 1.
    # Fold 0 is judged by fold 1 = {.8 G, .1 I}: candidates -.25, .45, 1.15 -> accuracies
    # 1/2, 1, 1/2 -> .45, which classifies fold 0 = {.9 G, .3 I} perfectly. Fold 1 by
    # {.9 G, .3 I}: candidates 0, .6, 1.2 -> .6, perfect on {.8 G, .1 I}.
    s = np.array([0.9, 0.8, 0.3, 0.1])
    y = np.array([True, True, False, False])
    f = np.array([0, 1, 0, 1])
    acc = vm.kfold_accuracy(s, y, f)
    assert acc.fold_accuracies == (1.0, 1.0) and acc.accuracy_mean == 1.0 and acc.accuracy_std == 0.0
    assert acc.fold_thresholds == pytest.approx((0.45, 0.6)) and acc.best_threshold == pytest.approx(0.525)
    e = vm.eer(s, y)
    assert e.eer == 0.0 and e.threshold == 0.8  # the first threshold where FAR = FRR = 0
    assert vm.auc(vm.roc_curve(s, y)) == 1.0


def test_fully_inverted() -> None:
    # genuine .3 .1, impostors .9 .8 (folds: .9 -> 0, .8 -> 1, .3 -> 0, .1 -> 1).
    # ROC: inf (0,0); .9 (1/2, 0); .8 (1, 0) where FAR = FRR = 1 -> EER 1 at .8; AUC 0.
    # Fold 0 by fold 1 = {.8 I, .1 G}: candidates -.25, .45, 1.15 -> accuracies 1/2, 0, 1/2;
    # maximisers {-.25, 1.15}, lower median -.25 -> accept all of fold 0 -> 1/2.
    # Fold 1 by {.9 I, .3 G}: candidates 0, .6, 1.2 -> 0 -> accept all of fold 1 -> 1/2.
    s = np.array([0.9, 0.8, 0.3, 0.1])
    y = np.array([0, 0, 1, 1])
    f = np.array([0, 1, 0, 1])
    e = vm.eer(s, y)
    assert (e.eer, e.threshold) == (1.0, 0.8)
    assert vm.auc(vm.roc_curve(s, y)) == 0.0
    acc = vm.kfold_accuracy(s, y, f)
    assert acc.fold_accuracies == (0.5, 0.5)
    assert acc.fold_thresholds == pytest.approx((-0.25, 0.0))
    assert acc.best_threshold == pytest.approx(-0.125)


def test_all_scores_equal() -> None:
    # One distinct score: ROC (0,0) -> (1,1); FAR - FRR jumps from -1 to +1 at the midpoint
    # of the segment: EER 1/2; no finite interpolation with +inf, so the threshold is the score.
    s = np.full(6, 0.4)
    y = np.array([1, 0, 1, 0, 1, 0])
    e = vm.eer(s, y)
    assert (e.eer, e.threshold) == (0.5, 0.4)
    assert vm.auc(vm.roc_curve(s, y)) == 0.5
    # k-fold: one distinct training score -> candidates .4 -/+ .5 (accept all / reject all).
    # Fold 0 = labels 1 0 1 is judged by fold 1 = 0 1 0: reject all is right 2/3 -> 0.9, which
    # is right on 1/3 of fold 0. Fold 1 by fold 0 (2 genuine of 3): accept all -> -0.1 -> 1/3.
    acc = vm.kfold_accuracy(s, y, np.array([0, 0, 0, 1, 1, 1]))
    assert acc.fold_thresholds == pytest.approx((0.9, -0.1))
    assert acc.fold_accuracies == pytest.approx((1 / 3, 1 / 3))
    # balanced training folds: both candidates give 1/2 -> the lower of the two, -0.1
    acc = vm.kfold_accuracy(s, y, np.array([0, 0, 1, 1, 2, 2]))
    assert acc.fold_thresholds == pytest.approx((-0.1, -0.1, -0.1)) and acc.accuracy_mean == 0.5


# ---------------------------------------------------------------------------------------------
# TAR@FAR
# ---------------------------------------------------------------------------------------------


def test_tar_at_far_against_brute_force() -> None:
    s, y, _ = random_pairs(3000, 3, decimals=2)
    n_imp = int((~y).sum())
    for far in (0.5, 0.1, 0.01, 1e-3):
        t = vm.tar_at_far(s, y, far)
        if n_imp * far < 1:
            assert math.isnan(t.tar)
            continue
        th, fars, frr = brute_rates(s, y)
        ok = np.flatnonzero(fars <= far)
        i = ok[-1]  # lowest threshold (thresholds descend) whose FAR <= far
        assert t.threshold == th[i] and t.tar == pytest.approx(1 - frr[i], abs=1e-15)
        assert t.achieved_far == pytest.approx(fars[i], abs=1e-15) and t.achieved_far <= far


def test_tar_at_far_nan_with_reason_when_too_few_impostors() -> None:
    rng = np.random.default_rng(0)
    y = np.r_[np.ones(700, bool), np.zeros(500, bool)]
    s = rng.normal(size=y.size) + y
    t = vm.tar_at_far(s, y, 1e-3)  # 500 * 1e-3 = 0.5 < 1
    assert math.isnan(t.tar) and math.isnan(t.threshold) and math.isnan(t.achieved_far)
    assert "500" in t.reason and "1000" in t.reason and "0.001" in t.reason
    assert math.isnan(vm.threshold_at_far(s, y, 1e-3))
    assert not math.isnan(vm.tar_at_far(s, y, 2e-3).tar)  # 500 * 2e-3 = 1 impostor: measurable
    assert vm.finest_far(500) == pytest.approx(2e-3)
    # decades: 1e-1 (50 impostors) and 1e-2 (5) are measurable, 1e-3 is not reported
    assert list(vm.tar_at_far_decades(s, y)) == ["1e-1", "1e-2"]
    # no impostors at all: NaN with reason, not an exception
    assert "no impostor" in vm.tar_at_far(s[y], y[y], 0.1).reason
    assert "no genuine" in vm.tar_at_far(s[~y], y[~y], 0.1).reason
    # 1000 impostors: 1000 * 1e-3 == 1 exactly -> measurable, 1e-3 decade reported
    y2 = np.r_[np.ones(10, bool), np.zeros(1000, bool)]
    s2 = rng.normal(size=y2.size)
    assert not math.isnan(vm.tar_at_far(s2, y2, 1e-3).tar)
    assert list(vm.tar_at_far_decades(s2, y2)) == ["1e-1", "1e-2", "1e-3"]


def test_tar_at_far_top_impostor_tie_gives_infinite_threshold() -> None:
    # Two impostors tie at the top score; FAR <= 1/10 allows one: only "reject all" qualifies.
    s = np.r_[np.full(2, 9.0), np.arange(8.0), np.arange(4.0)]
    y = np.r_[np.zeros(10, bool), np.ones(4, bool)]
    t = vm.tar_at_far(s, y, 0.1)
    assert (t.tar, t.threshold, t.achieved_far, t.reason) == (0.0, math.inf, 0.0, None)


def test_finest_far_and_far_key() -> None:
    assert vm.finest_far(1000) == 1e-3
    with pytest.raises(ValueError, match="impostor"):
        vm.finest_far(0)
    assert [vm.far_key(x) for x in (1e-1, 1e-3, 1e-6, 2.5e-4, 1.0)] == ["1e-1", "1e-3", "1e-6", "2.5e-4", "1e0"]


# ---------------------------------------------------------------------------------------------
# k-fold accuracy
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("n_folds", [2, 3, 10])
@pytest.mark.parametrize("decimals", [0, 1, None])
def test_kfold_matches_brute_force(seed: int, n_folds: int, decimals: int | None) -> None:
    s, y, _ = random_pairs(120 + 7 * seed, seed, decimals, sep=1.5)
    f = np.arange(s.size) % n_folds + 1  # ids 1..K
    np.random.default_rng(seed).shuffle(f)
    got = vm.kfold_accuracy(s, y, f)
    accs, thrs = brute_kfold(s, y, f)
    np.testing.assert_allclose(got.fold_accuracies, accs, rtol=0, atol=1e-12)
    np.testing.assert_allclose(got.fold_thresholds, thrs, rtol=0, atol=1e-12)
    assert got.accuracy_mean == pytest.approx(accs.mean(), abs=1e-12)
    assert got.accuracy_std == pytest.approx(np.std(accs), abs=1e-12)
    assert got.best_threshold == pytest.approx(thrs.mean(), abs=1e-12)


def test_kfold_validation() -> None:
    s, y, _ = random_pairs(50, 0)
    with pytest.raises(ValueError, match="at least 2 folds"):
        vm.kfold_accuracy(s, y, np.zeros(50, int))
    f = np.where(np.arange(50) < 25, 0, 2)  # fold 1 is empty
    with pytest.raises(ValueError, match=r"\[1\] have no pairs"):
        vm.kfold_accuracy(s, y, f)
    with pytest.raises(ValueError, match="length"):
        vm.kfold_accuracy(s, y, np.arange(49) % 2)
    with pytest.raises(ValueError, match="integer"):
        vm.kfold_accuracy(s, y, np.arange(50) % 2 + 0.5)


# ---------------------------------------------------------------------------------------------
# input validation
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", [vm.roc_curve, vm.eer, vm.det_curve, lambda s, y: vm.tar_at_far(s, y, 0.1)])
def test_input_validation(fn) -> None:
    s = np.array([0.1, 0.5, 0.9, 0.3])
    y = np.array([0, 1, 1, 0])
    with pytest.raises(ValueError, match="length"):
        fn(s, y[:3])
    with pytest.raises(ValueError, match="NaN"):
        fn(np.array([0.1, np.nan, 0.9, 0.3]), y)
    with pytest.raises(ValueError, match="finite"):
        fn(np.array([0.1, np.inf, 0.9, 0.3]), y)
    with pytest.raises(ValueError, match="0/1"):
        fn(s, np.array([0, 1, 2, 0]))
    with pytest.raises(ValueError, match="empty"):
        fn(np.array([]), np.array([]))
    with pytest.raises(ValueError, match="1-D"):
        fn(s[None], y[None])


@pytest.mark.parametrize(
    "fn",
    [
        vm.roc_curve,
        vm.eer,
        vm.det_curve,
        lambda s, y: vm.kfold_accuracy(s, y, np.arange(4) % 2),
        lambda s, y: vm.verification_report(s, y, np.arange(4) % 2),
    ],
)
def test_one_class_raises(fn) -> None:
    with pytest.raises(ValueError, match="both genuine and impostor"):
        fn(np.array([0.1, 0.5, 0.9, 0.3]), np.ones(4, bool))


def test_far_out_of_range() -> None:
    with pytest.raises(ValueError, match="far"):
        vm.tar_at_far(np.array([0.1, 0.9]), np.array([0, 1]), 0.0)
    with pytest.raises(ValueError, match="far"):
        vm.tar_at_far(np.array([0.1, 0.9]), np.array([0, 1]), 1.5)


# ---------------------------------------------------------------------------------------------
# bootstrap
# ---------------------------------------------------------------------------------------------


def test_weighted_resample_equals_materialised_resample() -> None:
    # The vectorised bootstrap weights sorted pairs by their draw counts; each resample must
    # give exactly the figures of the materialised (np.repeat) resample.
    from fetoolkit.metrics import _pairs as vp
    from fetoolkit.metrics import bootstrap as vb
    from fetoolkit.metrics import kfold as vk

    s, y, f = random_pairs(400, 5, decimals=1, sep=1.5)
    p = vp._prepare(s, y)
    f_idx, k = vp._check_folds(f, s.size)
    fs = f_idx[p.order]
    rng = np.random.default_rng(1)
    strata = [np.flatnonzero((fs == i) & c) for i in range(k) for c in (p.y, ~p.y)]
    w = vb._draw([st for st in strata if st.size], p.n, 6, rng)
    for st in strata:  # stratified: every (fold, class) keeps its size
        assert (w[:, st].sum(axis=1) == st.size).all()
    accs, thrs = vk._kfold_core(p, fs, k, w)
    cg = vp._padcumsum(w[:, p.y], np.int32)
    ci = vp._padcumsum(w[:, ~p.y], np.int32)
    rows = vp._Rows(p, cg, ci)
    eers = rows.eer()[0]
    tars = rows.tar_at_far(0.05)[0]
    aucs = rows.auc()
    for r in range(w.shape[0]):
        rs, ry, rf = (np.repeat(a, w[r]) for a in (p.s, p.y, fs))
        ref = vm.kfold_accuracy(rs, ry, rf)
        np.testing.assert_allclose(accs[r], ref.fold_accuracies, rtol=0, atol=1e-12)
        np.testing.assert_allclose(thrs[r], ref.fold_thresholds, rtol=0, atol=1e-12)
        assert eers[r] == pytest.approx(vm.eer(rs, ry).eer, abs=1e-12)
        assert tars[r] == pytest.approx(vm.tar_at_far(rs, ry, 0.05).tar, abs=1e-12)
        assert aucs[r] == pytest.approx(roc_auc_score(ry, rs), abs=1e-12)


def test_bootstrap_contains_estimate_and_narrows_with_more_data() -> None:
    widths = {}
    for n in (1000, 16000):
        s, y, f = random_pairs(n, 7, decimals=None, sep=2.0)
        e = vm.eer(s, y).eer
        acc = vm.kfold_accuracy(s, y, f).accuracy_mean
        tar = vm.tar_at_far(s, y, 0.1).tar
        lo, hi = vm.eer_ci(s, y, n_boot=200, seed=3)
        assert lo <= e <= hi
        alo, ahi = vm.accuracy_ci(s, y, f, n_boot=200, seed=3)
        assert alo <= acc <= ahi
        tlo, thi = vm.tar_at_far_ci(s, y, 0.1, n_boot=200, seed=3)
        assert tlo <= tar <= thi
        widths[n] = (hi - lo, ahi - alo, thi - tlo)
    # 16x the pairs -> about a quarter of the width; demand at least half.
    for small, big in zip(widths[1000], widths[16000]):
        assert big < 0.5 * small


def test_bootstrap_is_seeded_and_generic_callable_agrees() -> None:
    s, y, f = random_pairs(2000, 11, decimals=None, sep=2.0)
    a = vm.bootstrap_ci(s, y, "eer", n_boot=300, seed=0)
    assert a == vm.bootstrap_ci(s, y, "eer", n_boot=300, seed=0)
    assert a != vm.bootstrap_ci(s, y, "eer", n_boot=300, seed=1)
    g = vm.bootstrap_ci(s, y, lambda sc, lab: vm.eer(sc, lab).eer, n_boot=300, seed=0)
    assert g == pytest.approx(a, abs=0.01)  # different draws, same distribution
    lo, hi = vm.bootstrap_ci(s, y, "auc", n_boot=100)
    assert lo <= roc_auc_score(y, s) <= hi
    lo, hi = vm.bootstrap_ci(s, y, lambda sc, lab, fo: vm.kfold_accuracy(sc, lab, fo).accuracy_mean, n_boot=20, folds=f)
    assert lo <= hi
    # level: a 50% interval sits inside the 95% one
    lo50, hi50 = vm.eer_ci(s, y, n_boot=300, level=0.5)
    assert a[0] <= lo50 <= hi50 <= a[1]
    # unmeasurable TAR -> NaN interval
    assert all(math.isnan(v) for v in vm.tar_at_far_ci(s, y, 1e-5, n_boot=10))
    with pytest.raises(ValueError, match="needs folds"):
        vm.bootstrap_ci(s, y, "accuracy", n_boot=10)
    with pytest.raises(ValueError, match="far"):
        vm.bootstrap_ci(s, y, "tar_at_far", n_boot=10)
    with pytest.raises(ValueError, match="n_boot"):
        vm.eer_ci(s, y, n_boot=0)


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------


def test_report_agrees_with_the_functions_and_is_json_ready() -> None:
    s, y, f = random_pairs(900, 2, decimals=3, sep=2.0)
    n_imp = int((~y).sum())
    assert n_imp * 1e-3 < 1  # so "1e-3" must come back as None with a reason
    r = vm.verification_report(s, y, f, n_boot=50, seed=4)
    acc = vm.kfold_accuracy(s, y, f)
    assert r.kfold is not None and r.kfold.accuracy == acc
    assert (r.kfold.n_folds, r.kfold.n_genuine, r.kfold.n_impostor) == (10, int(y.sum()), n_imp)
    assert (r.eer, r.eer_threshold) == (vm.eer(s, y).eer, vm.eer(s, y).threshold)
    curve = vm.roc_curve(s, y)
    for a, b in ((r.curve.far, curve.far), (r.curve.tar, curve.tar), (r.curve.thresholds, curve.thresholds)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(r.det.frr, vm.det_curve(s, y).frr)
    assert r.auc == vm.auc(curve)
    assert r.tar_at_far["1e-2"] == vm.tar_at_far(s, y, 1e-2)
    assert r.decades == vm.tar_at_far_decades(s, y) and set(r.decades) == {"1e-1", "1e-2"}
    assert r.finest_far == 1.0 / n_imp
    assert r.eer_ci == vm.eer_ci(s, y, n_boot=50, seed=4)
    assert r.kfold.ci == vm.accuracy_ci(s, y, f, n_boot=50, seed=4)
    assert r.tar_at_far_ci is not None
    assert r.tar_at_far_ci["1e-1"] == vm.tar_at_far_ci(s, y, 0.1, n_boot=50, seed=4)

    d = json.loads(json.dumps(r.to_dict(), allow_nan=False))
    for key in (
        "kfold",
        "accuracy_mean",
        "accuracy_std",
        "best_threshold",
        "auc",
        "eer",
        "tar_at_far",
        "tar_at_far_threshold",
        "tar_at_far_reasons",
        "tar_at_far_decades",
        "threshold_at_far",
        "achieved_far",
        "accuracy_ci",
        "eer_ci",
        "tar_at_far_ci",
    ):
        assert key in d, key
    assert set(d["tar_at_far"]) == {"1e-1", "1e-2", "1e-3"}
    assert d["tar_at_far"]["1e-3"] is None and d["tar_at_far_threshold"]["1e-3"] is None
    assert set(d["threshold_at_far"]) == {"1e-1", "1e-2"}  # measurable decades only
    assert str(n_imp) in d["tar_at_far_reasons"]["1e-3"]
    assert set(d["tar_at_far_reasons"]) == {"1e-3"}
    assert d["tar_at_far_ci"]["1e-3"] is None
    assert d["kfold"]["n_genuine"] + d["kfold"]["n_impostor"] == s.size
    lo, hi = d["eer_ci"]
    assert lo <= d["eer"] <= hi

    plain = vm.verification_report(s, y, f).to_dict()
    assert "eer_ci" not in plain and "accuracy_ci" not in plain and plain["eer"] == d["eer"]


def test_report_with_a_separate_kfold_protocol() -> None:
    """LFW-style: k-fold accuracy on its own pairs, the ROC on all pairs; none without folds."""
    s, y, _ = random_pairs(3000, 2, decimals=3, sep=2.0)
    ks, ky, kf = random_pairs(600, 9, decimals=3, sep=1.0)
    r = vm.verification_report(s, y, kfold=(ks, ky, kf), n_boot=30, seed=1)
    assert r.kfold is not None and r.kfold.accuracy == vm.kfold_accuracy(ks, ky, kf)
    assert r.kfold.n_folds == 10 and r.kfold.n_genuine + r.kfold.n_impostor == ks.size
    assert r.kfold.ci == vm.accuracy_ci(ks, ky, kf, n_boot=30, seed=1)
    assert r.eer == vm.eer(s, y).eer and r.n_genuine + r.n_impostor == s.size
    eer_int, tar_int = vm.roc_cis(s, y, [1e-1, 1e-2, 1e-3], n_boot=30, seed=1)
    assert r.eer_ci == eer_int and r.tar_at_far_ci is not None and r.tar_at_far_ci["1e-2"] == tar_int["1e-2"]
    none = vm.verification_report(s, y)
    assert none.kfold is None and "kfold" not in none.to_dict() and "accuracy_mean" not in none.to_dict()
    with pytest.raises(ValueError, match="not both"):
        vm.verification_report(s, y, np.arange(s.size) % 2, kfold=(ks, ky, kf))


def test_thresholds_section_gathers_every_threshold_with_rates_and_intervals() -> None:
    rng = np.random.default_rng(4)
    y = rng.random(6000) < 0.1
    s = np.where(y, rng.normal(0.6, 0.15, 6000), rng.normal(0.1, 0.1, 6000))
    f = rng.integers(0, 10, 6000)
    rep = vm.verification_report(s, y, f, n_boot=100, seed=3)
    t = rep.to_dict()["thresholds"]
    assert list(t["far"]) == ["1e-1", "1e-2", "1e-3"]  # 5,400 impostors: 1e-3 is the finest decade
    for key, far in (("1e-1", 0.1), ("1e-2", 0.01), ("1e-3", 1e-3)):
        row = t["far"][key]
        thr = row["threshold"]
        assert np.mean(s[~y] >= thr) == pytest.approx(row["achieved_far"]) and row["achieved_far"] <= far
        assert np.mean(s[y] < thr) == pytest.approx(row["frr"])
        # the threshold's own interval: the same resamples as threshold_at_far_ci
        assert row["threshold_ci"] == pytest.approx(list(vm.threshold_at_far_ci(s, y, far, n_boot=100, seed=3)))
    e = t["eer"]
    assert e["threshold"] == rep.eer_threshold
    assert e["far"] == pytest.approx(np.mean(s[~y] >= e["threshold"]))
    assert e["frr"] == pytest.approx(np.mean(s[y] < e["threshold"]))
    assert abs(e["far"] - rep.eer) < 0.01 and e["threshold_ci"][0] < e["threshold"] < e["threshold_ci"][1]
    k = t["kfold"]
    assert k["threshold"] == rep.kfold.accuracy.best_threshold and len(k["fold_thresholds"]) == 10
    assert k["frr"] == pytest.approx(np.mean(s[y] < k["threshold"]))
