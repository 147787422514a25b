"""Pair protocols generated from identity labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fetoolkit.data.protocols import all_pairs, kfold_pairs


def orl_like(n_people: int = 40, per: int = 10) -> np.ndarray:
    return np.repeat(np.arange(n_people), per)


def test_kfold_orl_shape() -> None:
    ids = orl_like()
    p = kfold_pairs(ids, n_folds=10, seed=0)
    for k in range(10):
        f = p.folds == k
        assert p.labels[f].sum() == 4 * 45  # all genuine pairs of 4 subjects
        assert (~p.labels[f]).sum() == 4 * 45  # as many impostors
        subjects = set(ids[p.idx_a[f]]) | set(ids[p.idx_b[f]])
        assert len(subjects) == 4
    # subject-disjoint folds
    owner = {}
    for a, b, k in zip(p.idx_a, p.idx_b, p.folds):
        for s in (ids[a], ids[b]):
            assert owner.setdefault(s, k) == k
    assert np.all(p.labels == (ids[p.idx_a] == ids[p.idx_b]))
    assert np.all(p.idx_a != p.idx_b)
    # no pair twice
    assert len(set(zip(np.minimum(p.idx_a, p.idx_b), np.maximum(p.idx_a, p.idx_b)))) == len(p)


def test_kfold_is_deterministic_and_seeded() -> None:
    ids = orl_like()
    a, b, c = kfold_pairs(ids, seed=0), kfold_pairs(ids, seed=0), kfold_pairs(ids, seed=1)
    assert np.array_equal(a.idx_a, b.idx_a) and np.array_equal(a.idx_b, b.idx_b)
    assert not (np.array_equal(a.idx_a, c.idx_a) and np.array_equal(a.idx_b, c.idx_b))


def test_all_pairs_counts() -> None:
    p = all_pairs(orl_like())
    assert (p.n_genuine, p.n_impostor) == (1800, 78000)


def test_folds_fit_the_identities_or_the_fix_is_named(caplog: pytest.LogCaptureFixture) -> None:
    """5 identities make 2 folds (said in a warning naming dataset.n_folds), 10 make 5; 3 make none."""
    with caplog.at_level("WARNING"):
        p = kfold_pairs(orl_like(n_people=5))
    assert len(np.unique(p.folds)) == 2 and "2-fold accuracy instead of 10-fold" in caplog.text
    assert "dataset.n_folds" in caplog.text
    assert len(np.unique(kfold_pairs(orl_like(n_people=10)).folds)) == 5
    assert len(np.unique(kfold_pairs(orl_like(n_people=10), n_folds=4).folds)) == 4
    with pytest.raises(ValueError, match="no 2 folds"):
        kfold_pairs(orl_like(n_people=3))


def test_a_csv_without_folds_gets_as_many_as_its_rarer_class_allows(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from fetoolkit.data.csvpairs import load_pairs_csv, write_pairs_csv

    rows = [(f"a{i}.jpg", f"b{i}.jpg", i < 3) for i in range(20)]  # 3 genuine, 17 impostor
    with caplog.at_level("WARNING"):
        pairs = load_pairs_csv(write_pairs_csv(tmp_path / "p.csv", rows)).pairs
    assert len(np.unique(pairs.folds)) == 3 and "3-fold accuracy instead of 10-fold" in caplog.text
    for k in range(3):
        assert pairs.labels[pairs.folds == k].any() and (~pairs.labels[pairs.folds == k]).any()


def test_single_image_identities_never_leave_a_fold_without_genuine_pairs() -> None:
    """6 identities with 3 photos and 14 with one: as many folds as identities that can give a
    genuine pair, each with genuine and impostor pairs, whatever the seed (the split used to
    count identities only and could leave a fold of single-image identities)."""
    ids = np.r_[np.repeat(np.arange(6), 3), np.arange(6, 20)]
    for seed in range(30):
        p = kfold_pairs(ids, n_folds=10, seed=seed)
        assert len(np.unique(p.folds)) == 6
        for k in range(6):
            m = p.folds == k
            assert p.labels[m].any() and (~p.labels[m]).any(), (seed, k)
    with pytest.raises(ValueError, match="1 of them with 2 or more images"):
        kfold_pairs(np.r_[0, 0, np.arange(1, 10)], n_folds=10)
