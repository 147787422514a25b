"""Open-set identification: hand-worked cases, a brute-force reference (full score matrix), plots.

Scores are made exact on purpose: the hand cases put the gallery on unit axes, so a probe's
scores are its own coordinates (binary fractions); the random cases round the features to a
2^-10 grid, so every dot product is a multiple of 2^-20 below 1 in magnitude and is exact in
float32 whatever order faiss or numpy sum it in. The reference and faiss then agree bit for
bit, ties included.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from fetoolkit.metrics import identification as im

# ---------------------------------------------------------------------------------------------
# helpers and brute-force references
# ---------------------------------------------------------------------------------------------


def axis_case(rows: list[list[float]], n_gallery: int) -> tuple[np.ndarray, np.ndarray]:
    """Gallery = the first ``n_gallery`` unit axes of ``n_gallery + 1`` dimensions; each probe's
    scores against the gallery are exactly its row. The extra dimension makes the probe unit-norm
    without changing a score."""
    g = np.eye(n_gallery, n_gallery + 1, dtype=np.float32)
    s = np.asarray(rows, np.float64)
    rest = np.sqrt(np.clip(1.0 - (s**2).sum(axis=1), 0.0, None))
    p = np.concatenate([s, rest[:, None]], axis=1).astype(np.float32)
    return g, p


def grid(x: np.ndarray) -> np.ndarray:
    """L2-normalise rows, then round to multiples of 2^-10 (exact float32 dot products)."""
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    return (np.round(x * 1024) / 1024).astype(np.float32)


def random_case(seed: int, n_gallery: int = 300, n_probes: int = 500, dim: int = 64):
    """Subjects 1000..1000+G-1 in the gallery; about 1/3 of the probes from other subjects; mated
    probes are noisy copies of their mate (cosines about 0.3 to 0.7, so every rank occurs)."""
    rng = np.random.default_rng(seed)
    g = grid(rng.standard_normal((n_gallery, dim)))
    gs = rng.permutation(n_gallery) + 1000
    mated = rng.random(n_probes) < 2 / 3
    which = rng.integers(0, n_gallery, n_probes)
    ps = np.where(mated, gs[which], rng.integers(5000, 5300, n_probes))
    noise = rng.uniform(0.15, 0.4, (n_probes, 1)) * rng.standard_normal((n_probes, dim))
    p = grid(np.where(mated[:, None], g[which] + noise, rng.standard_normal((n_probes, dim))))
    return g, gs, p, ps


def integer_case(seed: int, n_gallery: int = 120, n_probes: int = 300, dim: int = 4):
    """Small integer features: integer scores and a great many exact ties."""
    rng = np.random.default_rng(seed)
    g = rng.integers(-2, 3, (n_gallery, dim)).astype(np.float32)
    gs = np.arange(n_gallery)
    ps = rng.integers(0, n_gallery * 3 // 2, n_probes)
    p = rng.integers(-2, 3, (n_probes, dim)).astype(np.float32)
    return g, gs, p, ps


def ref_ranks(scores: np.ndarray, gs: np.ndarray, ps: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mated mask, pessimistic rank, mate score) per probe from the full score matrix.

    Rank: position of the mate after a sort by descending score that puts the mate *last* among
    equal scores (lexsort on (is_mate, -score)), plus one."""
    col = {s: j for j, s in enumerate(gs.tolist())}
    mated = np.array([s in col for s in ps.tolist()])
    rank = np.zeros(ps.size, np.int64)
    smate = np.full(ps.size, np.nan)
    for q in np.flatnonzero(mated):
        j = col[ps[q]]
        is_mate = np.zeros(gs.size, bool)
        is_mate[j] = True
        order = np.lexsort((is_mate, -scores[q]))
        rank[q] = int(np.flatnonzero(order == j)[0]) + 1
        smate[q] = scores[q, j]
    return mated, rank, smate


