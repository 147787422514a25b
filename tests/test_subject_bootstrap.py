"""Intervals that respect subjects: the subject bootstrap against materialised resamples, the rule
of three on zero-error figures, and the paired difference interval of two systems."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fetoolkit.figures import StatsCfg, verification_figures
from fetoolkit.metrics import verification as vm
from fetoolkit.metrics._pairs import _prepare
from fetoolkit.metrics.bootstrap import _boot_accuracy, _boot_roc
from fetoolkit.metrics.subjects import subject_codes

# ---------------------------------------------------------------------------------------------
# A small identity set: every pair of images, subjects with different difficulty
# ---------------------------------------------------------------------------------------------


def identity_pairs(n_subj: int, per: int, seed: int, decimals: int | None = 2):
    """All pairs of ``n_subj * per`` images; subject effects make some subjects hard. Returns
    scores, labels, subject of each side (names ``"p<k>"``) and subject-disjoint folds (3)."""
    rng = np.random.default_rng(seed)
    img = np.repeat(np.arange(n_subj), per)
    a, b = np.triu_indices(img.size, 1)
    sa, sb = img[a], img[b]
    y = sa == sb
    hard = rng.normal(0, 0.6, n_subj)
    s = np.where(y, 1.5 + hard[sa], 0.3 * (hard[sa] + hard[sb])) + rng.normal(0, 0.7, y.size)
    if decimals is not None:
        s = np.round(s, decimals)
    names = np.array([f"p{k}" for k in range(n_subj)], dtype=object)
    fold_of = np.arange(n_subj) % 3
    keep = fold_of[sa] == fold_of[sb]  # k-fold pairs: within a fold's subjects
    return s, y, names[sa], names[sb], fold_of[sa], keep


def materialise(s, y, ca, cb, counts, f=None):
    """The resampled comparison list written out: every drawn copy of a subject against every
    drawn copy of another (a genuine pair of s repeated c_s times, an impostor pair c_a * c_b)."""
    rep = np.array(
        [counts[ca[k]] if y[k] else counts[ca[k]] * counts[cb[k]] for k in range(s.size)],
        dtype=np.int64,
    )
    out = [np.repeat(s, rep), np.repeat(y, rep)]
    if f is not None:
        out.append(np.repeat(f, rep))
    return out


def test_subject_weights_equal_the_materialised_resamples() -> None:
    """Same generator, subject counts drawn by hand, the resampled pair list written out and fed to
    the plain (unweighted) public functions: every resample's EER and TAR@FAR must be equal."""
    s, y, na, nb, _, _ = identity_pairs(7, 4, seed=3)
    n_boot, seed, fars = 40, 11, (0.1, 0.02)
    p = _prepare(s, y)
    codes = subject_codes(na, nb)
    assert codes.n == 7 and codes.a.max() == 6
    st = _boot_roc(p, n_boot, seed, None, fars, subj=codes.take(p.order))
    rng = np.random.default_rng(seed)
    n_checked = 0
    for r in range(n_boot):
        drawn = rng.integers(0, 7, size=7)  # the 7 subjects drawn with replacement
        counts = np.bincount(drawn, minlength=7)
        ms, my = materialise(s, y, codes.a, codes.b, counts)
        if my.all() or not my.any():
            assert math.isnan(st["eer"][r])
            continue
        n_checked += 1
        assert st["eer"][r] == pytest.approx(vm.eer(ms, my).eer, abs=1e-12), r
        for far in fars:
            assert st[vm.far_key(far)][r] == pytest.approx(vm.tar_at_far(ms, my, far).tar, abs=1e-12), (r, far)
    assert n_checked >= n_boot - 2
    # The public interval is the percentile interval of those resamples.
    rep = vm.verification_report(s, y, n_boot=n_boot, seed=seed, subjects=(na, nb), method="subject")
    assert rep.eer_ci == pytest.approx(tuple(np.quantile(st["eer"][np.isfinite(st["eer"])], [0.025, 0.975])))
    assert rep.ci_method == "subject" and rep.n_subjects == 7


