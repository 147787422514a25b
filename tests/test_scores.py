"""Score files, operating thresholds, dev/eval, EPC and subject-bootstrap intervals, checked against
brute force and hand-made cases (no model here; the ORL end-to-end checks are in test_deployment)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from _bob_reference import bob_minimizing_threshold

from fetoolkit.data.scores import PairScores, ScoreFileError, load_scores, write_bob
from fetoolkit.metrics import verification as vm
from fetoolkit.metrics.fixed_threshold_ci import _subject_draws, rate_intervals
from fetoolkit.metrics.operating import (
    UnmeasurableTarget,
    candidates,
    choose_threshold,
    clopper_pearson,
    epc,
    rates_at,
)


def _brute_rates(s: np.ndarray, y: np.ndarray, t: float) -> tuple[float, float]:
    far = sum(1 for v, g in zip(s, y) if not g and v >= t) / sum(1 for g in y if not g)
    frr = sum(1 for v, g in zip(s, y) if g and v < t) / sum(1 for g in y if g)
    return far, frr


def _brute_threshold(s: np.ndarray, y: np.ndarray, criterion: str, far: float = 1e-3, frr: float = 1e-2) -> float:
    """far / frr: every distinct score tried one by one (the issue's definition); eer / min_hter:
    bob.measure's reference walk."""
    cands = sorted(set(s.tolist())) + [math.inf]
    rates = [(t, *_brute_rates(s, y, t)) for t in cands]
    if criterion == "far":
        return min(t for t, fa, _ in rates if fa <= far + 1e-12)
    if criterion == "frr":
        return max(t for t, _, fr in rates if fr <= frr + 1e-12)
    cost = (lambda fa, fr: abs(fa - fr)) if criterion == "eer" else (lambda fa, fr: (fa + fr) / 2)
    return bob_minimizing_threshold(s[~y], s[y], cost)


@pytest.fixture(scope="module")
def scored() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    g = np.round(rng.normal(0.6, 0.15, 300), 3)  # rounded: ties between and within classes
    i = np.round(rng.normal(0.1, 0.12, 2000), 3)
    return np.concatenate([g, i]), np.concatenate([np.ones(300, bool), np.zeros(2000, bool)])


@pytest.mark.parametrize("criterion", ["far", "frr", "eer", "min_hter"])
def test_threshold_criteria_equal_brute_force(scored: tuple[np.ndarray, np.ndarray], criterion: str) -> None:
    s, y = scored
    for far, frr in ((1e-3, 1e-2), (0.05, 0.2)):
        got = choose_threshold(s, y, criterion, far=far, frr=frr)
        assert got == pytest.approx(_brute_threshold(s, y, criterion, far, frr), abs=1e-12), (criterion, far, frr)


def test_far_criterion_is_the_roc_threshold(scored: tuple[np.ndarray, np.ndarray]) -> None:
    s, y = scored
    for far in (1e-1, 1e-2, 1e-3):
        assert choose_threshold(s, y, "far", far=far) == vm.threshold_at_far(s, y, far)


def test_rates_at_counts() -> None:
    s = np.array([0.9, 0.8, 0.4, 0.7, 0.2, 0.1])
    y = np.array([True, True, True, False, False, False])
    r = rates_at(s, y, 0.5)  # genuine 0.4 rejected; impostor 0.7 accepted
    assert (r.n_false_match, r.n_false_non_match, r.n_genuine, r.n_impostor) == (1, 1, 3, 3)
    assert r.fmr == pytest.approx(1 / 3) and r.fnmr == pytest.approx(1 / 3) and r.hter == pytest.approx(1 / 3)
    assert rates_at(s, y, 0.7).n_false_match == 1  # accept at >= threshold
    c = candidates(s, y)
    assert c.thresholds[-1] == math.inf and c.n_fa[-1] == 0 and c.n_fr[-1] == 3 and c.n_fa[0] == 3


def test_clopper_pearson_known_values() -> None:
    # Published exact intervals: 5/20 -> [0.0866, 0.4910]; 0/10 -> [0, 0.3085]; 10/10 -> [0.6915, 1].
    lo, hi = clopper_pearson(5, 20)
    assert lo == pytest.approx(0.0866, abs=1e-4) and hi == pytest.approx(0.4910, abs=1e-4)
    assert clopper_pearson(0, 10) == pytest.approx((0.0, 0.3085), abs=1e-4)
    assert clopper_pearson(10, 10) == pytest.approx((0.6915, 1.0), abs=1e-4)
    assert all(math.isnan(v) for v in clopper_pearson(0, 0))


def test_epc_equals_brute_force(scored: tuple[np.ndarray, np.ndarray]) -> None:
    s, y = scored
    dev, ev = np.arange(len(s)) % 2 == 0, np.arange(len(s)) % 2 == 1
    c = epc(s[dev], y[dev], s[ev], y[ev], n_points=11)
    dn, dp = s[dev][~y[dev]], s[dev][y[dev]]
    for a, t, h in zip(c.alpha, c.thresholds, c.hter):
        t_ref = bob_minimizing_threshold(dn, dp, lambda fa, fr, a=a: a * fa + (1 - a) * fr)
        assert t == pytest.approx(t_ref, abs=1e-12), a
        fa, fr = _brute_rates(s[ev], y[ev], t_ref)
        assert h == pytest.approx((fa + fr) / 2)
    assert c.hter[0] < 0.4  # alpha = 0: the highest threshold keeping FRR at 0, not "accept everything"


def test_minimizing_threshold_on_hand_made_scores() -> None:
    """Impostors 0.1 0.2 0.3 0.6, genuine 0.4 0.5 0.7 0.8. Walked states (threshold: FAR, FRR):
    0.1: 1, 0; 0.15: 3/4, 0; 0.25: 1/2, 0; 0.35: 1/4, 0; 0.45: 1/4, 1/4; 0.55: 1/4, 1/2; then 0.65:
    0, 1/2 (impostors used up: the last state)."""
    s = np.array([0.1, 0.2, 0.3, 0.6, 0.4, 0.5, 0.7, 0.8])
    y = np.array([False] * 4 + [True] * 4)
    assert choose_threshold(s, y, "min_hter") == pytest.approx(0.35)  # HTER 1/8
    assert choose_threshold(s, y, "eer") == pytest.approx(0.45)  # FAR = FRR = 1/4
    assert choose_threshold(s, y, "far", far=0.25) == pytest.approx(0.4)  # lowest score with FAR <= 1/4
    assert choose_threshold(s, y, "frr", frr=0.25) == pytest.approx(0.5)  # highest score with FRR <= 1/4
    with pytest.raises(UnmeasurableTarget, match="finer than one of the 4 impostor"):
        choose_threshold(s, y, "far", far=0.1)
    # Ties: impostors 0.1 0.4 0.9, genuine 0.2 0.6 0.95: HTER 1/3 at 0.15 and at 0.5 (walked) and at
    # 0.925 (the last state, which must win strictly): the highest walked one, 0.5, is kept.
    s2 = np.array([0.1, 0.4, 0.9, 0.2, 0.6, 0.95])
    y2 = np.array([False] * 3 + [True] * 3)
    assert choose_threshold(s2, y2, "min_hter") == pytest.approx(0.5)
    # bob 6's final check: the top score is an impostor's and FAR weighs 0.9: rejecting everything
    # (just above 0.9) beats every walked state (0.9 * FAR + 0.1 * FRR: 0.9, 0.45, then 0.55; all: 0.1)
    from fetoolkit.metrics.operating import minimizing_threshold

    c = candidates(np.array([0.1, 0.9, 0.5]), np.array([False, False, True]))
    t = minimizing_threshold(c, 0.9 * c.far + 0.1 * c.frr)
    assert t > 0.9 and t == np.nextafter(0.9, 1.0)
    assert t == bob_minimizing_threshold(np.array([0.1, 0.9]), np.array([0.5]), lambda fa, fr: 0.9 * fa + 0.1 * fr)
    # The last state wins when strictly better: impostors 0.1 0.5, genuine 0.3 0.7 0.9 -> 0.6.
    s3 = np.array([0.1, 0.5, 0.3, 0.7, 0.9])
    y3 = np.array([False, False, True, True, True])
    assert choose_threshold(s3, y3, "min_hter") == pytest.approx(0.6)


class _FixedDraws:
    """A generator stand-in that hands out given subject draws (to check the weighting by hand)."""

    def __init__(self, draws: np.ndarray) -> None:
        self.draws = draws

    def integers(self, low: int, high: int, size: tuple[int, int]) -> np.ndarray:
        assert size == self.draws.shape
        return self.draws


def test_subject_bootstrap_weights_equal_explicit_duplication() -> None:
    rng = np.random.default_rng(0)
    n_subj = 6
    # every genuine pair within a subject, impostors between every two subjects, random errors
    pairs = [(a, a, True) for a in range(n_subj) for _ in range(3)]
    pairs += [(a, b, False) for a in range(n_subj) for b in range(a + 1, n_subj) for _ in range(2)]
    ca = np.array([p[0] for p in pairs])
    cb = np.array([p[1] for p in pairs])
    y = np.array([p[2] for p in pairs])
    err = rng.random(len(pairs)) < 0.3
    draws = rng.integers(0, n_subj, size=(4, n_subj))
    fmr, fnmr = _subject_draws(err, y, ca, cb, n_subj, 4, _FixedDraws(draws))  # type: ignore[arg-type]
    for r in range(4):
        picked = list(draws[r])  # the resampled population: every drawn copy of a subject
        gen = [err[k] for k in range(len(pairs)) if y[k] for c in picked if c == ca[k]]
        imp = [
            err[k]
            for k in range(len(pairs))
            if not y[k]
            for c1 in picked
            for c2 in picked
            if c1 == ca[k] and c2 == cb[k]
        ]
        assert fnmr[r] == pytest.approx(np.mean(gen)) if gen else math.isnan(fnmr[r])
        assert fmr[r] == pytest.approx(np.mean(imp)) if imp else math.isnan(fmr[r])


def test_subject_intervals_are_wider_than_pair_intervals() -> None:
    """Comparisons that share subjects are not independent: with subject effects, the subject
    bootstrap must give a wider interval than the pair bootstrap."""
    rng = np.random.default_rng(1)
    n_subj, per = 40, 45
    effect = rng.normal(0, 0.15, n_subj)  # some subjects are hard: their genuine scores sit lower
    subj = np.repeat(np.arange(n_subj), per)
    g = 0.6 + effect[subj] + rng.normal(0, 0.05, subj.size)
    a = rng.integers(0, n_subj, 20000)
    b = (a + rng.integers(1, n_subj, 20000)) % n_subj
    i = 0.1 + 0.1 * (effect[a] + effect[b]) + rng.normal(0, 0.1, 20000)
    s = np.concatenate([g, i])
    y = np.concatenate([np.ones(g.size, bool), np.zeros(i.size, bool)])
    sa = np.concatenate([subj, a]).astype(str).astype(object)
    sb = np.concatenate([subj, b]).astype(str).astype(object)
    t = choose_threshold(s, y, "eer")
    subj_ci = rate_intervals(s, y, t, subject_a=sa, subject_b=sb, n_boot=400, seed=0)
    pair_ci = rate_intervals(s, y, t, n_boot=400, seed=0)
    assert subj_ci.method == "subject" and pair_ci.method == "pair" and subj_ci.n_subjects == n_subj
    width = lambda ci: ci[1] - ci[0]  # noqa: E731
    assert width(subj_ci.fnmr) > 2 * width(pair_ci.fnmr)
    assert width(subj_ci.hter) > width(pair_ci.hter)
    r = rates_at(s, y, t)
    for ci, v in ((subj_ci.fnmr, r.fnmr), (pair_ci.fmr, r.fmr)):
        assert ci[0] <= v <= ci[1]


# ------------------------------------------------------------------------------------------------
# Score files
# ------------------------------------------------------------------------------------------------


def test_bob4_and_bob5_read_as_published(tmp_path) -> None:
    (tmp_path / "s4.txt").write_text(
        "# claimed real test score\nalice alice a_2.png 0.9\nalice bob b_1.png 0.3\n\n"
        "bob bob b_2.png 0.7\nbob alice a_1.png nan\n"
    )
    s = load_scores(tmp_path / "s4.txt")
    assert s.meta["format"] == "bob4" and s.n_missing == 0 and s.kfold is None
    assert s.roc.labels.tolist() == [True, False, True, False]
    # the nan impostor score is a false match: placed just above every finite score
    assert s.roc.scores.tolist()[:3] == [0.9, 0.3, 0.7] and s.roc.scores[3] == np.nextafter(0.9, 1)
    assert s.meta["nonfinite_scores"]["n_impostor"] == 1
    assert s.roc.subject_a.tolist() == ["alice", "alice", "bob", "bob"] and s.roc.item_b.tolist()[1] == "b_1.png"
    (tmp_path / "s5.txt").write_text("alice m_a alice a_2.png 0.9\nalice m_a bob b_1.png 0.3\n")
    s5 = load_scores(tmp_path / "s5.txt")
    assert s5.meta["format"] == "bob5" and s5.roc.item_a.tolist() == ["m_a", "m_a"]
    assert s5.roc.labels.tolist() == [True, False]


def test_bob_writer_round_trip(tmp_path) -> None:
    p = PairScores(
        np.array([0.5, -0.25, 0.125]),
        np.array([True, False, False]),
        np.array(["a", "a", "b"], object),
        np.array(["a", "b", "c"], object),
        np.array(["a/1.jpg", "a/1.jpg", "b/1.jpg"], object),
        np.array(["a/2.jpg", "b/3.jpg", "c/1.jpg"], object),
    )
    for cols in (4, 5):
        back = load_scores(write_bob(tmp_path / f"x{cols}.txt", p, columns=cols)).roc
        assert back.scores.tolist() == p.scores.tolist() and back.labels.tolist() == p.labels.tolist()
        assert back.item_b.tolist() == p.item_b.tolist()
    with pytest.raises(ValueError, match="label"):
        write_bob(tmp_path / "bad.txt", PairScores(p.scores, ~p.labels, p.subject_a, p.subject_b))
    with pytest.raises(ValueError, match="no subjects"):
        write_bob(tmp_path / "bad.txt", PairScores(p.scores, p.labels))


def test_csv_and_parquet_with_folds_and_groups(tmp_path) -> None:
    df = pd.DataFrame(
        {
            "label": [1, 0, 1, 0],
            "score": [0.8, 0.2, 0.7, 0.4],
            "fold": [0, 0, 1, 1],
            "subject1": ["a", "a", "b", "b"],
            "subject2": ["a", "b", "b", "c"],
            "group1": ["x", "x", "y", "y"],
            "group2": ["x", "y", "y", "y"],
        }
    )
    df.to_csv(tmp_path / "s.csv", index=False)
    df.to_parquet(tmp_path / "s.parquet")
    for name in ("s.csv", "s.parquet"):
        s = load_scores(tmp_path / name)
        assert s.kfold is not None and s.kfold_folds.tolist() == [0, 0, 1, 1] and s.meta["kfold_is_roc"]
        assert s.roc.groups["group"][1].tolist() == ["x", "y", "y", "y"]
        assert s.roc.labels.tolist() == [True, False, True, False]


@pytest.mark.parametrize(
    ("text", "name", "match"),
    [
        ("a a x 0.5 extra col\n", "s.txt", "6 columns"),
        ("a a x 0.5\na b y high\n", "s.txt", "not a number"),
        ("label,score\n1,0.5\nmaybe,0.2\n", "s.csv", "not 1/0"),
        ("lab,score\n1,0.5\n", "s.csv", "needs columns label and score"),
    ],
)
def test_bad_score_files_are_refused_with_the_reason(tmp_path, text: str, name: str, match: str) -> None:
    (tmp_path / name).write_text(text)
    with pytest.raises(ScoreFileError, match=match):
        load_scores(tmp_path / name)


def test_ids_are_names_not_missing_values(tmp_path) -> None:
    """``NA``, ``None``, ``nan`` and ``007`` are subject names (NA = North America, say), never NaN."""
    (tmp_path / "s.txt").write_text("NA NA x1 0.9\nNA None x2 0.2\nnan nan x3 0.8\n")
    s = load_scores(tmp_path / "s.txt")
    assert s.roc.labels.tolist() == [True, False, True] and s.roc.subject_a.tolist() == ["NA", "NA", "nan"]
    csv = "label,score,subject1,subject2,group1,group2\n1,0.9,007,007,NA,NA\n0,0.1,007,7,NA,EU\n"
    (tmp_path / "s.csv").write_text(csv)
    c = load_scores(tmp_path / "s.csv")
    assert c.roc.subject_b.tolist() == ["007", "7"] and c.roc.groups["group"][0].tolist() == ["NA", "NA"]


def test_bob_lines_must_be_whole_and_errors_name_the_file_line(tmp_path) -> None:
    (tmp_path / "s.txt").write_text("# header\n\na a x 0.9\na b 0.2\n")
    with pytest.raises(ScoreFileError, match=r"s.txt:4: 3 columns"):
        load_scores(tmp_path / "s.txt", fmt="bob4")
    (tmp_path / "w.txt").write_text("a a x 0.9\r\na\tb\ty\t0.1\r\n")  # CRLF and tabs are whitespace too
    assert load_scores(tmp_path / "w.txt").roc.labels.tolist() == [True, False]


def test_folds_and_protocol_columns(tmp_path) -> None:
    (tmp_path / "one.csv").write_text("label,score,fold\n1,0.9,0\n0,0.1,0\n")
    assert load_scores(tmp_path / "one.csv").kfold is None  # one fold: no k-fold accuracy, not a crash
    (tmp_path / "bad.csv").write_text("label,score,fold\n1,0.9,0\n0,0.1,\n")
    with pytest.raises(ScoreFileError, match="row 2: fold '' is not an integer"):
        load_scores(tmp_path / "bad.csv")
    (tmp_path / "p.csv").write_text("label,score,protocol\n1,0.9,view2\n0,0.1,view2\n")
    assert len(load_scores(tmp_path / "p.csv").roc) == 2  # a user's own protocol column is just a column
    (tmp_path / "e.csv").write_text("label,score,subject1,subject2\n1,0.9,a,a\n0,0.1,a,\n")
    assert not load_scores(tmp_path / "e.csv").roc.has_subjects  # an empty subject: subjects unknown


def test_missing_file_and_bare_folder(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="dataset.path"):
        load_scores(tmp_path / "nope.txt")
    with pytest.raises(FileNotFoundError, match="pairs.parquet"):
        load_scores(tmp_path)


def test_operating_point_edge_cases() -> None:
    from fetoolkit.deployment import ThresholdCfg, deployment
    from fetoolkit.figures import StatsCfg

    subj = np.array([f"s{k}" for k in range(40)], object)
    # perfectly separated: no errors at the EER threshold -> bootstrap intervals are withheld, CP kept
    s = np.concatenate([np.full(40, 0.9), np.full(40, 0.1)])
    y = np.concatenate([np.ones(40, bool), np.zeros(40, bool)])
    p = PairScores(s, y, np.concatenate([subj, subj]), np.concatenate([subj, np.roll(subj, 1)]))
    op = deployment(p, threshold=ThresholdCfg(criterion="eer"), stats=StatsCfg(n_boot=50)).summary["operating_point"]
    r = op["rates"]
    assert r["fmr"] == 0 and r["fmr_ci"] is None and "no errors" in r["fmr_ci_reason"]
    assert r["fmr_ci_clopper_pearson"][1] == pytest.approx(1 - 0.025 ** (1 / 40))
    # the top scores are impostors: only +inf meets the target; the groups then report no differential
    s2 = s.copy()
    s2[-2:] = 5.0  # two impostors tie at the top: FAR <= 1/40 allows only one
    g = {"site": (np.array(["A"] * 80, object), np.array(["A"] * 80, object))}
    d = deployment(PairScores(s2, y, groups=g), threshold=ThresholdCfg(far=1 / 40), stats=StatsCfg(n_boot=0))
    assert d.summary["operating_point"]["threshold"] is None  # +inf in strict JSON
    assert "only rejecting every comparison" in d.summary["operating_point"]["note"]
    diff = d.summary["groups"]["differentials"]["site"]
    assert diff["fdr"] is None and "not finite" in diff["fmr_max_min_reason"]


def test_rates_and_dev_eval_agree_with_scikit_learn(scored: tuple[np.ndarray, np.ndarray]) -> None:
    """FMR / FNMR at a threshold = scikit-learn's confusion matrix of the decisions ``score >= t``;
    the far criterion's threshold = the lowest ROC threshold of scikit-learn's curve within the target."""
    from sklearn.metrics import confusion_matrix, roc_curve

    s, y = scored
    for t in (0.1, 0.3, 0.35, 0.5):
        tn, fp, fn, tp = confusion_matrix(y, s >= t, labels=[False, True]).ravel()
        r = rates_at(s, y, t)
        assert (r.n_false_match, r.n_false_non_match) == (fp, fn)
        assert r.fmr == pytest.approx(fp / (fp + tn)) and r.fnmr == pytest.approx(fn / (fn + tp))
    fpr, _, thr = roc_curve(y, s, drop_intermediate=False)
    for far in (1e-2, 5e-2, 1e-1):
        assert choose_threshold(s, y, "far", far=far) == pytest.approx(thr[fpr <= far + 1e-12].min())