def ref_report(g, gs, p, ps, ranks, n_cmc, decades):
    """Brute-force figures: CMC, rank rates, TPIR at FPIR 10^-e (threshold: the non-mated top-1
    scores sorted descending at index n_nonmated // 10^e - 1; detected: rank 1 and score >=)."""
    s = p.astype(np.float64) @ g.astype(np.float64).T
    mated, rank, smate = ref_ranks(s, gs, ps)
    r = rank[mated]
    cmc = np.array([np.mean(r <= k) for k in range(1, n_cmc + 1)])
    rates = {k: float(np.mean(r <= k)) for k in ranks}
    top_nm = np.sort(s[~mated].max(axis=1))[::-1]
    n_nm = top_nm.size
    tpir, thr = {}, {}
    for e in decades:
        quota = n_nm // 10**e
        t = top_nm[quota - 1]
        thr[e] = t
        tpir[e] = float(np.mean((r == 1) & (smate[mated] >= t)))
    # DIR: every distinct non-mated top score, descending
    u = np.unique(top_nm)[::-1]
    dir_f = np.array([np.mean(top_nm >= t) for t in u])
    dir_t = np.array([np.mean((r == 1) & (smate[mated] >= t)) for t in u])
    return cmc, rates, tpir, thr, dir_f, dir_t


def ref_rank1_with_distractors(g, gs, p, ps, extra):
    """Rank-1 rate of the mated probes when ``extra`` rows (new subjects) join the gallery."""
    full = np.concatenate([g, extra]) if extra.size else g
    subjects = np.concatenate([gs, -1 - np.arange(extra.shape[0])])
    s = p.astype(np.float64) @ full.astype(np.float64).T
    mated, rank, _ = ref_ranks(s, subjects, ps)
    return float(np.mean(rank[mated] == 1))


# ---------------------------------------------------------------------------------------------
# hand-worked cases
# ---------------------------------------------------------------------------------------------

# Gallery subjects 10, 20, 30, 40 (columns). Mated probes (subject: scores -> pessimistic rank):
#   10: [.75, .25, 0, .125]   mate .75 is the top                  -> rank 1, mate score .75
#   20: [.5, .25, .375, 0]    .5 and .375 above the mate's .25     -> rank 3
#   30: [.5, .125, .5, 0]     mate .5 ties subject 10's .5          -> rank 2 (mate after the tie)
#   40: [0, 0, .125, .625]    top                                   -> rank 1, mate score .625
#   10: [.25, 0, 0, .25]      mate .25 ties subject 40's .25        -> rank 2
# CMC over the 5 mated searches: rank<=1: 2/5, <=2: 4/5, <=3: 5/5, <=4: 5/5.
# Ten non-mated searches, one non-zero score each; their top-1 scores, descending:
#   .9375 .6875 .625 .5625 .5 .4375 .375 .3125 .25 .125
# FPIR .1: index 10*.1 - 1 = 0 -> threshold .9375; no rank-1 mate scores >= .9375 -> TPIR 0.
# FPIR .3: index 2 -> threshold .625; rank-1 mates .75 and .625 (equal: accepted by >=) -> 2/5.
#   Non-mated at or above .625: 3 of 10 -> achieved FPIR .3.
# FPIR .5: index 4 -> threshold .5; still 2/5 (the third .5 mate is at rank 2, not detected).
# FPIR .01: 10 * .01 < 1 -> not measurable.
MATED_ROWS = [
    [0.75, 0.25, 0.0, 0.125],
    [0.5, 0.25, 0.375, 0.0],
    [0.5, 0.125, 0.5, 0.0],
    [0.0, 0.0, 0.125, 0.625],
    [0.25, 0.0, 0.0, 0.25],
]
MATED_SUBJECTS = [10, 20, 30, 40, 10]
NONMATED_TOPS = [0.9375, 0.6875, 0.625, 0.5625, 0.5, 0.4375, 0.375, 0.3125, 0.25, 0.125]


def hand_case():
    rows = list(MATED_ROWS)
    for k, t in enumerate(NONMATED_TOPS):
        row = [0.0] * 4
        row[k % 4] = t
        rows.append(row)
    g, p = axis_case(rows, 4)
    gs = np.array([10, 20, 30, 40])
    ps = np.array(MATED_SUBJECTS + [900 + k for k in range(len(NONMATED_TOPS))])
    return g, gs, p, ps