def test_subject_kfold_accuracy_equals_the_materialised_resamples() -> None:
    """k-fold accuracy with subject weights: subjects drawn within each (subject-disjoint) fold, the
    resample written out and scored by the plain kfold_accuracy."""
    s, y, na, nb, f, keep = identity_pairs(9, 4, seed=5)
    s, y, na, nb, f = s[keep], y[keep], na[keep], nb[keep], f[keep]
    n_boot, seed = 25, 2
    p = _prepare(s, y)
    codes = subject_codes(na, nb)
    accs = _boot_accuracy(p, f[p.order], 3, n_boot, seed, subj=codes.take(p.order))
    rng = np.random.default_rng(seed)
    fold_subjects = [np.unique(np.concatenate([codes.a[f == k], codes.b[f == k]])) for k in range(3)]
    draws = [rng.integers(0, g.size, size=(n_boot, g.size)) for g in fold_subjects]
    for r in range(n_boot):
        counts = np.zeros(codes.n, np.int64)
        for g, d in zip(fold_subjects, draws):
            counts[g] = np.bincount(d[r], minlength=g.size)
        ms, my, mf = materialise(s, y, codes.a, codes.b, counts, f)
        assert accs[r] == pytest.approx(vm.kfold_accuracy(ms, my, mf).accuracy_mean, abs=1e-12), r


def test_subject_codes_natural_order_and_ids() -> None:
    ints = subject_codes(np.array([0, 9, 1]), np.array([10, 9, 2]))
    names = subject_codes(np.array(["s1", "s10", "s2"], object), np.array(["s11", "s10", "s3"], object))
    assert ints.n == names.n == 5
    np.testing.assert_array_equal(ints.a, [0, 3, 1])
    np.testing.assert_array_equal(names.a, [0, 3, 1])  # s2 before s10, as the ints 1 before 9
    with pytest.raises(ValueError, match="missing"):
        subject_codes(np.array(["a", None], object), np.array(["b", "c"], object))


def test_subject_method_needs_subjects_and_pair_method_is_unchanged() -> None:
    s, y, na, nb, _, _ = identity_pairs(6, 3, seed=1)
    with pytest.raises(ValueError, match="needs subjects"):
        vm.verification_report(s, y, n_boot=10, method="subject")
    with pytest.raises(ValueError, match="method must be one of"):
        vm.verification_report(s, y, n_boot=10, method="subjects")
    # pair: subjects given or not, the numbers of the pair bootstrap functions
    r = vm.verification_report(s, y, n_boot=60, seed=7, subjects=(na, nb), method="pair")
    assert r.eer_ci == vm.eer_ci(s, y, n_boot=60, seed=7) and r.ci_method == "pair"
    # figures: subject requested, subjects unknown -> pair, said so
    fig = verification_figures(s, y, None, None, None, StatsCfg(n_boot=20))
    assert fig.stats["requested"] == "subject" and fig.stats["method"] == "pair" and "unknown" in fig.stats["reason"]
    fig = verification_figures(s, y, None, None, None, StatsCfg(n_boot=20), subjects=(na, nb))
    assert fig.stats["method"] == "subject" and "Bolle" in fig.stats["method_note"] and "reason" not in fig.stats
    with pytest.raises(ValueError, match="stats.method"):
        StatsCfg(method="bogus")


def test_int64_weights_do_not_overflow() -> None:
    """Pair weights are int64: with counts blown up to 40,000 the impostor products (~1.6e9 each) sum
    past 2**31, and the sums must still equal the weights summed in Python integers."""
    from fetoolkit.metrics.subjects import draw_counts, pair_weights

    codes = subject_codes(np.array([0, 0, 1, 2] * 3), np.array([0, 1, 2, 0] * 3))
    rng = np.random.default_rng(0)
    c = draw_counts(rng, 4, codes.n) * 40_000  # counts far beyond any resample: products ~1.6e9
    w = pair_weights(c, codes, codes.a == codes.b)
    assert w.dtype == np.int64
    for r in range(4):
        py = sum(
            int(c[r, a]) if a == b else int(c[r, a]) * int(c[r, b]) for a, b in zip(codes.a.tolist(), codes.b.tolist())
        )
        assert int(w[r].sum()) == py


# ---------------------------------------------------------------------------------------------
# Rule of three
# ---------------------------------------------------------------------------------------------