def test_hand_case_cmc_ranks_and_tpir() -> None:
    g, gs, p, ps = hand_case()
    r = im.identification_report(g, gs, p, ps, fpirs=(0.1, 0.3, 0.5, 0.01))
    assert (r.n_gallery, r.n_mated, r.n_nonmated) == (4, 5, 10)
    np.testing.assert_array_equal(r.cmc, [0.4, 0.8, 1.0, 1.0])
    assert r.ranks == {1: 0.4, 5: 1.0, 10: 1.0}  # ranks beyond G = 4: the rate at G
    t = r.tpir_at_fpir
    assert list(t) == ["1e-1", "3e-1", "5e-1", "1e-2"]
    assert (t["1e-1"].tpir, t["1e-1"].threshold, t["1e-1"].achieved_fpir) == (0.0, 0.9375, 0.1)
    assert (t["3e-1"].tpir, t["3e-1"].threshold, t["3e-1"].achieved_fpir) == (0.4, 0.625, 0.3)
    assert (t["5e-1"].tpir, t["5e-1"].threshold) == (0.4, 0.5)
    assert math.isnan(t["1e-2"].tpir) and math.isnan(t["1e-2"].threshold)
    assert "finer than 1/n_nonmated" in t["1e-2"].reason
    d = r.to_dict()
    assert d["rank1"] == 0.4 and d["rank5"] == 1.0 and d["rank10"] == 1.0
    assert d["tpir_at_fpir"] == {"1e-1": 0.0, "3e-1": 0.4, "5e-1": 0.4, "1e-2": None}
    assert d["threshold_at_fpir"]["3e-1"] == 0.625
    assert set(d["reasons"]) == {"1e-2"}
    json.dumps(d, allow_nan=False)


def test_hand_case_default_decades_and_dir_curve() -> None:
    g, gs, p, ps = hand_case()
    r = im.identification_report(g, gs, p, ps)
    assert list(r.tpir_at_fpir) == ["1e-1"]  # 10 non-mated: 1e-2 would need 100
    assert r.to_dict()["reasons"] == {}
    # DIR at +inf then each non-mated top score descending: FPIR k/10; TPIR counts the rank-1
    # mates (.75, .625) at or above the threshold, over 5 mated searches.
    np.testing.assert_array_equal(r.dir_thresholds, [np.inf] + NONMATED_TOPS)
    np.testing.assert_allclose(r.dir_fpir, np.arange(11) / 10, rtol=0, atol=1e-15)
    np.testing.assert_array_equal(r.dir_tpir, [0, 0, 0.2, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4])


def test_ties_are_pessimistic_and_survive_a_short_list() -> None:
    # Subject 1's probe scores 0.5 against all 5 gallery rows: the mate ranks after the 4 ties,
    # rank 5. With max_rank 1 the search keeps 2 rows, both tied: the rank must not read as 1.
    # Subject 2's probe: [0, .5, .5, .25, 0] -> mate (column 1) ties column 2 -> rank 2.
    g, p = axis_case([[0.5] * 5, [0.0, 0.5, 0.5, 0.25, 0.0]], 5)
    gs = np.array([1, 2, 3, 4, 5])
    ps = np.array([1, 2])
    full = im.identification_report(g, gs, p, ps, ranks=(1,), max_rank=5)
    np.testing.assert_array_equal(full.cmc, [0.0, 0.5, 0.5, 0.5, 1.0])
    for m in (1, 2, 3, 4):
        short = im.identification_report(g, gs, p, ps, ranks=(1,), max_rank=m)
        np.testing.assert_array_equal(short.cmc, full.cmc[:m])
    assert full.ranks[1] == 0.0
    assert full.tpir_at_fpir == {} and "no non-mated" in full.reasons["tpir_at_fpir"]