def test_rule_of_three_on_a_perfectly_separated_set() -> None:
    s, y, na, nb, f, keep = identity_pairs(6, 4, seed=2, decimals=None)
    s = np.where(y, 10.0 + s, s - 10.0)  # perfectly separated
    n_gen, n_imp = int(y.sum()), int((~y).sum())
    r = vm.verification_report(s, y, n_boot=50, seed=0, method="pair", fars=(0.1,))
    assert r.eer == 0.0 and r.tar_at_far["1e-1"].tar == 1.0
    assert r.eer_ci == pytest.approx((0.0, 3.0 / min(n_gen, n_imp)), rel=0.01)  # 3/n at 95%
    assert r.tar_at_far_ci is not None and r.tar_at_far_ci["1e-1"] == pytest.approx((1 - 3.0 / n_gen, 1.0), rel=1e-3)
    d = r.to_dict()
    assert d["interval_rule"]["eer_ci"]["rule"] == "rule_of_3" and d["interval_rule"]["eer_ci"]["n"] == n_gen
    assert d["interval_rule"]["tar_at_far_ci"]["1e-1"]["unit"] == "comparisons"
    # subject method: the subjects are the independent units, n = 6
    rs = vm.verification_report(
        s[keep], y[keep], f[keep], n_boot=50, seed=0, subjects=(na[keep], nb[keep]), method="subject", fars=(0.1,)
    )
    assert rs.eer_ci == pytest.approx((0.0, 3.0 / 6), rel=0.01)
    assert rs.kfold is not None and rs.kfold.accuracy.accuracy_mean == 1.0
    assert rs.kfold.ci == pytest.approx((1 - 3.0 / 6, 1.0), rel=0.01)
    assert rs.interval_rule["accuracy_ci"]["unit"] == "subjects"
    # an estimate with errors keeps its bootstrap interval
    s2, y2, *_ = identity_pairs(6, 4, seed=2)
    assert vm.verification_report(s2, y2, n_boot=20).interval_rule == {}


# ---------------------------------------------------------------------------------------------
# Paired difference
# ---------------------------------------------------------------------------------------------


def test_paired_difference_identical_scores_give_zero() -> None:
    s, y, na, nb, f, keep = identity_pairs(8, 4, seed=4)
    for statistic, far in (("eer", None), ("tar_at_far", 0.05)):
        d = vm.paired_difference_ci(s, s.copy(), y, na, nb, statistic, far, n_boot=100, seed=1)
        assert d.ci == (0.0, 0.0) and d.difference == 0.0 and d.method == "subject" and d.n_subjects == 8
    d = vm.paired_difference_ci(
        s[keep], s[keep], y[keep], na[keep], nb[keep], "accuracy", folds=f[keep], n_boot=50, seed=1
    )
    assert d.ci == (0.0, 0.0)


def test_paired_difference_of_a_clearly_worse_model_excludes_zero() -> None:
    s, y, na, nb, f, keep = identity_pairs(12, 5, seed=6)
    worse = s + np.random.default_rng(9).normal(0, 1.5, s.size)  # much noisier scores of the same pairs
    e = vm.paired_difference_ci(s, worse, y, na, nb, "eer", n_boot=200, seed=0)
    assert e.difference == pytest.approx(vm.eer(worse, y).eer - vm.eer(s, y).eer)
    assert e.ci[0] > 0.0 and e.ci[0] <= e.difference <= e.ci[1]
    t = vm.paired_difference_ci(s, worse, y, na, nb, "tar_at_far", 0.05, n_boot=200, seed=0)
    assert t.ci[1] < 0.0
    a = vm.paired_difference_ci(
        s[keep], worse[keep], y[keep], na[keep], nb[keep], "accuracy", folds=f[keep], n_boot=100, seed=0
    )
    assert a.ci[1] < 0.0
    # the pair bootstrap of the same difference works too, and the errors are named
    assert vm.paired_difference_ci(s, worse, y, None, None, "eer", n_boot=100).method == "pair"
    with pytest.raises(ValueError, match="needs far"):
        vm.paired_difference_ci(s, worse, y, na, nb, "tar_at_far")
    with pytest.raises(ValueError, match="differ in length"):
        vm.paired_difference_ci(s, worse[:-1], y, na, nb, "eer")