def test_threshold_ties_among_non_mated_scores() -> None:
    # Non-mated tops .5 .5 .25 .25 .25 .125 x5 (10 searches). FPIR .1 -> threshold .5 (index 0)
    # accepts both .5 searches: achieved FPIR .2. The mate scoring exactly .5 at rank 1 counts.
    tops = [0.5, 0.5, 0.25, 0.25, 0.25] + [0.125] * 5
    rows = [[0.5, 0.0, 0.0]] + [[t, 0.0, 0.0] for t in tops]
    g, p = axis_case(rows, 3)
    gs = np.array([7, 8, 9])
    ps = np.array([7] + list(range(100, 110)))
    r = im.identification_report(g, gs, p, ps, fpirs=(0.1, 0.3))
    t = r.tpir_at_fpir
    assert (t["1e-1"].threshold, t["1e-1"].achieved_fpir, t["1e-1"].tpir) == (0.5, 0.2, 1.0)
    assert (t["3e-1"].threshold, t["3e-1"].achieved_fpir) == (0.25, 0.5)
    np.testing.assert_array_equal(r.dir_fpir, [0.0, 0.2, 0.5, 1.0])


def test_no_mated_and_too_few_non_mated() -> None:
    g, p = axis_case([[0.5, 0.25], [0.25, 0.125]], 2)
    r = im.identification_report(g, np.array([1, 2]), p, np.array([3, 4]))
    assert r.n_mated == 0 and all(math.isnan(v) for v in r.ranks.values())
    d = r.to_dict()
    assert d["rank1"] is None and d["tpir_at_fpir"] == {}
    assert "no mated" in d["reasons"]["ranks"]
    assert "no FPIR decade" in d["reasons"]["tpir_at_fpir"]
    json.dumps(d, allow_nan=False)
    r2 = im.identification_report(g, np.array([1, 2]), p, np.array([3, 4]), fpirs=(0.5,))
    assert math.isnan(r2.tpir_at_fpir["5e-1"].tpir) and r2.tpir_at_fpir["5e-1"].threshold == 0.5


def test_string_subjects_and_repeated_probe_subjects() -> None:
    g, gs, p, ps = hand_case()
    names = {10: "ann", 20: "bob", 30: "cy", 40: "di"}
    gs_s = np.array([names[s] for s in gs.tolist()])
    ps_s = np.array([names.get(s, f"x{s}") for s in ps.tolist()])
    a = im.identification_report(g, gs, p, ps).to_dict()
    b = im.identification_report(g, gs_s, p, ps_s).to_dict()
    assert a == b


# ---------------------------------------------------------------------------------------------
# against the brute-force reference
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["random", "integer"])
def test_report_matches_brute_force(case: str) -> None:
    g, gs, p, ps = random_case(1) if case == "random" else integer_case(2)
    n_nm = int((~np.isin(ps, gs)).sum())
    decades = [e for e in range(1, 7) if n_nm // 10**e >= 1]
    assert decades  # the case measures at least 1e-1
    r = im.identification_report(g, gs, p, ps, ranks=(1, 5, 10), max_rank=30)
    cmc, rates, tpir, thr, dir_f, dir_t = ref_report(g, gs, p, ps, (1, 5, 10), 30, decades)
    assert r.n_mated + r.n_nonmated == p.shape[0] and r.n_nonmated == n_nm
    np.testing.assert_array_equal(r.cmc, cmc)
    assert r.ranks == rates
    assert list(r.tpir_at_fpir) == [f"1e-{e}" for e in decades]
    for e in decades:
        got = r.tpir_at_fpir[f"1e-{e}"]
        assert got.tpir == tpir[e] and got.threshold == thr[e], e
    np.testing.assert_array_equal(r.dir_fpir[1:], dir_f)
    np.testing.assert_array_equal(r.dir_tpir[1:], dir_t)
    if case == "random":
        assert 0.3 < r.ranks[1] < 0.95  # a case where the figures are not trivially 0 or 1


def test_search_matches_numpy_top_k() -> None:
    g, _, p, _ = random_case(3, n_gallery=200, n_probes=150)
    s = p.astype(np.float64) @ g.astype(np.float64).T
    k = 7
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    ref_s = np.take_along_axis(s, order, axis=1)
    scores, idx = im.search(g, p, k, batch=16)
    assert scores.dtype == np.float32 and idx.dtype == np.int64 and scores.shape == (150, k)
    np.testing.assert_array_equal(scores, ref_s)  # exact: grid features
    untied = (s[:, None, :] == ref_s[:, :, None]).sum(axis=2) == 1
    assert untied.mean() > 0.9
    np.testing.assert_array_equal(idx[untied], order[untied])
    # k beyond G is clipped; batching does not change the result
    s_all, i_all = im.search(g[:5], p, 50)
    assert s_all.shape == (150, 5)
    s_b, i_b = im.search(g[:5], p, 50, batch=1)
    np.testing.assert_array_equal(s_all, s_b)


def test_distractor_curve_matches_brute_force(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(im, "_DISTRACTOR_BLOCK", 64)  # several blocks per prefix, one ending mid-block
    g, gs, p, ps = random_case(4, n_gallery=60, n_probes=120)
    rng = np.random.default_rng(9)
    dis = grid(rng.standard_normal((700, g.shape[1])))
    got = im.distractor_curve(g, gs, p, ps, dis, seed=5)
    assert list(got) == [10, 100, 700]
    # The documented order: np.random.default_rng(seed).permutation(N), nested prefixes.
    order = np.random.default_rng(5).permutation(700)
    for n, v in got.items():
        assert v == ref_rank1_with_distractors(g, gs, p, ps, dis[order[:n]]), n
    assert got[10] > got[700]  # the case is not degenerate
    sized = im.distractor_curve(g, gs, p, ps, dis, sizes=(0, 700, 350), seed=5)
    assert list(sized) == [0, 350, 700]
    assert sized[0] == im.identification_report(g, gs, p, ps).ranks[1]
    assert sized[700] == got[700]


def test_distractor_tie_outranks_the_mate() -> None:
    # Probe of subject 0 scores [.5, .25], of subject 1 [.125, .75]. The one distractor is a copy
    # of subject 0's gallery row: it scores .5 against the first probe, tying its mate (the mate
    # ranks after it: no longer rank 1), and .125 against the second (still rank 1).
    g, p = axis_case([[0.5, 0.25], [0.125, 0.75]], 2)
    got = im.distractor_curve(g, np.array([0, 1]), p, np.array([0, 1]), g[:1], sizes=(0, 1))
    assert got == {0: 1.0, 1: 0.5}


# ---------------------------------------------------------------------------------------------
# errors, means, plots
# ---------------------------------------------------------------------------------------------


def test_errors() -> None:
    g, gs, p, ps = hand_case()
    with pytest.raises(ValueError, match="unique"):
        im.identification_report(g, np.array([10, 20, 20, 40]), p, ps)
    with pytest.raises(ValueError, match="dimensions"):
        im.identification_report(g, gs, p[:, :3], ps)
    with pytest.raises(ValueError, match="entries"):
        im.identification_report(g, gs, p, ps[:-1])
    bad = p.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match=r"finite: row\(s\) \[3\]"):
        im.identification_report(g, gs, bad, ps)
    with pytest.raises(ValueError, match="floating"):
        im.search(g.astype(np.int32), p, 1)
    with pytest.raises(ValueError, match="2-D"):
        im.search(g[0], p, 1)
    with pytest.raises(ValueError, match="positive integer"):
        im.search(g, p, 0)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        im.identification_report(g, gs, p, ps, fpirs=(0.0,))
    with pytest.raises(ValueError, match="different kinds"):
        im.identification_report(g, gs, p, ps.astype(str))
    with pytest.raises(ValueError, match="no mated"):
        im.distractor_curve(g, gs, p[5:], ps[5:], g)
    with pytest.raises(ValueError, match="sizes"):
        im.distractor_curve(g, gs, p, ps, g, sizes=(5,))


def test_mean_report() -> None:
    g, gs, p, ps = hand_case()
    a = im.identification_report(g, gs, p, ps, fpirs=(0.1, 0.3))  # rank1 .4, TPIR .0 / .4
    b = im.identification_report(g[:3], gs[:3], p, ps, fpirs=(0.3,))  # subject 40 left out
    # b: mated = the first 3 probes (rank 1, 3, 2) and the fifth (subject 10: [.25, 0, 0] -> 1):
    # rank1 2/4 = .5. Non-mated: 11 (subject 40's probe joins, top .125).
    assert b.ranks[1] == 0.5 and b.n_nonmated == 11
    m = im.mean_report({"G1": a, "G2": b})
    assert m["rank1"] == pytest.approx(0.45)
    assert m["n_reports"] == 2
    assert m["tpir_at_fpir_n_reports"] == {"3e-1": 2, "1e-1": 1}
    assert m["tpir_at_fpir"]["1e-1"] == 0.0
    # b at FPIR .3: non-mated tops .9375 .6875 .625 .5 .4375 .375 .25 .125 .125 0 0 (columns of
    # subject 40 gone), index floor(3.3) - 1 = 2 -> .625; rank-1 mates .75 and .25 -> 1/4.
    assert b.tpir_at_fpir["3e-1"].tpir == 0.25
    assert m["tpir_at_fpir"]["3e-1"] == pytest.approx(0.325)
    with pytest.raises(ValueError):
        im.mean_report({})


def test_plots_write_png(tmp_path) -> None:
    from fetoolkit.reports import plots

    g, gs, p, ps = hand_case()
    r = im.identification_report(g, gs, p, ps)
    c = plots.plot_cmc({"hand": r.cmc, "long": np.linspace(0.5, 1, 50)}, tmp_path / "cmc.png", title="CMC")
    d = plots.plot_dir({"hand": (r.dir_fpir, r.dir_tpir)}, tmp_path / "dir.png", title="DIR")
    for path in (c, d):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_subject_bootstrap_intervals_equal_materialised_resamples() -> None:
    """Each resample's weighted rates equal the plain report on the searches repeated as drawn."""
    from fetoolkit.metrics.identification import identification_report

    rng = np.random.default_rng(5)
    d = 16
    g = rng.standard_normal((12, d)).astype(np.float32)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    gs = np.arange(12)
    ps = np.r_[np.repeat(np.arange(12), 3), np.repeat(np.arange(100, 112), 3)]  # 3 searches per subject
    p = np.concatenate([g[np.arange(12).repeat(3)], np.zeros((36, d), np.float32)])
    p += 0.9 * rng.standard_normal(p.shape).astype(np.float32)
    p /= np.linalg.norm(p, axis=1, keepdims=True)
    n_boot = 40
    rep = identification_report(g, gs, p, ps, fpirs=(0.1,), n_boot=n_boot, seed=11)
    names, codes = np.unique(ps.astype(str), return_inverse=True)
    draws = np.random.default_rng(11).integers(0, len(names), size=(n_boot, len(names)))
    r1, tp = [], []
    for row in draws:
        counts = np.bincount(row, minlength=len(names))
        reps = counts[codes]
        m = identification_report(g, gs, np.repeat(p, reps, axis=0), np.repeat(ps, reps), fpirs=(0.1,))
        r1.append(m.ranks[1])
        tp.append(m.tpir_at_fpir["1e-1"].tpir)
    want_r1 = np.quantile(np.array(r1), [0.025, 0.975])
    tp_ok = np.array([x for x in tp if np.isfinite(x)])
    want_tp = np.quantile(tp_ok, [0.025, 0.975])
    assert rep.intervals["rank1"] == pytest.approx(tuple(want_r1), abs=1e-12)
    assert rep.intervals["tpir_at_fpir/1e-1"] == pytest.approx(tuple(want_tp), abs=1e-12)
    lo, hi = rep.intervals["rank1"]
    assert lo <= rep.ranks[1] <= hi and hi - lo > 0.05
    d_ = rep.to_dict()
    assert d_["rank1_ci"] == pytest.approx(list(want_r1)) and "subjects" in d_["ci_method"]
